//! Workers against the real servers: events published to this test's stream end up once in
//! MongoDB and once in the rollups, whatever is resent; an undecodable message and an event a
//! store refuses go to the dead-letter stream with their reason and block nothing, not even the
//! other events of their own message.

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser as _;
use common::stream::{ensure_events_stream, Subjects};
use mongodb::bson::{doc, Document};
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

fn event(project: &str, id: &str, user: &str, ts: &str) -> serde_json::Value {
    serde_json::json!({
        "project": project, "message_id": id, "type": "track", "event": "login", "user_id": user,
        "ts": ts, "day": &ts[..10], "received_at": "2026-03-05T00:00:00Z", "properties": {"course_id": "c1"}
    })
}

async fn start_workers(env: &TestEnv, extra: &[&str]) -> CancellationToken {
    let mut args = vec!["--batch-linger", "50ms", "--paths-flush-interval", "200ms"];
    args.extend_from_slice(extra);
    let config = workers::Config::parse_from(env.worker_args(&args));
    let worker = workers::Worker::build(config)
        .await
        .expect("workers start against the real servers");
    let shutdown = CancellationToken::new();
    tokio::spawn(worker.run(shutdown.clone()));
    shutdown
}

#[tokio::test]
async fn resent_events_are_stored_and_counted_once_and_poison_blocks_nothing() {
    let env = TestEnv::new().await;
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client.clone());
    ensure_events_stream(&js, &env.nats).await.unwrap();
    let subjects = Subjects::new(&env.nats.subject_prefix);
    let mut changes = client.subscribe(subjects.changes()).await.unwrap();
    let shutdown = start_workers(&env, &[]).await;

    let first = serde_json::json!([
        event("p1", "a", "u1", "2026-03-01T10:00:00Z"),
        event("p1", "b", "u1", "2026-03-01T11:00:00Z"),
        event("p1", "c", "u2", "2026-03-02T10:00:00Z"),
        event("p2", "a", "u9", "2026-03-01T10:00:00Z"),
    ]);
    // The same events again in another message (a client resend), then a poison message, then one new event.
    let publish = |payload: Vec<u8>| {
        let js = js.clone();
        let subject = subjects.events("p1");
        async move { js.publish(subject, payload.into()).await.unwrap().await.unwrap() }
    };
    publish(serde_json::to_vec(&first).unwrap()).await;
    publish(serde_json::to_vec(&first).unwrap()).await;
    publish(b"{not json".to_vec()).await;
    publish(serde_json::to_vec(&serde_json::json!([event("p1", "d", "u3", "2026-03-02T12:00:00Z")])).unwrap()).await;

    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let events = mongo.database(&env.mongo_db).collection::<Document>("events");
    eventually("all five distinct events in MongoDB", Duration::from_secs(30), || {
        let events = events.clone();
        async move { (events.count_documents(doc! {}).await.ok()? == 5).then_some(()) }
    })
    .await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let dau: Vec<(String, String, i64)> =
        eventually("the rollups to include the last event", Duration::from_secs(30), || {
            let pool = pool.clone();
            async move {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "select project, day::text, count(*) from daily_active_users group by 1, 2 order by 1, 2",
                )
                .fetch_all(&pool)
                .await
                .ok()?;
                (rows.len() == 3 && rows[1].2 == 2).then_some(rows)
            }
        })
        .await;
    let logins: i64 = sqlx::query_scalar("select sum(events)::bigint from daily_event_counts where project = 'p1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(logins, 4, "the resent message counted nothing");
    assert_eq!(
        dau,
        [
            ("p1".into(), "2026-03-01".into(), 1),
            ("p1".into(), "2026-03-02".into(), 2),
            ("p2".into(), "2026-03-01".into(), 1)
        ]
    );

    // Stored documents keep the seeds' field names, typed times and the deterministic id.
    let stored = events
        .find_one(doc! {"_id": "p1:a"})
        .await
        .unwrap()
        .expect("p1:a is stored");
    assert_eq!(stored.get_str("user_id").unwrap(), "u1");
    assert_eq!(stored.get_str("day").unwrap(), "2026-03-01");
    assert!(stored.get_datetime("ts").is_ok());
    assert_eq!(
        stored.get_document("properties").unwrap().get_str("course_id").unwrap(),
        "c1"
    );

    // The poison message is in the dead-letter stream, with the reason.
    let dead = js.get_stream(format!("{}_DLQ", env.nats.stream)).await.unwrap();
    let copy = dead
        .get_raw_message(1)
        .await
        .expect("the poison message was dead-lettered");
    assert_eq!(&copy.payload[..], b"{not json");
    assert_eq!(
        copy.headers.get("Dead-Letter-Reason").map(|v| v.as_str()),
        Some("undecodable")
    );

    // A change notification names what the commits touched.
    let change = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut changes))
        .await
        .expect("a change notification")
        .unwrap();
    let change: common::change::Change = serde_json::from_slice(&change.payload).unwrap();
    assert!(change.project == "p1" || change.project == "p2", "{change:?}");
    shutdown.cancel();
}

