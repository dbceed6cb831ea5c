"""FerretDB write and lookup costs, every backend side by side in one run.

Measures, on fresh collections shaped like the workers' (bench/ferretdb/events.py):
  - insert_many (unordered) of stored events: 100 and 1000 docs per call, 1, 2 and 4 concurrent
    clients, with the workers' 4 secondary indexes and with none; plus 1000 docs per call where
    3% of the _ids are already stored (client resends / redeliveries);
  - find_one({_id}) on a collection of --lookup-docs events;
  - update_one({_id}, {$set, $setOnInsert}, upsert) of a learning path (a 20-element array),
    of existing documents and of new ones, on a collection of --paths documents.

Run it against FerretDB instances of each backend (never against the shared ones on 27017):

    bench/ferretdb/bench.py --uri sqlite=mongodb://127.0.0.1:27018 \\
        --uri postgresql=mongodb://127.0.0.1:27019

A target named NAME+gin also gets, right after each collection is created, a PostgreSQL GIN
expression index on `_jsonb->'_id'` (created with psql on --gin-pg-url, the database the
FerretDB of that target uses): FerretDB's own indexes are B-trees its queries never use.

Read the ratios within one run: the machine is shared, absolute times drift between runs.
"""

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

import pymongo
from pymongo import UpdateOne

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import events  # noqa: E402


class Target:
    def __init__(self, name: str, uri: str, gin_pg_url: str | None):
        self.name, self.uri = name, uri
        self.db_name = "bench_" + "".join(c if c.isalnum() else "_" for c in name)
        self.gin = name.endswith("+gin")
        self.gin_pg_url = gin_pg_url
        if self.gin and not gin_pg_url:
            sys.exit(f"{name}: a +gin target needs --gin-pg-url")
        self.client = self.connect()

    def connect(self) -> pymongo.MongoClient:
        return pymongo.MongoClient(self.uri, socketTimeoutMS=600_000, serverSelectionTimeoutMS=5000)

    def fresh(self, coll: str, indexes: bool) -> pymongo.collection.Collection:
        db = self.client[self.db_name]
        db.drop_collection(coll)
        db.create_collection(coll)
        if indexes:
            db[coll].create_indexes(events.EVENT_INDEXES)
        if self.gin:
            self.create_gin(coll)
        return db[coll]

    def create_gin(self, coll: str) -> None:
        psql = shutil.which("psql") or max(
            (f"/usr/lib/postgresql/{v}/bin/psql" for v in os.listdir("/usr/lib/postgresql")), default="psql"
        )
        schema = self.db_name
        sql = f"""
            DO $$ DECLARE t text; BEGIN
              SELECT _jsonb->>'table' INTO STRICT t FROM "{schema}"._ferretdb_database_metadata
               WHERE _jsonb->>'_id' = '{coll}';
              EXECUTE format('CREATE INDEX %I ON %I.%I USING gin ((_jsonb->''_id'') jsonb_path_ops)',
                             t || '_id_gin', '{schema}', t);
            END $$;"""
        subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.gin_pg_url, "-c", sql], check=True)


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def insert_rate(target: Target, run: str, indexes: bool, batch: int, clients: int, per_client: int, dup_share: float) -> float:
    """Docs per second stored by `clients` concurrent clients, each inserting `per_client` docs in
    unordered insert_many calls of `batch` docs. With dup_share, that share of each batch's _ids
    is stored beforehand (outside the timing), as resent events would be."""
    coll = target.fresh("events", indexes)
    work = [events.events(f"{run}-{k}", 0, per_client) for k in range(clients)]
    if dup_share:
        rng = random.Random(run)
        pre = [d for docs in work for d in docs if rng.random() < dup_share]
        for i in range(0, len(pre), 1000):
            coll.insert_many(pre[i : i + 1000], ordered=False)
    conns = [target.connect() for _ in range(clients)]
    for c in conns:
        c.admin.command("ping")
    errors = []

    def client(k: int) -> None:
        coll_k = conns[k][target.db_name]["events"]
        docs = work[k]
        for i in range(0, len(docs), batch):
            try:
                coll_k.insert_many(docs[i : i + batch], ordered=False)
            except pymongo.errors.BulkWriteError as e:
                if any(w["code"] != 11000 for w in e.details["writeErrors"]):
                    errors.append(e)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"{target.name}: insert failed: {errors[0]}")
    return clients * per_client / elapsed


