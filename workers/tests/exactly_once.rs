//! Exactly once, against the real servers: an event carried twice by one message, resent inside
//! another message, redelivered after its rollups committed, or raced by two workers, is stored
//! once and counted once, and `reconcile` (which recomputes everything from MongoDB) finds no
//! difference; when a rollup is tampered with, it says where, and `--fix` repairs it.

mod support;

use std::time::Duration;

use clap::Parser as _;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use support::{drained, event, paths_flushed, reconcile, stored, Publisher};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

async fn start_worker(env: &TestEnv) -> CancellationToken {
    let config = workers::Config::parse_from(env.worker_args(&[
        "--batch-linger",
        "50ms",
        "--batch-events",
        "20",
        "--paths-flush-interval",
        "200ms",
    ]));
    let worker = workers::Worker::build(config)
        .await
        .expect("workers start against the real servers");
    let shutdown = CancellationToken::new();
    tokio::spawn(worker.run(shutdown.clone()));
    shutdown
}

async fn total_counted(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select coalesce(sum(events), 0)::bigint from daily_event_counts")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_way_of_carrying_an_event_again_counts_it_once() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();

    // One message carrying the same event twice (ingest coalesces two requests into one
    // message, and a client resent the event meanwhile): counted once. This is what made the
    // per-message ledger over-count.
    let twice: Vec<Value> = vec![
        event("t1", "u1", 1, 2),
        event("t2", "u1", 1, 0),
        event("t1", "u1", 1, 2),
    ];
    publisher.publish("twice", &twice).await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(total_counted(&pool).await, 2);

    // A client resend inside another message: counted once, and MongoDB keeps the first copy.
    let mut resend = event("t1", "u1", 1, 2);
    resend["received_at"] = "2026-03-21T00:00:00Z".into();
    publisher.publish("resend", &[resend]).await;
    // A redelivery of "twice" after its commit (the worker died before acknowledging): the
    // same message key under another Nats-Msg-Id, as a replay carries it.
    publisher
        .publish_with_key("twice-redelivered", "id:twice", &twice)
        .await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(total_counted(&pool).await, 2);
    assert_eq!(stored(&env).await, 2);
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let kept = mongo
        .database(&env.mongo_db)
        .collection::<Document>("events")
        .find_one(doc! {"_id": "p1:t1"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.get_datetime("received_at")
            .unwrap()
            .try_to_rfc3339_string()
            .unwrap(),
        "2026-03-20T00:00:00Z",
        "the stored copy is the counted one"
    );

    // A batch whose rollups committed and whose MongoDB insert never happened (the worker died
    // in between): its redelivery stores the events without counting them again.
    let lost: Vec<Value> = (0..4).map(|i| event(&format!("l{i}"), "u2", 2, i)).collect();
    claim_without_storing(&env, &pool, "id:lost", &lost).await;
    assert_eq!(total_counted(&pool).await, 6);
    publisher.publish_with_key("lost-redelivered", "id:lost", &lost).await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(total_counted(&pool).await, 6);
    assert_eq!(stored(&env).await, 6);

    paths_flushed(&env).await;
    let differences = reconcile(&env).await;
    assert!(differences.is_empty(), "reconcile found: {differences:#?}");
    shutdown.cancel();
}

/// Runs the rollup of `events` as message `key` would, then stops before MongoDB: a worker that
/// died between its commit and its insert.
async fn claim_without_storing(env: &TestEnv, pool: &sqlx::PgPool, key: &str, events: &[Value]) {
    let events: Vec<common::event::Event> = events
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let users = events.iter().map(|e| (e.project.as_str(), e.user_key())).collect();
    let ords = workers::ordinals::OrdinalCache::new(100)
        .resolve(pool, users)
        .await
        .unwrap();
    let entries: Vec<workers::ledger::Entry<'_>> = events
        .iter()
        .map(|event| workers::ledger::Entry {
            event,
            owner: workers::ledger::owner_of(key),
            others: &[],
            user_ord: ords[&(event.project.clone(), event.user_key().to_owned())],
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    let claims = workers::ledger::claim(&mut tx, &entries).await.unwrap();
    assert!(claims.iter().all(|c| *c == workers::ledger::Claim::New));
    let delta = workers::rollup::Delta::from_events(&events);
    workers::rollup::apply(&mut tx, &delta, &ords).await.unwrap();
    tx.commit().await.unwrap();
    let _ = env;
}

#[tokio::test]
async fn reconcile_reports_a_tampered_rollup_and_fix_repairs_it() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    publisher.publish_all(&support::events(120), 10, 4).await;
    drained(&env, Duration::from_secs(60)).await;
    paths_flushed(&env).await;
    assert!(reconcile(&env).await.is_empty());

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    sqlx::query("update course_daily set views = views + 1 where day = '2026-03-01'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from daily_active_users where day = '2026-03-02'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("update activity_bitmaps set users = $1 where day = '2026-03-03' and kind = 0")
        .bind(common::bitmap::encode(&common::bitmap::RoaringBitmap::new()))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("update user_stats set events = events + 5 where user_key = 'u3'")
        .execute(&pool)
        .await
        .unwrap();
    let differences = reconcile(&env).await;
    let tables: std::collections::BTreeSet<&str> = differences.iter().map(|d| d.table).collect();
    assert_eq!(
        tables,
        ["activity_bitmaps", "course_daily", "daily_active_users", "user_stats"].into(),
        "{differences:#?}"
    );
    let views = differences.iter().find(|d| d.table == "course_daily").unwrap();
    assert!(views.expected.as_deref().unwrap().contains("views: 2"), "{views:?}");
    assert!(views.found.as_deref().unwrap().contains("views: 3"), "{views:?}");

    let store = support::store(&env).await;
    let fixed = workers::reconcile::fix(&pool, &store, &support::march()).await.unwrap();
    assert!(fixed > 0);
    let differences = reconcile(&env).await;
    assert!(differences.is_empty(), "after --fix: {differences:#?}");
    // And the workers go on counting on top of the repaired rollups.
    let more: Vec<Value> = (0..5).map(|i| event(&format!("after-fix-{i}"), "u1", 4, i)).collect();
    publisher.publish("after-fix", &more).await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(total_counted(&pool).await, 125);
    paths_flushed(&env).await;
    assert!(reconcile(&env).await.is_empty());
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
        .find_one(doc! {"_id": common::documents::learning_path_id("p1", "u2", "c1")})
        .await
        .unwrap()
        .expect("u2 has a learning path in c1");
    assert_eq!(path.get_str("studentId").unwrap(), "u2");
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

/// A `group` call of project p1 on day `day` of March 2026.
fn group_call(id: &str, user: &str, group: &str, day: u32, traits: Value) -> Value {
    let ts = format!("2026-03-{day:02}T10:00:00Z");
    serde_json::json!({"project": "p1", "message_id": id, "type": "group", "event": "group", "user_id": user,
        "group_id": group, "ts": ts, "day": &ts[..10], "received_at": "2026-03-20T00:00:00Z", "traits": traits})
}

#[tokio::test]
async fn group_calls_keep_the_latest_traits_and_the_first_join_whatever_the_arrival_order() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    let newest = group_call(
        "g-1",
        "u1",
        "class-a",
        5,
        serde_json::json!({"name": "Class A", "size": 30}),
    );
    publisher.publish("m1", std::slice::from_ref(&newest)).await;
    drained(&env, Duration::from_secs(60)).await;
    // Later arrivals: an older call with older traits (a backfill), a call without traits, and a
    // client's resend of the first call inside another message.
    let late = [
        group_call("g-0", "u1", "class-a", 3, serde_json::json!({"name": "Old name"})),
        group_call("g-2", "u2", "class-a", 4, serde_json::json!({})),
        newest,
    ];
    publisher.publish("m2", &late).await;
    drained(&env, Duration::from_secs(60)).await;

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let (traits, updated_at): (Value, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select traits, updated_at from groups where project = 'p1' and group_id = 'class-a'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(traits, serde_json::json!({"name": "Class A", "size": 30}));
    assert_eq!(updated_at.to_rfc3339(), "2026-03-05T10:00:00+00:00");
    let members: Vec<(String, chrono::NaiveDate)> = sqlx::query_as(
        "select user_key, (joined_at at time zone 'UTC')::date from group_members where project = 'p1' order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    assert_eq!(members, [("u1".to_owned(), day(3)), ("u2".to_owned(), day(4))]);
    support::assert_exactly_once(&env, 3).await;

    // reconcile covers groups too: a tampered trait and a lost membership are reported and fixed.
    sqlx::query("update groups set traits = '{\"name\": \"tampered\"}'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from group_members where user_key = 'u2'")
        .execute(&pool)
        .await
        .unwrap();
    let tables: std::collections::BTreeSet<&str> = reconcile(&env).await.iter().map(|d| d.table).collect();
    assert_eq!(tables, ["group_members", "groups"].into());
    let store = support::store(&env).await;
    workers::reconcile::fix(&pool, &store, &support::march()).await.unwrap();
    assert!(reconcile(&env).await.is_empty());
    shutdown.cancel();
}

fn course_published(id: &str, day: u32, properties: Value) -> Value {
    let ts = format!("2026-03-{day:02}T09:00:00Z");
    let mut properties = properties;
    properties["course_id"] = "c1".into();
    serde_json::json!({"project": "p1", "message_id": id, "type": "track", "event": "course_published",
        "user_id": "author", "ts": ts, "day": &ts[..10], "received_at": "2026-03-20T00:00:00Z",
        "properties": properties})
}

/// The catalog row of c1: title, total lessons, instructor.
async fn catalog(pool: &sqlx::PgPool, table: &str) -> (Option<String>, Option<i32>, Option<String>) {
    sqlx::query_as(&format!(
        "select title, total_lessons, instructor_id from {table} where project = 'p1' and course_id = 'c1'"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_course_catalog_is_the_latest_value_of_each_field_whatever_the_arrival_order() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    let (first, second, third) = (
        course_published(
            "c-1",
            1,
            serde_json::json!({"title": "Draft", "total_lessons": 10, "instructor_id": "i1"}),
        ),
        course_published("c-2", 2, serde_json::json!({"title": "Algebra I"})),
        course_published("c-3", 3, serde_json::json!({"total_lessons": 12})),
    );
    // The newest first, alone; then the oldest and the middle one together, in reverse order.
    publisher.publish("m1", std::slice::from_ref(&third)).await;
    drained(&env, Duration::from_secs(60)).await;
    publisher.publish("m2", &[second, first]).await;
    drained(&env, Duration::from_secs(60)).await;

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let expected = (Some("Algebra I".to_owned()), Some(12), Some("i1".to_owned()));
    assert_eq!(catalog(&pool, "courses").await, expected);
    assert_eq!(catalog(&pool, "course_catalog").await, expected);
    assert!(reconcile(&env).await.is_empty());

    // An admin's override wins every field it replaces until a newer event carries that field.
    sqlx::query("insert into course_overrides values ('p1', 'c1', 'Algebra 1', null, 'i2', '2026-03-04T00:00:00Z')")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        catalog(&pool, "course_catalog").await,
        (Some("Algebra 1".to_owned()), None, Some("i2".to_owned()))
    );
    publisher
        .publish(
            "m3",
            &[course_published("c-4", 5, serde_json::json!({"total_lessons": 14}))],
        )
        .await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(
        catalog(&pool, "course_catalog").await,
        (Some("Algebra 1".to_owned()), Some(14), Some("i2".to_owned()))
    );

    // reconcile covers the catalog: a tampered field is reported and fixed; overrides are not
    // derived, so they are neither.
    sqlx::query("update courses set title = 'tampered'")
        .execute(&pool)
        .await
        .unwrap();
    let tables: Vec<&str> = reconcile(&env).await.iter().map(|d| d.table).collect();
    assert_eq!(tables, ["courses"]);
    let store = support::store(&env).await;
    workers::reconcile::fix(&pool, &store, &support::march()).await.unwrap();
    assert!(reconcile(&env).await.is_empty());
    assert_eq!(catalog(&pool, "courses").await.0.as_deref(), Some("Algebra I"));
    assert_eq!(catalog(&pool, "course_catalog").await.0.as_deref(), Some("Algebra 1"));
    shutdown.cancel();
}

#[tokio::test]
async fn raw_events_past_the_retention_are_deleted_and_the_rollups_kept() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    // 40 events of p1 over March 1-20, and one of p2 on March 1.
    let mut events = support::events(40);
    let mut other = event("p2-only", "v1", 1, 0);
    other["project"] = "p2".into();
    events.push(other);
    publisher.publish("m1", &events).await;
    drained(&env, Duration::from_secs(60)).await;
    assert_eq!(stored(&env).await, 41);

    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let store = support::store(&env).await;
    let cutoff = "2026-03-11T00:00:00Z".parse().unwrap();
    let expired = events
        .iter()
        .filter(|e| e["ts"].as_str().unwrap() < "2026-03-11")
        .count() as u64;
    let deleted = workers::prune_raw_events_once(&pool, &store, cutoff, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(deleted, expired);
    assert_eq!(stored(&env).await, 41 - expired);
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let left: Vec<Document> = {
        use futures::TryStreamExt as _;
        mongo
            .database(&env.mongo_db)
            .collection::<Document>("events")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert!(
        left.iter().all(|d| d.get_str("day").unwrap() >= "2026-03-11"),
        "only events on or after the cutoff remain"
    );
    // The rollups keep counting what was deleted; a second pass finds nothing.
    assert_eq!(total_counted(&pool).await, 41);
    let again = workers::prune_raw_events_once(&pool, &store, cutoff, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn ledger_pruning_drops_whole_days_past_the_cutoff_with_their_claims() {
    let env = TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::migrate(&pool).await.unwrap();
    // Two events on each of days 1 to 4, two names a day: eight chunks.
    let events: Vec<Value> = (0..8)
        .map(|i| event(&format!("r{i}"), &format!("u{}", i % 3), 1 + (i / 2) as u32, i))
        .collect();
    claim_without_storing(&env, &pool, "first", &events).await;
    let chunks = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (chrono::NaiveDate, i64)>(
            "select day, sum(cardinality(ids))::int8 from event_chunks group by day order by day",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    assert_eq!(
        chunks(pool.clone()).await,
        vec![(day(1), 2), (day(2), 2), (day(3), 2), (day(4), 2)]
    );

    // A cutoff in the middle of day 3 keeps that day whole; one chunk per statement.
    let cutoff = "2026-03-03T12:00:00Z".parse().unwrap();
    let mut pruned = Vec::new();
    loop {
        match workers::ledger::prune(&pool, cutoff, 1).await.unwrap() {
            0 => break,
            n => pruned.push(n),
        }
    }
    assert_eq!(pruned, vec![1, 1, 1, 1], "four chunks of one event each");
    assert_eq!(chunks(pool.clone()).await, vec![(day(3), 2), (day(4), 2)]);
    let claims: i64 = sqlx::query_scalar("select count(*) from event_ids")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 4, "the pruned events' claims are gone with their chunks");
    let view: Vec<String> = sqlx::query_scalar("select e.event from event_log e order by ts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(view.len(), 4, "the view shows the events kept: {view:?}");

    // A pruned event is new again (a resend that old counts again, as documented); a kept one
    // is still claimed.
    let (old, kept): (Vec<Value>, Vec<Value>) = (events[..4].to_vec(), events[4..].to_vec());
    claim_without_storing(&env, &pool, "resend", &old).await;
    let event: common::event::Event = serde_json::from_value(kept[0].clone()).unwrap();
    let entry = workers::ledger::Entry {
        event: &event,
        owner: workers::ledger::owner_of("resend"),
        others: &[],
        user_ord: 0,
    };
    let mut tx = pool.begin().await.unwrap();
    let claims = workers::ledger::claim(&mut tx, &[entry]).await.unwrap();
    assert_eq!(claims, vec![workers::ledger::Claim::Theirs]);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_funnels_chunks_keep_every_course_id_and_property_text_as_sent() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let shutdown = start_worker(&env).await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();

    // The chunks' text columns are written as PostgreSQL array literals: quotes, backslashes,
    // braces, commas, the word NULL, empty strings and non-ASCII must come back as they were.
    let awkward = [
        r#"a"b"#,
        r"back\slash",
        r"\",
        "{braces},and,commas",
        "NULL",
        "",
        "  spaced  ",
        "ünïcödé ✓",
        r#"{"json": "in a string"}"#,
    ];
    let mut sent: Vec<Value> = Vec::new();
    for (i, text) in awkward.iter().enumerate() {
        let mut e = event(&format!("w{i}"), "u1", 3, 0);
        e["properties"] = serde_json::json!({"course_id": text, "label": text, "n": i});
        sent.push(e);
    }
    // And events without a course or any scalar property: NULL elements beside the others.
    let mut bare = event("w-bare", "u1", 3, 0);
    bare["properties"] = serde_json::json!({"nested": {"x": 1}});
    sent.push(bare);
    publisher.publish("awkward", &sent).await;
    drained(&env, Duration::from_secs(60)).await;

    let mut found: Vec<(Option<String>, Option<Value>)> =
        sqlx::query_as("select course_id, props from event_log where project = 'p1' and day = '2026-03-03'")
            .fetch_all(&pool)
            .await
            .unwrap();
    found.sort_by_key(|(course, props)| (course.clone(), props.as_ref().map(Value::to_string)));
    let mut want: Vec<(Option<String>, Option<Value>)> = awkward
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // An empty `course_id` is no course (docs/contract.md §5), so its element is NULL.
            let course = Some((*text).to_owned()).filter(|c| !c.is_empty());
            (course, Some(serde_json::json!({"label": text, "n": i})))
        })
        .chain([(None, None)])
        .collect();
    want.sort_by_key(|(course, props)| (course.clone(), props.as_ref().map(Value::to_string)));
    assert_eq!(found, want);
    let differences = reconcile(&env).await;
    assert!(differences.is_empty(), "reconcile found: {differences:#?}");
    shutdown.cancel();
}