/// Values PostgreSQL refuses, each inside a message of good events of two projects.
fn poison_events() -> Vec<(&'static str, serde_json::Value)> {
    let mut long_page = event("p1", "long-page", "u1", "2026-03-03T10:00:00Z");
    long_page["event"] = "page_view".into();
    // Incompressible, or PostgreSQL compresses the key below the index limit and stores it.
    let noise: String = (0..256).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    long_page["properties"] = serde_json::json!({"page": format!("/search?q={noise}")});
    let mut nul_user = event("p1", "nul-user", "u\u{0}1", "2026-03-03T10:00:00Z");
    nul_user["properties"] = serde_json::json!({});
    let mut ancient = event("p1", "ancient", "u1", "2026-03-03T10:00:00Z");
    ancient["ts"] = "-7975-01-01T00:00:00Z".into();
    ancient["day"] = "-7975-01-01".into();
    vec![
        ("an 8 KB page path (index row too large)", long_page),
        ("a NUL in the user id", nul_user),
        ("a date PostgreSQL cannot hold", ancient),
    ]
}

#[tokio::test]
async fn an_event_a_store_refuses_is_dead_lettered_alone_and_delays_no_one() {
    let env = TestEnv::new().await;
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client.clone());
    ensure_events_stream(&js, &env.nats).await.unwrap();
    let subjects = Subjects::new(&env.nats.subject_prefix);
    // A retry interval far longer than the test may take: if anything waited for one, it fails.
    let shutdown = start_workers(&env, &["--retry-initial", "30s", "--batch-events", "100000"]).await;

    let poison = poison_events();
    let mut message = Vec::new();
    for (n, (_, bad)) in poison.iter().enumerate() {
        message.push(event("p1", &format!("good-p1-{n}"), "u1", "2026-03-03T09:00:00Z"));
        message.push(bad.clone());
        message.push(event("p2", &format!("good-p2-{n}"), "u2", "2026-03-03T09:00:00Z"));
    }
    let sent = Instant::now();
    let payload = serde_json::to_vec(&message).unwrap();
    js.publish(subjects.events("p1"), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Another project's message right behind it.
    let other = serde_json::to_vec(&serde_json::json!([event("p3", "x", "u3", "2026-03-03T09:00:00Z")])).unwrap();
    js.publish(subjects.events("p3"), other.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    eventually("every good event counted", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("select project, sum(events)::bigint from daily_event_counts group by 1 order by 1")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            (rows == [("p1".to_owned(), 3), ("p2".to_owned(), 3), ("p3".to_owned(), 1)]).then_some(())
        }
    })
    .await;
    let delay = sent.elapsed();
    assert!(
        delay < Duration::from_secs(15),
        "other projects were held up {delay:?}, as long as a retry"
    );

    let dead = js.get_stream(format!("{}_DLQ", env.nats.stream)).await.unwrap();
    let nats = common::config::NatsConfig { ..env.nats.clone() };
    let records = eventually("three dead letters", Duration::from_secs(10), || {
        let js = js.clone();
        let stream = format!("{}_DLQ", nats.stream);
        async move {
            let records = workers::dead_letter::list(&js, &stream).await.ok()?;
            (records.len() == 3).then_some(records)
        }
    })
    .await;
    drop(dead);
    for record in &records {
        assert_eq!(record.reason, "poison_event", "{record}");
        assert_eq!(record.events, "1");
        let events: Vec<serde_json::Value> = serde_json::from_slice(&record.payload).unwrap();
        assert_eq!(events.len(), 1, "one event per dead letter");
        let id = events[0]["message_id"].as_str().unwrap();
        assert!(["long-page", "nul-user", "ancient"].contains(&id), "{id}");
        assert!(record.detail.contains("PostgreSQL"), "{record}");
        assert!(!record.message_key.is_empty());
    }
    // The good events are in MongoDB too; the refused ones nowhere.
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let events = mongo.database(&env.mongo_db).collection::<Document>("events");
    eventually("the good events stored", Duration::from_secs(20), || {
        let events = events.clone();
        async move { (events.count_documents(doc! {}).await.ok()? == 7).then_some(()) }
    })
    .await;
    shutdown.cancel();
}
