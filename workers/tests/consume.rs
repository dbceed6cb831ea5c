//! Workers against the real servers: events published to this test's stream end up once in
//! MongoDB and once in the rollups, whatever is resent, and a poison message blocks nothing.

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser as _;
use common::{
    stream::{ensure_events_stream, Subjects},
    testing::{eventually, TestEnv},
};
use mongodb::bson::{doc, Document};
use tokio_util::sync::CancellationToken;

fn event(project: &str, id: &str, user: &str, ts: &str) -> serde_json::Value {
    serde_json::json!({
        "project": project, "message_id": id, "type": "track", "event": "login", "user_id": user,
        "ts": ts, "day": &ts[..10], "received_at": "2026-03-05T00:00:00Z", "properties": {"course_id": "c1"}
    })
}

async fn start_workers(env: &TestEnv) -> CancellationToken {
    let config = workers::Config::parse_from(env.worker_args(&["--max-wait", "100ms"]));
    let app = workers::App::build(config)
        .await
        .expect("workers start against the real servers");
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
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
    let shutdown = start_workers(&env).await;

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
    let indexes = events.list_index_names().await.unwrap();
    for index in ["ts", "user_id_ts", "event_ts", "course_id_ts"] {
        assert!(
            indexes.iter().any(|name| name == index),
            "missing index {index}: {indexes:?}"
        );
    }

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
    let change: serde_json::Value = serde_json::from_slice(&change.payload).unwrap();
    assert!(change["project"] == "p1" || change["project"] == "p2", "{change}");
    shutdown.cancel();
}
