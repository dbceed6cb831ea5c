"""What FerretDB accepts, rejects or changes in a stored document, per backend, side by side.

Each case sends one unordered insert of three documents [good, case, good] to a fresh collection
and reports what the server answered (n, write errors with index and code, or a command error),
whether the server still answers, and what reading the collection back gives.

    bench/ferretdb/probe.py --uri sqlite=mongodb://127.0.0.1:27018 --uri postgresql=mongodb://127.0.0.1:27019
"""

import argparse
import struct

import bson
import pymongo
from bson import Code, Decimal128, DatetimeMS, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp, Binary
from bson.raw_bson import RawBSONDocument

DB = "fdbprobe_restrict"


def raw(elements: list) -> RawBSONDocument:
    """A BSON document from (type byte, key bytes, value bytes) triples: what pymongo would refuse
    to build (duplicate keys, invalid UTF-8, undefined)."""
    body = b"".join(bytes([t]) + k + b"\x00" + v for t, k, v in elements)
    return RawBSONDocument(struct.pack("<i", len(body) + 5) + body + b"\x00")


def bstr(s: bytes) -> bytes:
    return struct.pack("<i", len(s) + 1) + s + b"\x00"


def nested(depth: int) -> dict:
    d = {"leaf": 1}
    for _ in range(depth - 1):
        d = {"d": d}
    return d


CASES = [
    # (label, document without _id, MongoDB's answer)
    ("NUL in a nested string value", {"properties": {"title": "a\x00b"}}, "accepted"),
    ("NUL in a top-level string value", {"title": "a\x00b"}, "accepted"),
    ("NUL in a string inside an array", {"properties": {"tags": ["ok", "a\x00b"]}}, "accepted"),
    ("nested key starting with $", {"properties": {"$x": 1}}, "accepted (5.0+)"),
    ("nested key containing .", {"properties": {"a.b": 1}}, "accepted (5.0+)"),
    ("nested key equal to $s", {"properties": {"$s": 1}}, "accepted (5.0+)"),
    ("empty nested key", {"properties": {"": 1}}, "accepted"),
    ("empty top-level key", {"": 1}, "accepted"),
    ("top-level key containing \"", {'a"b': 1}, "accepted"),
    ("top-level key containing \\", {"a\\b": 1}, "accepted"),
    ("top-level key containing a newline", {"a\nb": 1}, "accepted"),
    ("nested key containing \" and \\ and newline", {"properties": {'a"b\\c\nd': 1}}, "accepted"),
    ("array directly inside an array", {"properties": {"m": [[1, 2]]}}, "accepted"),
    ("array inside a document inside an array", {"properties": {"m": [{"a": [1, 2]}]}}, "accepted"),
    ("NaN double", {"properties": {"x": float("nan")}}, "accepted"),
    ("+Infinity double", {"properties": {"x": float("inf")}}, "accepted"),
    ("-Infinity double in an array", {"properties": {"x": [float("-inf")]}}, "accepted"),
    ("-0.0 double", {"properties": {"x": -0.0}}, "accepted (kept as -0.0)"),
    ("-0.0 double in an array", {"properties": {"x": [-0.0]}}, "accepted (kept as -0.0)"),
    ("int64 max and min", {"properties": {"max": Int64(2**63 - 1), "min": Int64(-(2**63))}}, "accepted"),
    ("int64 beyond 2^53", {"properties": {"x": Int64(2**53 + 1)}}, "accepted"),
    ("double 1e308 and 5e-324", {"properties": {"big": 1e308, "tiny": 5e-324}}, "accepted"),
    ("depth 20", nested(20), "accepted"),
    ("depth 99", nested(99), "accepted"),
    ("depth 101", nested(101), "rejected (max 100 levels)"),
    ("depth 200", nested(200), "rejected (max 100 levels)"),
    ("date 9999-12-31", {"ts": DatetimeMS(253402300799999)}, "accepted"),
    ("date year 10000", {"ts": DatetimeMS(253402300800000)}, "accepted"),
    ("date before 1970", {"ts": DatetimeMS(-62135596800000)}, "accepted"),
    ("date at int64 max ms", {"ts": DatetimeMS(2**63 - 1)}, "accepted"),
    ("date at int64 min ms", {"ts": DatetimeMS(-(2**63))}, "accepted"),
    ("Decimal128", {"properties": {"x": Decimal128("1.5")}}, "accepted"),
    ("MinKey / MaxKey", {"properties": {"a": MinKey(), "b": MaxKey()}}, "accepted"),
    ("JavaScript code", {"properties": {"f": Code("1")}}, "accepted"),
    ("Timestamp, Binary, Regex, ObjectId", {"properties": {"t": Timestamp(1, 1), "b": Binary(b"\x00\x01"), "r": Regex("^a", "i"), "o": ObjectId()}}, "accepted"),
    ("unicode U+2028, emoji, accents", {"properties": {"s": "\u2028 \U0001F600 é"}}, "accepted"),
    ("15 MiB string", {"properties": {"s": "x" * (15 * 1024 * 1024)}}, "accepted"),
]