def lookups(target: Target, run: str, n_docs: int, samples: int) -> dict:
    coll = target.fresh("lookup", True)
    for i in range(0, n_docs, 1000):
        coll.insert_many(events.events(run, i, min(1000, n_docs - i)), ordered=False)
    rng = random.Random(run)
    ids = [f"acme:{run}-{rng.randrange(n_docs):08d}" for _ in range(samples)]
    times = []
    for i in ids:
        t = time.perf_counter()
        doc = coll.find_one({"_id": i})
        times.append(time.perf_counter() - t)
        assert doc is not None and doc["_id"] == i
    return {"find_one_ms": statistics.median(times) * 1000}


def upserts(target: Target, run: str, n_paths: int, samples: int) -> dict:
    coll = target.fresh("paths", False)
    rng = random.Random(run)
    # Preloaded with upserts of new _ids only: an update command of many statements that match
    # existing documents holds a backend connection per match until it ends, and FerretDB hangs
    # for good once its pool is exhausted (docs/ferretdb.md).
    for i in range(0, n_paths, 500):
        coll.bulk_write([UpdateOne(*events.learning_path_update(n, rng), upsert=True) for n in range(i, min(i + 500, n_paths))], ordered=False)
    existing, new = [], []
    for k in range(samples):
        f, u = events.learning_path_update(rng.randrange(n_paths), rng)
        existing.append(timed(lambda: coll.update_one(f, u, upsert=True)))
        f, u = events.learning_path_update(n_paths + k, rng)
        new.append(timed(lambda: coll.update_one(f, u, upsert=True)))
    return {"upsert_existing_ms": statistics.median(existing) * 1000, "upsert_new_ms": statistics.median(new) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", action="append", required=True, help="NAME=mongodb://host:port (repeat; NAME+gin adds the GIN index)")
    ap.add_argument("--gin-pg-url", help="PostgreSQL URL of the database the +gin target's FerretDB uses")
    ap.add_argument("--docs", type=int, default=4000, help="docs inserted per insert measurement (split between clients)")
    ap.add_argument("--lookup-docs", type=int, default=20000, help="events in the find_one collection")
    ap.add_argument("--paths", type=int, default=4000, help="learning paths in the upsert collection (< 40,000 - samples)")
    ap.add_argument("--samples", type=int, default=30, help="find_one / upserts timed per target")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    targets = [Target(*u.split("=", 1), args.gin_pg_url) for u in args.uri]
    run = dt.datetime.now().strftime("%H%M%S")
    results = {t.name: {} for t in targets}
    started = time.perf_counter()

    def each(label: str, f) -> None:
        # Alternate the order of the targets so that drift in the machine's load hits both.
        order = targets if len(results[targets[0].name]) % 2 == 0 else targets[::-1]
        for t in order:
            results[t.name][label] = f(t)
        print(f"{label:40}" + "".join(f"{t.name}={results[t.name][label]:10.1f}  " for t in targets), flush=True)

    print(f"# insert_many, docs/s ({args.docs} docs per point)")
    for indexes in (True, False):
        for batch in (100, 1000):
            for clients in (1, 2, 4):
                label = f"insert {batch}/call {clients} client{'s' if clients > 1 else ''} {'4 idx' if indexes else 'no idx'}"
                each(label, lambda t: insert_rate(t, f"{run}{batch}{clients}{int(indexes)}", indexes, batch, clients, args.docs // clients, 0.0))
    each("insert 1000/call 1 client 4 idx 3% dups", lambda t: insert_rate(t, f"{run}dup", True, 1000, 1, args.docs, 0.03))
    each("insert 100/call 1 client 4 idx 3% dups", lambda t: insert_rate(t, f"{run}dup1", True, 100, 1, args.docs, 0.03))

    print(f"# lookups, median ms ({args.lookup_docs} events; {args.paths} learning paths)")
    look = {t.name: lookups(t, run, args.lookup_docs, args.samples) for t in targets}
    ups = {t.name: upserts(t, run, args.paths, args.samples) for t in targets}
    for key in ("find_one_ms",):
        each(f"find_one by _id, {args.lookup_docs} docs", lambda t: look[t.name][key])
    each(f"upsert by _id, existing, {args.paths} docs", lambda t: ups[t.name]["upsert_existing_ms"])
    each(f"upsert by _id, new, {args.paths} docs", lambda t: ups[t.name]["upsert_new_ms"])

    for t in targets:
        t.client.drop_database(t.db_name)
    print(f"# done in {time.perf_counter() - started:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
