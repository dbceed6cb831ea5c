//! Exactly once, against the real servers: whatever is resent, redelivered or interrupted between
//! the MongoDB insert and the PostgreSQL commit, every event is stored once and counted once, and
//! `reconcile` (which recomputes everything from MongoDB) finds no difference.

mod support;

use std::time::Duration;

use clap::Parser as _;
use common::{event::Event, testing::TestEnv};
use mongodb::bson::{doc, Document};
use serde_json::Value;
use support::{drained, event, reconcile, stored, Publisher};
use tokio_util::sync::CancellationToken;

fn config(env: &TestEnv) -> workers::Config {
    workers::Config::parse_from(env.worker_args(&["--max-wait", "100ms", "--batch-size", "16"]))
}

async fn start_worker(env: &TestEnv) -> CancellationToken {
    let app = workers::App::build(config(env))
        .await
        .expect("workers start against the real servers");
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    shutdown
}

#[tokio::test]
async fn an_interrupted_batch_and_an_applied_redelivery_are_each_counted_exactly_once() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let store = workers::store::EventStore::new(&mongo.database(&env.mongo_db), "1", false);
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    workers::MIGRATOR.run(&pool).await.unwrap();

    // A worker died after storing message "crashed" in MongoDB, before its PostgreSQL commit.
    let crashed: Vec<Value> = (0..6).map(|i| event(&format!("c{i}"), "u1", 1, i)).collect();
    let as_events: Vec<Event> = crashed
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let pairs: Vec<(&Event, &str)> = as_events.iter().map(|e| (e, "id:crashed")).collect();
    assert_eq!(store.insert(&pairs).await.unwrap().stored, 6);
    // Another worker committed message "done" and died before acknowledging it.
    let done: Vec<Value> = (0..6).map(|i| event(&format!("d{i}"), "u2", 2, i)).collect();
    publisher.publish("done", &done).await;
    drained(&env, Duration::from_secs(60)).await;
    let before: i64 = sqlx::query_scalar("select sum(events)::bigint from daily_event_counts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(before, 6);

    // Both are redelivered, and a client resends two events of "crashed" inside a new message.
    publisher.publish("crashed", &crashed).await;
    // (JetStream's own duplicate window would drop a republished "done"; a redelivery is what the
    // ledger must catch, so it is modelled by a different Nats-Msg-Id naming the same ledger key.)
    sqlx::query("insert into applied_messages (message_key) values ('id:done-again') on conflict do nothing")
        .execute(&pool)
        .await
        .unwrap();
    let resent_done: Vec<Value> = done.clone();
    publisher.publish("done-again", &resent_done).await;
    publisher.publish("client-resend", &crashed[..2]).await;
    drained(&env, Duration::from_secs(60)).await;

    let counts: Vec<(String, i64)> =
        sqlx::query_as("select day::text || ' ' || event, events from daily_event_counts order by 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 12, "each of the 12 distinct events counted once: {counts:?}");
    assert_eq!(stored(&env).await, 12);
    let time: i64 = sqlx::query_scalar("select learning_time_s from user_stats where user_key = 'u1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(time, 62, "one lesson_completed with time_spent_s 62");
    let differences = reconcile(&env).await;
    assert!(differences.is_empty(), "reconcile found: {differences:#?}");

    // Reconcile can fail: a tampered rollup is reported, row and values.
    sqlx::query("update course_daily set views = views + 1 where day = '2026-03-01'")
        .execute(&pool)
        .await
        .unwrap();
    let differences = reconcile(&env).await;
    assert_eq!(differences.len(), 1, "{differences:#?}");
    assert_eq!(differences[0].table, "course_daily");
    assert!(
        differences[0].found.as_deref().unwrap().contains("views: 2"),
        "{differences:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn two_workers_racing_on_one_stream_with_client_resends_count_every_event_once() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let first = start_worker(&env).await;
    let second = start_worker(&env).await;
    // Every third message is resent by its client inside a new message.
    publisher.publish_all(&support::events(600), 10, 3).await;
    drained(&env, Duration::from_secs(60)).await;
    support::assert_exactly_once(&env, 600).await;

    // The learning paths follow lesson progress, one document per (student, course).
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let paths = mongo
        .database(&env.mongo_db)
        .collection::<Document>("student_learning_paths");
    let path = paths
        .find_one(doc! {"studentId": "u2", "courseId": "c1"})
        .await
        .unwrap()
        .expect("u2 has a learning path in c1");
    let lessons = path.get_array("learningPath").unwrap();
    assert!(!lessons.is_empty());
    let first_lesson = lessons[0].as_document().unwrap();
    assert_eq!(first_lesson.get_str("moduleId").unwrap(), "m1");
    assert!(first_lesson.get_bool("completed").unwrap());
    assert!(first_lesson.get_i64("timeSpent").unwrap() > 0);
    assert!(path.get_document("preferences").is_ok());
    first.cancel();
    second.cancel();
}