RAW_CASES = [
    # (label, raw document including _id, MongoDB's answer)
    ("duplicate top-level key", lambda i: raw([(2, b"_id", bstr(i.encode())), (16, b"a", struct.pack("<i", 1)), (16, b"a", struct.pack("<i", 2))]), "accepted"),
    ("invalid UTF-8 in a string value", lambda i: raw([(2, b"_id", bstr(i.encode())), (2, b"s", bstr(b"\xff\xfe"))]), "rejected (invalid UTF-8)"),
    ("invalid UTF-8 in a key", lambda i: raw([(2, b"_id", bstr(i.encode())), (16, b"\xff", struct.pack("<i", 1))]), "accepted"),
    ("undefined value", lambda i: raw([(2, b"_id", bstr(i.encode())), (6, b"u", b"")]), "accepted"),
]

ID_CASES = [
    ("_id array", [1, 2], "rejected (code 53)"),
    ("_id regex", Regex("^a"), "rejected (code 53)"),
    ("_id null", None, "accepted"),
    ("_id document", {"a": 1}, "accepted"),
    ("_id int32", 7, "accepted"),
    ("_id double", 7.5, "accepted"),
    ("_id binary", Binary(b"\x01\x02"), "accepted"),
    ("_id empty string", "", "accepted"),
    ("_id document with a $ key", {"$a": 1}, "rejected"),
]


def describe_error(e: Exception) -> str:
    if isinstance(e, pymongo.errors.OperationFailure):
        return f"command error code {e.code}: {str(e.details.get('errmsg', e))[:150]}"
    return f"{type(e).__name__}: {str(e)[:110]}"


def insert(client, coll_name: str, docs: list) -> str:
    """The server's own answer to one unordered `insert` command."""
    try:
        r = client[DB].command({"insert": coll_name, "documents": docs, "ordered": False})
    except Exception as e:  # noqa: BLE001 - we report whatever happens
        return describe_error(e)
    out = f"n={r['n']}"
    for w in r.get("writeErrors", []):
        out += f"; writeError index {w['index']} code {w['code']}: {w['errmsg'][:80]}"
    return out


def run_case(client, coll_name: str, docs: list, bad_id) -> tuple:
    """(what the insert answered, what reading the collection back gives, the stored bad doc)."""
    client[DB].drop_collection(coll_name)
    out = insert(client, coll_name, docs)
    try:
        client.admin.command("ping")
    except Exception as e:  # noqa: BLE001
        return out + f" | server no longer answers: {type(e).__name__}", None
    try:
        back = list(client[DB][coll_name].find({}))
    except Exception as e:  # noqa: BLE001
        return out + f" | reading the collection back fails: {describe_error(e)}", None
    ids = ", ".join(sorted(repr(d.get("_id")) for d in back))
    bad = [d for d in back if d.get("_id") == bad_id]
    return out + f" | stored {len(back)}: {ids[:70]}", (bad[0] if bad else None)


