"""Documents shaped like the workers' stored events and learning paths (workers/src/store.rs
`to_document`, workers/src/paths.rs), and the indexes the workers create on `events`."""

import datetime as dt
import random

import pymongo

EVENT_NAMES = [
    "page_view", "course_viewed", "product_viewed", "product_added", "order_completed",
    "course_enrolled", "lesson_started", "lesson_completed", "video_progress",
    "quiz_submitted", "badge_earned", "course_completed",
]

# The workers' indexes on `events` (workers/src/store.rs `create_indexes`).
EVENT_INDEXES = [
    pymongo.IndexModel([("ts", 1)], name="ts"),
    pymongo.IndexModel([("user_id", 1), ("ts", 1)], name="user_id_ts"),
    pymongo.IndexModel([("event", 1), ("ts", 1)], name="event_ts"),
    pymongo.IndexModel([("properties.course_id", 1), ("ts", 1)], name="course_id_ts"),
]

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def event(run: str, i: int, rng: random.Random, project: str = "acme") -> dict:
    """One stored event: 16 top-level fields, properties and context as ingest normalises them."""
    user = f"u{rng.randrange(2000):04d}"
    course = f"c{rng.randrange(20):02d}"
    lesson = rng.randrange(1, 25)
    ts = BASE + dt.timedelta(seconds=i * 7 + rng.randrange(7))
    ts = ts.replace(microsecond=(ts.microsecond // 1000) * 1000)
    message_id = f"{run}-{i:08d}"
    name = rng.choice(EVENT_NAMES)
    return {
        "_id": f"{project}:{message_id}",
        "project": project,
        "message_id": message_id,
        "type": "page" if name == "page_view" else "track",
        "event": name,
        "ts": ts,
        "day": ts.strftime("%Y-%m-%d"),
        "received_at": ts + dt.timedelta(milliseconds=350),
        "stored_by": f"EVENTS:{i // 100 + 1}",
        "user_id": user,
        "anonymous_id": f"anon-{rng.getrandbits(64):016x}",
        "session_id": f"s-{user}-{i // 50}",
        "sent_at": ts + dt.timedelta(milliseconds=120),
        "timestamp": ts,
        "properties": {
            "course_id": course,
            "lesson_id": f"{course}-l{lesson:02d}",
            "module_id": f"{course}-m{lesson // 5 + 1}",
            "course_title": f"Course {course}: an introduction",
            "time_spent_s": rng.randrange(30, 1800),
            "score": rng.randrange(0, 101),
            "max_score": 100,
            "path": f"/courses/{course}/lessons/{lesson}",
        },
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.1"},
            "ip": "203.0.113.7",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
            "page": {"path": f"/courses/{course}", "url": f"https://learn.example.com/courses/{course}"},
        },
    }


def events(run: str, start: int, count: int, seed: int = 7) -> list:
    rng = random.Random(f"{seed}-{run}-{start}")
    return [event(run, i, rng) for i in range(start, start + count)]


def learning_path_update(n: int, rng: random.Random) -> tuple:
    """The workers' learning-path upsert (workers/src/paths.rs `write`): filter, update; 20 lessons."""
    # distinct (user, course) pairs for n < 40,000
    user, course = f"u{n % 2000:04d}", f"c{n // 2000 % 20:02d}"
    path = [
        {
            "moduleId": f"{course}-m{k // 5 + 1}",
            "lessonId": f"{course}-l{k + 1:02d}",
            "completed": rng.random() < 0.5,
            "timeSpent": rng.randrange(0, 3600),
            "lastAccessed": BASE + dt.timedelta(minutes=rng.randrange(100000)),
        }
        for k in range(20)
    ]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return (
        {"_id": f"acme:{user}:{course}"},
        {
            "$set": {"project": "acme", "studentId": user, "courseId": course, "learningPath": path, "updatedAt": now},
            "$setOnInsert": {"preferences": {}},
        },
    )
