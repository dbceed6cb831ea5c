//! What the workers' tests share: a varied event generator, a publisher that retries like ingest,
//! waiting for the consumer to drain, and the exactly-once check (counts plus reconcile).

#![allow(dead_code)] // Each test file uses its own subset.

use std::time::Duration;

use async_nats::jetstream;
use common::stream::{ensure_events_stream, Subjects};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use test_support::{eventually, TestEnv};

/// A varied learning event of project `p1`, on day `day` of March 2026.
pub fn event(id: &str, user: &str, day: u32, kind: usize) -> Value {
    let ts = format!("2026-03-{day:02}T{:02}:00:00Z", 8 + kind % 12);
    let (name, properties) = match kind % 6 {
        0 => ("course_viewed", json!({"course_id": "c1"})),
        1 => ("course_enrolled", json!({"course_id": "c1"})),
        2 => (
            "lesson_completed",
            json!({"course_id": "c1", "module_id": "m1", "lesson_id": format!("l{}", kind % 4), "time_spent_s": 60 + kind}),
        ),
        3 => (
            "quiz_submitted",
            json!({"course_id": "c1", "quiz_id": "q1", "score": kind % 10, "max_score": 10, "passed": kind % 10 > 5}),
        ),
        4 => (
            "badge_earned",
            json!({"badge_id": format!("b{}", kind % 3), "points": 10}),
        ),
        _ => ("page_view", json!({"page": "/home"})),
    };
    json!({"project": "p1", "message_id": id, "type": "track", "event": name, "user_id": user, "ts": ts,
           "day": &ts[..10], "received_at": "2026-03-20T00:00:00Z", "properties": properties})
}

/// `n` distinct events of 37 learners over 20 days.
pub fn events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("e{i}"), &format!("u{}", i % 37), 1 + (i % 20) as u32, i))
        .collect()
}

/// Publishes messages as ingest does (JSON array, Nats-Msg-Id), retrying until acknowledged.
pub struct Publisher {
    js: jetstream::Context,
    subject: String,
}

impl Publisher {
    pub async fn new(env: &TestEnv) -> Self {
        let client = async_nats::connect(&env.nats.url).await.unwrap();
        let js = jetstream::new(client);
        ensure_events_stream(&js, &env.nats).await.unwrap();
        Self {
            js,
            subject: Subjects::new(&env.nats.subject_prefix).events("p1"),
        }
    }

    pub async fn publish(&self, msg_id: &str, events: &[Value]) {
        self.publish_with_headers(msg_id, None, events).await;
    }

    /// Publishes as a replay does: its own `Nats-Msg-Id`, but the ledger key `key` of the message
    /// it stands for (`Analytics-Message-Key`), as a redelivery of that message would be seen.
    pub async fn publish_with_key(&self, msg_id: &str, key: &str, events: &[Value]) {
        self.publish_with_headers(msg_id, Some(key), events).await;
    }

    async fn publish_with_headers(&self, msg_id: &str, key: Option<&str>, events: &[Value]) {
        let payload: bytes::Bytes = serde_json::to_vec(events).unwrap().into();
        for _ in 0..600 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id);
            if let Some(key) = key {
                headers.insert(workers::dead_letter::MESSAGE_KEY_HEADER, key);
            }
            if let Ok(ack) = self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload.clone())
                .await
            {
                if ack.await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("message {msg_id} was never acknowledged");
    }

    /// Publishes `events` in messages of `per_message`, resending every `resend_every`-th
    /// message's events in a new message, as a client that did not hear back would.
    pub async fn publish_all(&self, events: &[Value], per_message: usize, resend_every: usize) {
        for (n, chunk) in events.chunks(per_message).enumerate() {
            self.publish(&format!("m{n}"), chunk).await;
            if resend_every > 0 && n % resend_every == 0 {
                self.publish(&format!("m{n}-resend"), chunk).await;
            }
        }
    }
}

/// Waits until the durable consumer `workers` has nothing pending or unacknowledged.
pub async fn drained(env: &TestEnv, deadline: Duration) {
    env.drained(deadline).await.unwrap();
}

/// March 2026 of project p1, where every generated event falls.
pub fn march() -> workers::reconcile::Range {
    let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    workers::reconcile::Range {
        project: "p1".into(),
        from: day(1),
        to: day(31),
    }
}

pub async fn store(env: &TestEnv) -> workers::store::EventStore {
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    workers::store::EventStore::new(&mongo.database(&env.mongo_db), "1", false)
}

/// Waits until every learning path marked out of date has been rewritten.
pub async fn paths_flushed(env: &TestEnv) {
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    eventually("the learning paths to be flushed", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let marked: i64 = sqlx::query_scalar("select count(*) from learning_path_dirty")
                .fetch_one(&pool)
                .await
                .ok()?;
            (marked == 0).then_some(())
        }
    })
    .await;
}

pub async fn reconcile(env: &TestEnv) -> Vec<workers::Difference> {
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    workers::reconcile(&pool, &store(env).await, &march()).await.unwrap()
}

pub async fn stored(env: &TestEnv) -> u64 {
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    mongo
        .database(&env.mongo_db)
        .collection::<Document>("events")
        .count_documents(doc! {})
        .await
        .unwrap()
}

/// Every one of `distinct` events stored once and counted once, nothing dead-lettered, and
/// reconcile finding no difference.
pub async fn assert_exactly_once(env: &TestEnv, distinct: usize) {
    assert_eq!(stored(env).await, distinct as u64, "events stored in MongoDB");
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let counted: i64 = sqlx::query_scalar("select coalesce(sum(events), 0)::bigint from daily_event_counts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(counted, distinct as i64, "events counted in the rollups");
    let claimed: i64 = sqlx::query_scalar("select count(*) from event_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claimed, distinct as i64, "events in the ledger");
    paths_flushed(env).await;
    let differences = reconcile(env).await;
    assert!(differences.is_empty(), "reconcile found: {differences:#?}");
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client);
    if let Ok(mut dead) = js.get_stream(format!("{}_DLQ", env.nats.stream)).await {
        assert_eq!(
            dead.info().await.unwrap().state.messages,
            0,
            "nothing was dead-lettered"
        );
    }
}

/// The environment of a worker process on this test's stream and databases.
pub fn worker_env(env: &TestEnv) -> Vec<(&'static str, String)> {
    let mut vars = env.worker_env();
    vars.extend([
        ("WORKERS_MONGO_WRITE_CONCERN", "1".to_owned()),
        ("WORKERS_MONGO_JOURNAL", "false".to_owned()),
        // Small batches, so that a test's few hundred events make many of them.
        ("WORKERS_BATCH_EVENTS", "50".to_owned()),
        ("WORKERS_BATCH_LINGER", "50ms".to_owned()),
        ("WORKERS_PATHS_FLUSH_INTERVAL", "200ms".to_owned()),
        // Short, so that what a dead worker held is redelivered quickly.
        ("WORKERS_ACK_WAIT", "2s".to_owned()),
    ]);
    vars
}