def compare(bad, body: dict) -> str:
    """Whether the stored document reads back bit for bit (so -0.0 and 0.0 differ)."""
    if bad is None:
        return ""
    got = {k: v for k, v in bad.items() if k != "_id"}
    codec = bson.CodecOptions(datetime_conversion=bson.DatetimeConversion.DATETIME_MS)
    sent = bson.decode(bson.encode(body), codec_options=codec)
    if bson.encode(got) == bson.encode(sent):
        return " | read back unchanged"
    return f" | read back CHANGED: {got!r}"[:160]


def positions(clients) -> None:
    """Where write-error indexes point, and what a refused document does to the rest of the command."""
    print("\n## indexes of write errors and the rest of the command")
    for name, c in clients.items():
        coll = c[DB]["positions"]
        coll.drop()
        coll.insert_many([{"_id": f"p-{i:03d}"} for i in (10, 150, 240)])
        docs = [{"_id": f"p-{i:03d}", "n": i} for i in range(250)]
        print(f"- {name}: 250 docs, ids at 10, 150, 240 already stored: {insert(c, 'positions', docs)}")
        coll.drop()
        docs = [{"_id": f"p-{i:03d}", "n": i} for i in range(250)]
        docs[150]["s"] = "a\x00b"
        out = insert(c, "positions", docs)
        print(f"- {name}: 250 docs, NUL in a string at index 150: {out} | stored {coll.count_documents({})}")
        coll.drop()
        docs = [{"_id": f"p-{i:03d}", "n": i} for i in range(250)]
        docs[150]["x"] = [float("-inf")]
        out = insert(c, "positions", docs)
        print(f"- {name}: 250 docs, -Infinity in an array at index 150: {out} | stored {coll.count_documents({})}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", action="append", required=True, help="NAME=mongodb://... (repeat per backend)")
    args = ap.parse_args()
    targets = [u.split("=", 1) for u in args.uri]
    # Dates as raw milliseconds, so that dates Python cannot represent read back too.
    clients = {
        name: pymongo.MongoClient(uri, socketTimeoutMS=60000, serverSelectionTimeoutMS=5000, datetime_conversion="DATETIME_MS")
        for name, uri in targets
    }
    for c in clients.values():
        c.drop_database(DB)

    print("## one unordered insert of [good, case, good] (MongoDB 7's answer in brackets)")
    for n, (label, body, mongo) in enumerate(CASES):
        print(f"- {label} [{mongo}]")
        for name, c in clients.items():
            docs = [{"_id": f"{n}-a"}, {"_id": f"{n}-bad", **body}, {"_id": f"{n}-c"}]
            out, bad = run_case(c, f"c{n}", docs, f"{n}-bad")
            print(f"    {name}: {out}{compare(bad, body)}", flush=True)

    for n, (label, make, mongo) in enumerate(RAW_CASES, start=len(CASES)):
        print(f"- {label} [{mongo}]")
        for name, c in clients.items():
            docs = [RawBSONDocument(bson.encode({"_id": f"{n}-a"})), make(f"{n}-bad"), RawBSONDocument(bson.encode({"_id": f"{n}-c"}))]
            out, bad = run_case(c, f"c{n}", docs, f"{n}-bad")
            print(f"    {name}: {out}" + (f" | read back: {dict(bad)!r}"[:120] if bad is not None else ""), flush=True)

    for n, (label, value, mongo) in enumerate(ID_CASES, start=len(CASES) + len(RAW_CASES)):
        print(f"- {label} [{mongo}]")
        for name, c in clients.items():
            docs = [{"_id": f"{n}-a"}, {"_id": value, "x": 1}, {"_id": f"{n}-c"}]
            out, _ = run_case(c, f"c{n}", docs, value)
            print(f"    {name}: {out}", flush=True)

    positions(clients)

    for c in clients.values():
        try:
            c.drop_database(DB)
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    main()
