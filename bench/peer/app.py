"""The seeds' own stack as a benchmark peer: FastAPI + PyMongo, naive on purpose.

Seed 002 describes an analytics platform built on Python, FastAPI and PyMongo, with every user
action stored as one document of a single MongoDB ``events`` collection, indexed on ``ts``,
``(user_id, ts)`` and ``(event, ts)``. This app is that stack written the way the seed's author
would write it, so that the benchmark can put its stored events/s beside our pipeline's (ingest →
JetStream → workers → MongoDB) against the same MongoDB server and the same load generator.

It is naive on purpose, because that is the design being measured:

* ``POST /v1/batch`` takes the Segment batch envelope our ingest takes, turns each event into the
  seed's document shape and does exactly one PyMongo ``insert_many`` per request, with the
  default write concern, before answering. There is no batching across requests, no queue, no
  retry, no deduplication (a resent batch is stored twice) and no per-event validation beyond
  what pydantic does to the envelope.
* The handler is a plain ``def``: FastAPI runs it in its thread pool and the PyMongo call blocks
  that thread, which is how PyMongo is used from FastAPI in the seed's stack.
* Authentication accepts any Basic or Bearer key: the bench runs on loopback only.

Settings (environment): ``PEER_MONGO_URI`` (default ``mongodb://127.0.0.1:27017``) and
``PEER_MONGO_DB`` (default ``peer``). ``bench/peer/run`` installs and starts it.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, MongoClient
from pymongo.errors import PyMongoError

MONGO_URI = os.environ.get("PEER_MONGO_URI", "mongodb://127.0.0.1:27017")
MONGO_DB = os.environ.get("PEER_MONGO_DB", "peer")

# The seed's indexes: time ranges, distinct users / sessions, funnels and event counts.
INDEXES = [
    [("ts", ASCENDING)],
    [("user_id", ASCENDING), ("ts", ASCENDING)],
    [("event", ASCENDING), ("ts", ASCENDING)],
]

log = logging.getLogger("peer")


class SegmentEvent(BaseModel):
    """One event of a Segment batch; unknown fields are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    type: str = "track"
    event: str | None = None
    name: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    messageId: str | None = None
    timestamp: datetime | None = None
    properties: dict[str, Any] = {}
    context: dict[str, Any] = {}


class Batch(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[SegmentEvent]
    sentAt: datetime | None = None


def ensure_indexes(events) -> None:
    """Creates the seed's indexes that do not exist yet.

    Only the missing ones: FerretDB 1.24 panics (and drops the connection) on ``createIndexes``
    for an index that already exists. Two uvicorn workers start at once, so a failure is retried
    after looking again at what exists.
    """
    for attempt in range(1, 6):
        try:
            existing = {
                tuple((field, int(direction)) for field, direction in spec["key"])
                for spec in events.index_information().values()
            }
            for keys in INDEXES:
                if tuple(keys) not in existing:
                    events.create_index(keys)
            return
        except PyMongoError as error:
            if attempt == 5:
                raise
            log.warning("creating the indexes failed (attempt %d): %s; retrying", attempt, error)
            time.sleep(0.2 * attempt)


@asynccontextmanager
async def lifespan(app: FastAPI):
    client = MongoClient(MONGO_URI)
    app.state.events = client[MONGO_DB]["events"]
    ensure_indexes(app.state.events)
    yield
    client.close()


app = FastAPI(title="seed-stack peer", lifespan=lifespan)


def check_auth(authorization: str | None) -> None:
    """Any non-empty Basic (key as user name) or Bearer key is accepted."""
    scheme, _, credentials = (authorization or "").partition(" ")
    key = ""
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(credentials).decode().partition(":")[0]
        except ValueError:
            key = ""
    elif scheme.lower() == "bearer":
        key = credentials.strip()
    if not key:
        raise HTTPException(status_code=401, detail="missing write key")


def snake(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def to_document(e: SegmentEvent) -> dict[str, Any]:
    """A Segment event in the seed's document shape."""
    properties = dict(e.properties)
    if e.type == "page":
        # The seed's page views: event `page_view`, the page in `properties.page`.
        event = "page_view"
        properties.setdefault("page", properties.get("path") or e.name or "/")
    elif e.type == "screen":
        event = "screen_view"
        properties.setdefault("screen", e.name)
    else:
        event = snake(e.event or e.name or e.type)
    ts = e.timestamp or datetime.now(timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return {
        "ts": ts,
        "user_id": e.userId or e.anonymousId,
        "session_id": e.context.get("sessionId") or properties.get("session_id"),
        "event": event,
        "properties": properties,
        "context": e.context,
        "message_id": e.messageId,
    }


@app.post("/v1/batch")
def post_batch(body: Batch, authorization: str | None = Header(default=None)):
    check_auth(authorization)
    documents = [to_document(e) for e in body.batch]
    if documents:
        app.state.events.insert_many(documents)
    return {"success": True, "accepted": len(documents)}


@app.get("/healthz")
def healthz():
    return {"ok": True}
