//! The read API against the real servers, fed by the real pipeline: each test runs the workers
//! in-process on its own stream, publishes events to it as ingest would, waits until the workers
//! drained them, and then reads the numbers the workers produced through the api.

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser as _;
use common::stream::{ensure_events_stream, Subjects};
use futures::StreamExt as _;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-of-at-least-32-bytes!!";
const READ_KEY: &str = "rk_bootstrap_of_p1";

/// One test's pipeline: workers and api in-process on the test's own stream and databases.
struct Stack {
    env: TestEnv,
    base: String,
    http: reqwest::Client,
    js: jetstream::Context,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
    published: usize,
    /// The running api: its configuration, and what stops it alone (for restarts).
    api_config: api::Config,
    api: (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>),
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn stack() -> Stack {
    let env = TestEnv::new().await;
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client);
    ensure_events_stream(&js, &env.nats).await.unwrap();
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::MIGRATOR.run(&pool).await.unwrap();
    let shutdown = CancellationToken::new();
    let workers = workers::Config::parse_from(env.worker_args(&["--batch-linger", "20ms"]));
    let workers = workers::Worker::build(workers).await.expect("workers start");
    tokio::spawn(workers.run(shutdown.clone()));
    let config = api::Config::parse_from([
        "api",
        "--database-url",
        &env.database_url,
        "--nats-url",
        &env.nats.url,
        "--nats-stream",
        &env.nats.stream,
        "--nats-subject-prefix",
        &env.nats.subject_prefix,
        "--read-key",
        READ_KEY,
        "--project",
        "p1",
        "--jwt-secret",
        SECRET,
        // Long enough that only change notifications can explain fresh answers.
        "--cache-ttl",
        "1h",
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let api = serve_api(&config, listener, &shutdown).await;
    Stack {
        env,
        base,
        http: reqwest::Client::builder().no_gzip().build().unwrap(),
        js,
        pool,
        shutdown,
        published: 0,
        api_config: config,
        api,
    }
}

/// Starts an api (a new instance: an empty cache) on `listener`, stopped with `shutdown`.
async fn serve_api(
    config: &api::Config,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let own = shutdown.child_token();
    let app = api::App::build(config.clone()).await.unwrap();
    (own.clone(), tokio::spawn(app.serve(listener, own)))
}

/// A stored-event document as ingest publishes it.
fn ev(project: &str, user: &str, name: &str, ts: &str, properties: Value) -> Value {
    let mut event = json!({"project": project, "message_id": format!("{user}-{name}-{ts}"), "type": "track",
        "event": name, "ts": ts, "day": &ts[..10], "received_at": ts, "properties": properties});
    if let Some(anonymous) = user.strip_prefix("anon:") {
        event["anonymous_id"] = anonymous.into();
    } else {
        event["user_id"] = user.into();
    }
    event
}

impl Stack {
    /// Stops the api and starts a new one on the same address and database, as a deployment
    /// does: everything it answers next comes from PostgreSQL, none from the old cache.
    async fn restart_api(&mut self) {
        self.api.0.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), &mut self.api.1).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the api stops cleanly: {stopped:?}");
        let addr = self.base.trim_start_matches("http://");
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        self.api = serve_api(&self.api_config, listener, &self.shutdown).await;
    }

    /// Publishes `events` (one project) as one JetStream message and waits for the workers to
    /// drain the stream.
    async fn publish(&mut self, events: &[Value]) {
        self.published += 1;
        let project = events[0]["project"].as_str().unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("m{}", self.published).as_str());
        let subject = Subjects::new(&self.env.nats.subject_prefix).events(project);
        self.js
            .publish_with_headers(subject, headers, serde_json::to_vec(events).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let (js, stream) = (self.js.clone(), self.env.nats.stream.clone());
        eventually("the workers to drain the stream", Duration::from_secs(60), || {
            let (js, stream) = (js.clone(), stream.clone());
            async move {
                let mut consumer: jetstream::consumer::PullConsumer =
                    js.get_stream(&stream).await.ok()?.get_consumer("workers").await.ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        })
        .await;
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET that must succeed.
    async fn ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn token(role: api::Role, sub: &str, project: &str, courses: &[&str]) -> String {
    token_with(SECRET, role, sub, project, courses, 3600)
}

fn token_with(secret: &str, role: api::Role, sub: &str, project: &str, courses: &[&str], ttl: i64) -> String {
    let exp = (chrono::Utc::now().timestamp() + ttl) as u64;
    sign_claims(
        secret,
        api::Claims {
            sub: sub.into(),
            role,
            project: project.into(),
            courses: courses.iter().map(|c| (*c).to_owned()).collect(),
            exp,
            nbf: None,
            iat: None,
        },
    )
}

/// An admin JWT of p1, the project of `READ_KEY`: catalog writes need one.
fn catalog_admin() -> String {
    token(api::Role::Admin, "catalog", "p1", &[])
}

fn sign_claims(secret: &str, claims: api::Claims) -> String {
    api::sign(secret, &claims).unwrap()
}

fn c1(extra: Value) -> Value {
    let mut properties = json!({"course_id": "c1"});
    properties
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    properties
}

/// Three learners and an anonymous visitor over three days in project p1 (the numbers asserted
/// below are worked out by hand from these events in the comments), and a little of project p2.
fn learning_events() -> Vec<Value> {
    let p = "p1";
    vec![
        ev(p, "u1", "course_viewed", "2026-03-01T10:00:00Z", c1(json!({}))),
        ev(p, "u1", "course_enrolled", "2026-03-01T10:05:00Z", c1(json!({}))),
        ev(
            p,
            "u1",
            "lesson_started",
            "2026-03-01T11:00:00Z",
            c1(json!({"module_id": "m1", "lesson_id": "l1"})),
        ),
        ev(
            p,
            "u1",
            "lesson_completed",
            "2026-03-01T11:30:00Z",
            c1(json!({"module_id": "m1", "lesson_id": "l1", "time_spent_s": 600})),
        ),
        ev(
            p,
            "u1",
            "lesson_completed",
            "2026-03-02T09:00:00Z",
            c1(json!({"module_id": "m1", "lesson_id": "l2", "time_spent_s": 300})),
        ),
        ev(
            p,
            "u1",
            "quiz_submitted",
            "2026-03-02T09:30:00Z",
            c1(json!({"quiz_id": "q1", "score": 8, "max_score": 10, "passed": true})),
        ),
        ev(
            p,
            "u1",
            "lesson_completed",
            "2026-03-02T10:00:00Z",
            c1(json!({"module_id": "m2", "lesson_id": "l3", "time_spent_s": 200})),
        ),
        ev(p, "u1", "course_completed", "2026-03-03T08:00:00Z", c1(json!({}))),
        ev(
            p,
            "u1",
            "badge_earned",
            "2026-03-03T08:10:00Z",
            json!({"badge_id": "b1", "points": 50}),
        ),
        ev(p, "u1", "page_view", "2026-03-03T08:20:00Z", json!({"page": "/home"})),
        ev(p, "u2", "course_viewed", "2026-03-01T12:00:00Z", c1(json!({}))),
        ev(p, "u2", "course_viewed", "2026-03-02T12:00:00Z", c1(json!({}))),
        ev(p, "u2", "course_enrolled", "2026-03-02T12:05:00Z", c1(json!({}))),
        ev(
            p,
            "u2",
            "quiz_submitted",
            "2026-03-02T13:00:00Z",
            c1(json!({"quiz_id": "q1", "score": 4, "max_score": 10, "passed": false})),
        ),
        ev(
            p,
            "u2",
            "quiz_submitted",
            "2026-03-02T13:10:00Z",
            c1(json!({"quiz_id": "q1", "score": 6, "max_score": 10, "passed": true})),
        ),
        ev(
            p,
            "u2",
            "quiz_submitted",
            "2026-03-02T13:20:00Z",
            c1(json!({"quiz_id": "q2", "score": 50, "passed": false})),
        ),
        ev(
            p,
            "u2",
            "lesson_started",
            "2026-03-02T14:00:00Z",
            c1(json!({"module_id": "m1", "lesson_id": "l1"})),
        ),
        ev(p, "u2", "page_view", "2026-03-03T09:00:00Z", json!({"page": "/home"})),
        ev(
            p,
            "u2",
            "page_view",
            "2026-03-03T09:05:00Z",
            json!({"page": "/courses"}),
        ),
        ev(p, "u3", "course_viewed", "2026-03-01T15:00:00Z", c1(json!({}))),
        ev(
            p,
            "u3",
            "course_enrolled",
            "2026-03-03T09:00:00Z",
            json!({"course_id": "c2"}),
        ),
        ev(
            p,
            "anon:a9",
            "page_view",
            "2026-03-02T16:00:00Z",
            json!({"page": "/courses"}),
        ),
    ]
}

fn p2_events() -> Vec<Value> {
    vec![
        ev("p2", "u1", "login", "2026-03-01T10:00:00Z", json!({})),
        ev(
            "p2",
            "u1",
            "course_viewed",
            "2026-03-01T10:01:00Z",
            json!({"course_id": "c1"}),
        ),
    ]
}

/// A stack with both projects' events in and the catalog entry of c1.
async fn loaded() -> Stack {
    let mut stack = stack().await;
    stack.publish(&learning_events()).await;
    stack.publish(&p2_events()).await;
    let (status, body) = stack
        .put(
            "/v1/courses/c1",
            &catalog_admin(),
            &json!({"title": "Rust 101", "total_lessons": 4, "instructor_id": "t1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stack
}

const RANGE: &str = "from=2026-03-01&to=2026-03-03";

#[tokio::test]
async fn every_metric_is_exactly_what_the_workers_rolled_up() {
    let stack = loaded().await;
    let k = READ_KEY;

    let active = stack.ok(&format!("/v1/metrics/active-users?{RANGE}"), k).await;
    let dau: Vec<i64> = active["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dau"].as_i64().unwrap())
        .collect();
    assert_eq!(dau, [3, 3, 3]);
    assert_eq!(active["series"][2]["wau"], 4, "u1, u2, u3 and the anonymous a9");

    // Ties in count are ordered by name.
    let top = stack.ok(&format!("/v1/metrics/events/top?{RANGE}&limit=4"), k).await;
    assert_eq!(
        top["items"],
        json!([{"event": "course_viewed", "events": 4}, {"event": "page_view", "events": 4},
               {"event": "quiz_submitted", "events": 4}, {"event": "course_enrolled", "events": 3}])
    );
    let pages = stack.ok(&format!("/v1/metrics/pages/top?{RANGE}"), k).await;
    assert_eq!(
        pages["items"],
        json!([{"page": "/courses", "views": 2}, {"page": "/home", "views": 2}])
    );

    let course = stack.ok(&format!("/v1/courses/c1/analytics?{RANGE}"), k).await;
    assert_eq!(course["title"], "Rust 101");
    let day = |i: usize, field: &str| course["series"][i][field].clone();
    // Day 1: u1 viewed, enrolled, started and completed l1 (600 s); u2 and u3 viewed.
    assert_eq!(
        [
            day(0, "views"),
            day(0, "unique_viewers"),
            day(0, "active_learners"),
            day(0, "interactions")
        ],
        [json!(3), json!(3), json!(3), json!(3)]
    );
    assert_eq!(
        [
            day(0, "enrollments"),
            day(0, "lesson_completions"),
            day(0, "time_spent_s"),
            day(0, "avg_time_spent_s")
        ],
        [json!(1), json!(1), json!(600), json!(200.0)]
    );
    assert_eq!(day(0, "completion_rate"), json!(0.0));
    // Day 2: u1 completed l2 and l3 (500 s) and a quiz; u2 viewed, enrolled, 3 quizzes, started l1.
    assert_eq!(
        [
            day(1, "views"),
            day(1, "unique_viewers"),
            day(1, "active_learners"),
            day(1, "interactions")
        ],
        [json!(1), json!(1), json!(2), json!(8)]
    );
    assert_eq!(
        [
            day(1, "enrollments"),
            day(1, "lesson_completions"),
            day(1, "time_spent_s"),
            day(1, "avg_time_spent_s")
        ],
        [json!(1), json!(2), json!(500), json!(250.0)]
    );
    // Day 3: u1 completed the course: one of the two enrolled learners.
    assert_eq!(
        [
            day(2, "course_completions"),
            day(2, "active_learners"),
            day(2, "unique_viewers"),
            day(2, "completion_rate")
        ],
        [json!(1), json!(1), json!(0), json!(0.5)]
    );
    let totals = &course["totals"];
    assert_eq!(
        [
            &totals["views"],
            &totals["unique_viewers"],
            &totals["active_learners"],
            &totals["interactions"]
        ],
        [&json!(4), &json!(3), &json!(3), &json!(12)]
    );
    assert_eq!(totals["time_spent_s"], 1100);
    assert_eq!(totals["avg_time_spent_s"], json!(1100.0 / 3.0));
    assert_eq!(
        course["popular_modules"],
        json!([{"module_id": "m1", "lesson_completions": 2}, {"module_id": "m2", "lesson_completions": 1}])
    );

    // Learners: u1 and u2 (u3 only viewed c1); one per page.
    let first = stack.ok("/v1/courses/c1/learners?limit=1", k).await;
    assert_eq!(
        (first["total"].clone(), first["next_offset"].clone()),
        (json!(2), json!(1))
    );
    let u1 = &first["items"][0];
    assert_eq!(
        (
            &u1["user_id"],
            &u1["lessons_completed"],
            &u1["progress_pct"],
            &u1["status"]
        ),
        (&json!("u1"), &json!(3), &json!(75.0), &json!("completed"))
    );
    assert_eq!(u1["last_accessed_at"], "2026-03-03T08:00:00Z");
    let second = stack.ok("/v1/courses/c1/learners?limit=1&offset=1", k).await;
    let u2 = &second["items"][0];
    assert_eq!(
        (
            &u2["user_id"],
            &u2["lessons_completed"],
            &u2["progress_pct"],
            &u2["status"]
        ),
        (&json!("u2"), &json!(0), &json!(0.0), &json!("in_progress"))
    );
    assert_eq!(second["next_offset"], Value::Null);

    let stats = stack.ok("/v1/users/u1/stats", k).await;
    assert_eq!(
        [
            &stats["courses_enrolled"],
            &stats["courses_completed"],
            &stats["learning_time_s"]
        ],
        [&json!(1), &json!(1), &json!(1100)]
    );
    assert_eq!(
        [
            &stats["quizzes_taken"],
            &stats["quizzes_passed"],
            &stats["average_quiz_score"]
        ],
        [&json!(1), &json!(1), &json!(80.0)]
    );
    assert_eq!([&stats["points"], &stats["badges"]], [&json!(50), &json!(1)]);
    assert_eq!(
        [&stats["longest_streak_days"], &stats["current_streak_days"]],
        [&json!(3), &json!(0)]
    );
    assert_eq!(stats["last_activity_at"], "2026-03-03T08:20:00Z");
    // u2: q1 twice (40 %, 60 %, passed once), q2 once (50 %): 2 quizzes, 1 passed, 150 / 3.
    let stats = stack.ok("/v1/users/u2/stats", k).await;
    assert_eq!(
        [
            &stats["quizzes_taken"],
            &stats["quizzes_passed"],
            &stats["average_quiz_score"]
        ],
        [&json!(2), &json!(1), &json!(50.0)]
    );
    assert_eq!(stack.get("/v1/users/nobody/stats", k).await.0, StatusCode::NOT_FOUND);

    let progress = stack.ok("/v1/users/u1/progress", k).await;
    assert_eq!(progress["overall"]["progress_pct"], 75.0);
    assert_eq!(progress["overall"]["completed"], 1);
    assert_eq!(progress["courses"][0]["course_id"], "c1");
    let progress = stack.ok("/v1/users/u3/progress", k).await;
    assert_eq!(
        progress["courses"],
        json!([{"course_id": "c2", "user_id": "u3", "title": null, "lessons_completed": 0, "total_lessons": null,
                "progress_pct": null, "status": "enrolled", "enrolled_at": "2026-03-03T09:00:00Z",
                "completed_at": null, "last_accessed_at": "2026-03-03T09:00:00Z"}])
    );
    assert_eq!(progress["overall"]["progress_pct"], Value::Null);

    let path = eventually("u1's learning path in c1", Duration::from_secs(30), || async {
        let (status, body) = stack.get("/v1/users/u1/learning-paths/c1", k).await;
        (status == StatusCode::OK && body["learningPath"].as_array()?.len() == 3).then_some(body)
    })
    .await;
    let lessons: Vec<(String, String, bool, i64)> = path["learningPath"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["moduleId"].as_str().unwrap().to_owned(),
                l["lessonId"].as_str().unwrap().to_owned(),
                l["completed"].as_bool().unwrap(),
                l["timeSpent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lessons,
        [
            ("m1".into(), "l1".into(), true, 600),
            ("m1".into(), "l2".into(), true, 300),
            ("m2".into(), "l3".into(), true, 200)
        ]
    );
    assert_eq!(
        stack.get("/v1/users/u1/learning-paths/c9", k).await.0,
        StatusCode::NOT_FOUND
    );

    // Funnel: u1 goes viewed → enrolled (+300 s) → lesson (+5,100 s); u2 enrols 24 h 5 min after
    // first viewing, outside a 1-day window; u3 enrols 42 h after viewing.
    let steps = json!(["course_viewed", "Course Enrolled", "lesson_completed"]);
    let (status, funnel) = stack
        .post(
            "/v1/funnels",
            k,
            &json!({"steps": steps, "from": "2026-03-01", "to": "2026-03-03", "window": "1d"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{funnel}");
    let users: Vec<i64> = funnel["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["users"].as_i64().unwrap())
        .collect();
    assert_eq!(users, [3, 1, 1]);
    assert_eq!(funnel["steps"][1]["median_seconds_from_previous"], 300.0);
    assert_eq!(funnel["steps"][2]["median_seconds_from_previous"], 5100.0);
    assert_eq!(funnel["steps"][1]["conversion_from_previous"], json!(1.0 / 3.0));
    assert_eq!(funnel["overall_conversion"], json!(1.0 / 3.0));
    let (_, funnel) = stack
        .post(
            "/v1/funnels",
            k,
            &json!({"steps": steps, "from": "2026-03-01", "to": "2026-03-03", "window": 172_800}),
        )
        .await;
    let users: Vec<i64> = funnel["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["users"].as_i64().unwrap())
        .collect();
    // Within 2 days u2 enrols too (+86,700 s), and so does u3, in c2 (+151,200 s): funnels are
    // about events, whatever their course.
    assert_eq!(users, [3, 3, 1]);
    assert_eq!(funnel["steps"][1]["median_seconds_from_previous"], 86_700.0);
    assert_eq!(funnel["steps"][2]["conversion_from_previous"], json!(1.0 / 3.0));

    // Retention: u1, u2, u3 first active on day 1, of whom u1 and u2 on day 2; a9 on day 2.
    let retention = stack.ok("/v1/retention?from=2026-03-01&to=2026-03-02", k).await;
    assert_eq!(
        retention["cohorts"],
        json!([
            {"cohort": "2026-03-01", "size": 3, "d1": {"users": 2, "rate": 2.0 / 3.0},
             "d7": {"users": 0, "rate": 0.0}, "d30": {"users": 0, "rate": 0.0}},
            {"cohort": "2026-03-02", "size": 1, "d1": {"users": 0, "rate": 0.0},
             "d7": {"users": 0, "rate": 0.0}, "d30": {"users": 0, "rate": 0.0}},
        ])
    );

    let courses = stack.ok("/v1/courses", k).await;
    assert_eq!(
        courses["items"],
        json!([
            {"course_id": "c1", "title": "Rust 101", "total_lessons": 4, "instructor_id": "t1",
             "enrolled": 2, "completed": 1, "completion_rate": 0.5},
            {"course_id": "c2", "title": null, "total_lessons": null, "instructor_id": null,
             "enrolled": 1, "completed": 0, "completion_rate": 0.0},
        ])
    );
    assert_eq!(courses["total"], 2);
}

#[tokio::test]
async fn active_users_of_a_group_count_only_its_members() {
    let mut stack = stack().await;
    let mut events: Vec<Value> = [
        ("u1", "2026-03-01"),
        ("u2", "2026-03-01"),
        ("u3", "2026-03-01"),
        ("u1", "2026-03-02"),
        ("u4", "2026-03-02"),
        ("u2", "2026-03-03"),
        ("u3", "2026-03-03"),
    ]
    .into_iter()
    .map(|(user, day)| {
        ev(
            "p1",
            user,
            "page_view",
            &format!("{day}T09:00:00Z"),
            json!({"page": "/home"}),
        )
    })
    .collect();
    for (user, group, day) in [
        ("u1", "class-a", "2026-03-01"),
        ("u3", "class-a", "2026-03-01"),
        ("u4", "class-b", "2026-03-02"),
    ] {
        let mut call = ev("p1", user, "group", &format!("{day}T10:00:00Z"), json!({}));
        call["type"] = "group".into();
        call["group_id"] = group.into();
        call["traits"] = json!({"name": group});
        events.push(call);
    }
    stack.publish(&events).await;
    let series = |body: &Value, field: &str| -> Vec<i64> {
        body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[field].as_i64().unwrap())
            .collect()
    };
    let all = stack.ok(&format!("/v1/metrics/active-users?{RANGE}"), READ_KEY).await;
    assert_eq!(series(&all, "dau"), [3, 2, 2]);
    let a = stack
        .ok(&format!("/v1/metrics/active-users?{RANGE}&group=class-a"), READ_KEY)
        .await;
    assert_eq!(a["group"], "class-a");
    assert_eq!(series(&a, "dau"), [2, 1, 1], "u1 and u3 only");
    assert_eq!(series(&a, "wau"), [2, 2, 2]);
    let b = stack
        .ok(
            &format!("/v1/metrics/active-users?{RANGE}&group=class-b&interval=month"),
            READ_KEY,
        )
        .await;
    assert_eq!(series(&b, "active_users"), [1]);
    let none = stack
        .ok(&format!("/v1/metrics/active-users?{RANGE}&group=nobody"), READ_KEY)
        .await;
    assert_eq!(series(&none, "dau"), [0, 0, 0]);
    let (status, body) = stack
        .get(&format!("/v1/metrics/active-users?{RANGE}&group=a%00b"), READ_KEY)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The group itself: its traits (the latest call carrying any, by event time: a later call
    // without traits changes nothing, an older one with traits neither) and its members.
    let mut late = ev("p1", "u2", "group", "2026-03-03T10:00:00Z", json!({}));
    (late["type"], late["group_id"]) = ("group".into(), "class-a".into());
    let mut stale = ev("p1", "u2", "group", "2026-02-01T10:00:00Z", json!({}));
    (stale["type"], stale["group_id"], stale["traits"]) =
        ("group".into(), "class-a".into(), json!({"name": "old name"}));
    stack.publish(&[late, stale]).await;
    let a = stack.ok("/v1/groups/class-a", READ_KEY).await;
    assert_eq!(
        a,
        json!({"group_id": "class-a", "traits": {"name": "class-a"},
               "traits_updated_at": "2026-03-01T10:00:00Z", "members": 3}),
        "u1, u3, and u2 by its later call"
    );
    let (status, _) = stack.get("/v1/groups/nobody", READ_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other_admin = token(api::Role::Admin, "x", "p2", &[]);
    let (status, _) = stack.get("/v1/groups/class-a", &other_admin).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another project's admin sees no such group"
    );
    let student = token(api::Role::Student, "u1", "p1", &[]);
    let (status, _) = stack.get("/v1/groups/class-a", &student).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn course_analytics_learners_and_funnels_of_a_group_count_only_its_members() {
    let mut stack = loaded().await;
    let k = READ_KEY;
    let join = |user: &str, group: &str| {
        let mut call = ev("p1", user, "group", "2026-03-03T23:00:00Z", json!({}));
        (call["type"], call["group_id"]) = ("group".into(), group.into());
        call["message_id"] = format!("join-{user}-{group}").into();
        call
    };
    stack
        .publish(&[
            join("u1", "all"),
            join("u2", "all"),
            join("u3", "all"),
            join("u2", "class-b"),
        ])
        .await;

    // A group of everyone: the members' counters (from the ledger's events) are the rollups'.
    let whole = stack.ok(&format!("/v1/courses/c1/analytics?{RANGE}"), k).await;
    let all = stack
        .ok(&format!("/v1/courses/c1/analytics?{RANGE}&group=all"), k)
        .await;
    assert_eq!(all["group"], "all");
    for field in ["totals", "series", "popular_modules"] {
        assert_eq!(all[field], whole[field], "{field}");
    }
    assert!(whole["totals"]["views"].as_i64() > Some(0) && whole["totals"]["time_spent_s"].as_i64() > Some(0));

    // u2 alone: two views of c1, then an enrolment, no completion.
    let b = stack
        .ok(&format!("/v1/courses/c1/analytics?{RANGE}&group=class-b"), k)
        .await;
    let totals = &b["totals"];
    assert_eq!(
        (
            &totals["unique_viewers"],
            &totals["views"],
            &totals["enrollments"],
            &totals["completion_rate"]
        ),
        (&json!(1), &json!(2), &json!(1), &json!(0.0)),
        "{b}"
    );
    assert!(totals["views"].as_i64() < whole["totals"]["views"].as_i64());
    let nobody = stack
        .ok(&format!("/v1/courses/c1/analytics?{RANGE}&group=nobody"), k)
        .await;
    assert_eq!(nobody["totals"]["views"], 0);
    assert_eq!(nobody["totals"]["active_learners"], 0);
    assert_eq!(nobody["popular_modules"], json!([]));

    let learners = stack.ok("/v1/courses/c1/learners?group=class-b", k).await;
    assert_eq!(learners["total"], 1);
    assert_eq!(learners["group"], "class-b");
    assert_eq!(learners["items"][0]["user_id"], "u2");
    assert_eq!(stack.ok("/v1/courses/c1/learners?group=all", k).await["total"], 2);

    let funnel = |group: Option<&str>| {
        let mut body = json!({"steps": ["course_viewed", "course_enrolled"], "from": "2026-03-01", "to": "2026-03-03"});
        if let Some(group) = group {
            body["group"] = group.into();
        }
        body
    };
    let users = |answer: &Value| -> Vec<i64> {
        answer["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["users"].as_i64().unwrap())
            .collect()
    };
    let everyone = stack.post("/v1/funnels", k, &funnel(None)).await;
    assert_eq!(everyone.0, StatusCode::OK, "{}", everyone.1);
    let all = stack.post("/v1/funnels", k, &funnel(Some("all"))).await;
    assert_eq!(users(&all.1), users(&everyone.1));
    let b = stack.post("/v1/funnels", k, &funnel(Some("class-b"))).await;
    assert_eq!(
        (users(&b.1), &b.1["group"]),
        (vec![1, 1], &json!("class-b")),
        "u2 viewed, then enrolled"
    );
    assert!(users(&everyone.1)[0] > 1, "others viewed too: {}", everyone.1);

    for path in [
        format!("/v1/courses/c1/analytics?{RANGE}&group=a%00b"),
        "/v1/courses/c1/learners?group=a%00b".to_owned(),
    ] {
        let (status, body) = stack.get(&path, k).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("`group`"), "{body}");
    }
    let (status, body) = stack.post("/v1/funnels", k, &funnel(Some(&"g".repeat(300)))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn invalid_queries_are_422_with_the_reason() {
    let stack = stack().await;
    let k = READ_KEY;
    for (path, reason) in [
        ("/v1/metrics/active-users?from=2026-03-05&to=2026-03-01", "after"),
        (
            "/v1/metrics/active-users?from=2026-03-01&to=2026-03-05&interval=year",
            "interval",
        ),
        ("/v1/metrics/active-users?from=2020-01-01&to=2026-03-05", "at most 400"),
        ("/v1/metrics/events/top?from=2026-03-01", "`to` is required"),
        ("/v1/metrics/pages/top?from=2026-03-01&to=2026-03-02&limit=0", "limit"),
        ("/v1/courses/c1/analytics?from=March&to=2026-03-02", "YYYY-MM-DD"),
        ("/v1/courses/c1/learners?limit=100000", "limit"),
        ("/v1/retention?from=2026-03-02&to=2026-03-01", "after"),
    ] {
        let (status, body) = stack.get(path, k).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["error"], "invalid_query");
        assert!(body["detail"].as_str().unwrap().contains(reason), "{path}: {body}");
    }
    let (status, body) = stack
        .post(
            "/v1/funnels",
            k,
            &json!({"steps": ["a"], "from": "2026-03-01", "to": "2026-03-02"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_query"))
    );
    let (status, _) = stack
        .post(
            "/v1/funnels",
            k,
            &json!({"steps": ["a", "b"], "from": "2026-03-01", "to": "2026-03-02", "window": "forever"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = stack
        .put("/v1/courses/c1", &catalog_admin(), &json!({"total_lessons": 0}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = stack
        .http
        .post(format!("{}/v1/funnels", stack.base))
        .bearer_auth(k)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["error"], "invalid_query", "{body}");
    let (status, body) = stack.get("/v1/nothing-here", k).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn every_denial_is_401_or_403_and_no_answer_mixes_projects() {
    let stack = loaded().await;
    let stats = "/v1/users/u1/stats";
    let analytics = format!("/v1/courses/c1/analytics?{RANGE}");
    let active = format!("/v1/metrics/active-users?{RANGE}");

    // 401: no credentials, garbage, a write key, a JWT signed with another secret, an expired one.
    let none = stack.http.get(format!("{}{stats}", stack.base)).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let (_, write_key) = common::keys::create(&stack.pool, "p1", common::keys::Scope::Write)
        .await
        .unwrap();
    let (read_key_row, read_key_p2) = common::keys::create(&stack.pool, "p2", common::keys::Scope::Read)
        .await
        .unwrap();
    let forged = token_with(
        "another-secret-another-secret-!!",
        api::Role::Admin,
        "x",
        "p1",
        &[],
        3600,
    );
    let expired = token_with(SECRET, api::Role::Admin, "x", "p1", &[], -3600);
    // Past the maximum lifetime (24 h by default), with or without `iat`.
    let forever = token_with(SECRET, api::Role::Admin, "x", "p1", &[], 400 * 86_400);
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = |sub: &str| api::Claims {
        sub: sub.into(),
        role: api::Role::Student,
        project: "p1".into(),
        courses: vec![],
        exp: now + 3600,
        nbf: None,
        iat: None,
    };
    let long_lived = sign_claims(
        SECRET,
        api::Claims {
            iat: Some(now - 86_400),
            exp: now + 3600,
            ..claims("u1")
        },
    );
    let not_yet = sign_claims(
        SECRET,
        api::Claims {
            nbf: Some(now + 600),
            ..claims("u1")
        },
    );
    // Subjects that cannot be user ids.
    let nul_sub = sign_claims(SECRET, claims("u\u{0}1"));
    let long_sub = sign_claims(SECRET, claims(&"u".repeat(257)));
    for credential in [
        "garbage",
        write_key.as_str(),
        forged.as_str(),
        expired.as_str(),
        forever.as_str(),
        long_lived.as_str(),
        not_yet.as_str(),
        nul_sub.as_str(),
        long_sub.as_str(),
        "a.b.c",
    ] {
        assert_eq!(
            stack.get(stats, credential).await.0,
            StatusCode::UNAUTHORIZED,
            "{credential}"
        );
    }

    // A token already valid (`nbf` past) and within its lifetime (`iat` an hour ago).
    let valid = sign_claims(
        SECRET,
        api::Claims {
            nbf: Some(now - 60),
            iat: Some(now - 3600),
            ..claims("u1")
        },
    );
    assert_eq!(stack.get(stats, &valid).await.0, StatusCode::OK);

    // Students: only their own user endpoints.
    let student = token(api::Role::Student, "u1", "p1", &[]);
    assert_eq!(stack.ok(stats, &student).await["learning_time_s"], 1100);
    assert_eq!(stack.get("/v1/users/u1/progress", &student).await.0, StatusCode::OK);
    assert_eq!(
        stack.get("/v1/users/u1/learning-paths/c1", &student).await.0,
        StatusCode::OK
    );
    for path in [
        "/v1/users/u2/stats",
        "/v1/users/u2/progress",
        "/v1/users/u2/learning-paths/c1",
        "/v1/courses",
        "/v1/courses/c1/learners",
        analytics.as_str(),
        active.as_str(),
        &format!("/v1/metrics/events/top?{RANGE}"),
        &format!("/v1/metrics/pages/top?{RANGE}"),
        &format!("/v1/retention?{RANGE}"),
    ] {
        let (status, body) = stack.get(path, &student).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "student {path}: {body}");
        assert_eq!(body["error"], "forbidden");
    }
    let funnel = json!({"steps": ["a", "b"], "from": "2026-03-01", "to": "2026-03-02"});
    assert_eq!(
        stack.post("/v1/funnels", &student, &funnel).await.0,
        StatusCode::FORBIDDEN
    );

    // Instructors: only the courses they teach.
    let instructor = token(api::Role::Instructor, "t1", "p1", &["c1"]);
    assert_eq!(stack.ok(&analytics, &instructor).await["totals"]["views"], 4);
    assert_eq!(stack.ok("/v1/courses/c1/learners", &instructor).await["total"], 2);
    assert_eq!(
        stack.get("/v1/users/u1/learning-paths/c1", &instructor).await.0,
        StatusCode::OK
    );
    let mine = stack.ok("/v1/courses", &instructor).await;
    assert_eq!(mine["total"], 1);
    assert_eq!(mine["items"][0]["course_id"], "c1");
    for path in [
        format!("/v1/courses/c2/analytics?{RANGE}"),
        "/v1/courses/c2/learners".to_owned(),
        "/v1/users/u3/learning-paths/c2".to_owned(),
        stats.to_owned(),
        active.clone(),
    ] {
        assert_eq!(
            stack.get(&path, &instructor).await.0,
            StatusCode::FORBIDDEN,
            "instructor {path}"
        );
    }
    assert_eq!(
        stack.post("/v1/funnels", &instructor, &funnel).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        stack
            .put("/v1/courses/c1", &instructor, &json!({"title": "mine now"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Admin tokens and read keys read their one project; the same URL answers per project.
    let admin_p1 = token(api::Role::Admin, "boss", "p1", &[]);
    let admin_p2 = token(api::Role::Admin, "boss", "p2", &[]);
    assert_eq!(stack.ok(&active, &admin_p1).await["series"][0]["dau"], 3);
    assert_eq!(stack.ok(&active, &admin_p2).await["series"][0]["dau"], 1);
    assert_eq!(stack.ok(&active, &read_key_p2).await["series"][0]["dau"], 1);
    assert_eq!(stack.ok(&active, READ_KEY).await["series"][0]["dau"], 3);
    let p2_course = stack.ok(&analytics, &read_key_p2).await;
    assert_eq!(
        (p2_course["totals"]["views"].clone(), p2_course["title"].clone()),
        (json!(1), Value::Null)
    );
    let p2_student = token(api::Role::Student, "u1", "p2", &[]);
    let p2_stats = stack.ok(stats, &p2_student).await;
    assert_eq!(
        (
            p2_stats["project"].clone(),
            p2_stats["learning_time_s"].clone(),
            p2_stats["courses_enrolled"].clone()
        ),
        (json!("p2"), json!(0), json!(0))
    );
    assert_eq!(
        stack.get("/v1/users/u1/learning-paths/c1", &p2_student).await.0,
        StatusCode::NOT_FOUND
    );
    // Read keys read: catalog writes need an admin token.
    for key in [read_key_p2.as_str(), READ_KEY] {
        let (status, body) = stack.put("/v1/courses/c1", key, &json!({"title": "renamed"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let p2_courses = stack.ok("/v1/courses", &read_key_p2).await;
    assert_eq!(
        p2_courses["items"],
        json!([{"course_id": "c1", "title": null, "total_lessons": null, "instructor_id": null,
                "enrolled": 0, "completed": 0, "completion_rate": null}]),
        "p2's c1 was only viewed, and p2 has no catalog"
    );
    let (status, _) = stack
        .post(
            "/v1/funnels",
            &read_key_p2,
            &json!({"steps": ["login", "course_viewed"], "from": "2026-03-01", "to": "2026-03-01"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A revoked read key stops working (its lookup is cached for at most 30 s).
    common::keys::revoke(&stack.pool, read_key_row.id).await.unwrap();
    let (_, fresh_p2) = common::keys::create(&stack.pool, "p2", common::keys::Scope::Read)
        .await
        .unwrap();
    assert_eq!(stack.ok(&active, &fresh_p2).await["project"], "p2");
}

#[tokio::test]
async fn cached_answers_follow_the_workers_commits_with_etags_and_gzip() {
    let mut stack = loaded().await;
    let path = format!("{}/v1/metrics/active-users?{RANGE}", stack.base);
    let http = stack.http.clone();
    let get = |extra: Option<(header::HeaderName, String)>| {
        let mut request = http.get(&path).bearer_auth(READ_KEY);
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request.send()
    };
    let first = get(None).await.unwrap();
    assert_eq!(first.headers()["x-cache"], "miss");
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(first.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("no-cache"));
    let second = get(None).await.unwrap();
    assert_eq!(second.headers()["x-cache"], "hit");
    let not_modified = get(Some((header::IF_NONE_MATCH, etag.clone()))).await.unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert!(not_modified.bytes().await.unwrap().is_empty());
    let gzipped = get(Some((header::ACCEPT_ENCODING, "gzip".into()))).await.unwrap();
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    let bytes = gzipped.bytes().await.unwrap();
    assert_eq!(&bytes[..2], [0x1f, 0x8b], "a gzip stream");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut json).unwrap();
    let plain: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plain["series"][0]["dau"], 3, "the same document, compressed");

    // A new learner on day 2: the workers' change notification makes the next answer fresh.
    stack
        .publish(&[ev("p1", "u9", "login", "2026-03-02T18:00:00Z", json!({}))])
        .await;
    let fresh = eventually("the new learner in the cached DAU", Duration::from_secs(10), || async {
        let body: Value = get(None).await.ok()?.json().await.ok()?;
        (body["series"][1]["dau"] == 4).then_some(body)
    })
    .await;
    assert_eq!(fresh["series"][0]["dau"], 3);
    let changed = get(Some((header::IF_NONE_MATCH, etag))).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK, "the old ETag no longer matches");
    // The catalog's own writes invalidate at once.
    stack
        .put(
            "/v1/courses/c1",
            &catalog_admin(),
            &json!({"title": "Rust 102", "total_lessons": 4}),
        )
        .await;
    let courses = stack.ok("/v1/courses", READ_KEY).await;
    assert_eq!(courses["items"][0]["title"], "Rust 102");
}

#[tokio::test]
async fn the_progress_stream_pushes_a_learners_progress_as_workers_commit_it() {
    let mut stack = loaded().await;
    let student = token(api::Role::Student, "u7", "p1", &[]);
    let denied = stack
        .http
        .get(format!("{}/v1/users/u1/progress/stream", stack.base))
        .bearer_auth(&student)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    // The header is read as every other route reads it: the scheme in either case.
    let lowercase = stack
        .http
        .get(format!("{}/v1/users/u7/progress/stream", stack.base))
        .header(header::AUTHORIZATION, format!("bearer {student}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), StatusCode::OK);
    drop(lowercase);
    let response = stack
        .http
        .get(format!("{}/v1/users/u7/progress/stream?key={student}", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if frame.contains("event: progress") || frame.contains("event:progress") {
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
                .await
                .expect("an event within 30 s")
                .expect("the stream stays open")
                .unwrap();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let initial = next_event().await;
    assert_eq!(initial["courses"], json!([]));
    stack
        .publish(&[
            ev("p1", "u7", "course_enrolled", "2026-03-04T10:00:00Z", c1(json!({}))),
            ev(
                "p1",
                "u7",
                "lesson_completed",
                "2026-03-04T10:30:00Z",
                c1(json!({"module_id": "m1", "lesson_id": "l1", "time_spent_s": 60})),
            ),
        ])
        .await;
    let update = next_event().await;
    assert_eq!(update["courses"][0]["course_id"], "c1");
    assert_eq!(update["courses"][0]["lessons_completed"], 1);
    assert_eq!(update["courses"][0]["progress_pct"], 25.0);
    assert_eq!(update["overall"]["in_progress"], 1);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let stack = stack().await;
    let document: Value = stack
        .http
        .get(format!("{}/v1/openapi.json", stack.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in api::ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        api::ROUTES.len(),
        "the document lists routes the api does not serve"
    );
    // And every listed route is served (not the 404 fallback).
    for (method, path) in api::ROUTES {
        let url = format!(
            "{}{}",
            stack.base,
            path.replace("{id}", "x").replace("{course_id}", "y")
        );
        let request = match *method {
            "get" => stack.http.get(&url),
            "post" => stack.http.post(&url),
            "put" => stack.http.put(&url),
            other => panic!("unexpected method {other}"),
        };
        let response = request.send().await.unwrap();
        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}

/// Where tests leave files for people to look at: `<target dir>/test-output`.
fn test_output_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let mut exe = std::env::current_exe().unwrap();
            exe.pop(); // deps
            exe.pop(); // debug
            exe.pop();
            exe
        },
        std::path::PathBuf::from,
    );
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout.
async fn chromium(profile: &std::path::Path, url: &str, extra: &[&str]) -> String {
    let output = tokio::process::Command::from(test_support::chromium(profile))
        .args([
            "--hide-scrollbars",
            "--window-size=1280,1600",
            "--virtual-time-budget=10000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("chromium is installed (Debian package chromium; ./scripts/test installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The part of the rendered dashboard that is panel `id`'s (up to the end of its section).
fn panel<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("the dashboard has no panel {id}:\n{dom}"));
    let end = dom[start..].find("</section>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// Every panel of the dashboard rendered with the numbers of [`learning_events`].
fn assert_every_panel_filled(dom: &str) {
    assert!(dom.contains(r#"data-ready="true""#), "not every panel rendered:\n{dom}");
    // What the page shows (its script names these too).
    let shown = &dom[dom.find("<main>").unwrap_or(0)..dom.find("</main>").unwrap_or(dom.len())];
    for absent in ["No data in range", r#"class="error""#] {
        assert!(!shown.contains(absent), "the dashboard shows {absent:?}:\n{shown}");
    }
    assert!(dom.contains("project p1"), "{dom}");
    for (id, expected) in [
        ("kpis", &[r#"class="kpi""#][..]),
        (
            "active-chart",
            &[r#"data-series="dau""#, r#"data-series="wau""#, r#"data-series="mau""#],
        ),
        ("top-events", &[r#"class="hbar events""#, "course_viewed"]),
        ("courses", &["<td>c1</td>", "Rust 101", "50%"]),
        ("top-pages", &[r#"class="hbar pages""#, "/courses"]),
        ("funnel", &[r#"class="funnel-step""#, "course_enrolled", "33%"]),
        ("retention", &["<td>2026-03-01</td>", "67%"]),
    ] {
        let html = panel(dom, id);
        for needle in expected {
            assert!(html.contains(needle), "panel {id} lacks {needle:?}:\n{html}");
        }
    }
}

#[tokio::test]
async fn the_dashboard_renders_live_data_in_headless_chromium() {
    let mut stack = loaded().await;
    let url = format!(
        "{}/?key={READ_KEY}&from=2026-03-01&to=2026-03-03&funnel=course_viewed,course_enrolled,lesson_completed",
        stack.base
    );
    let profile = std::env::temp_dir().join(format!("chromium-{}", stack.env.id));
    // The page marks <body data-ready="true"> once every panel rendered from the API's answers.
    let dom = eventually(
        "the dashboard to render every panel",
        Duration::from_secs(120),
        || async {
            let dom = chromium(&profile, &url, &["--dump-dom"]).await;
            dom.contains(r#"data-ready="true""#).then_some(dom)
        },
    )
    .await;
    assert_every_panel_filled(&dom);
    let screenshot = test_output_dir().join("dashboard.png");
    std::fs::remove_file(&screenshot).ok();
    chromium(&profile, &url, &[&format!("--screenshot={}", screenshot.display())]).await;
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    std::fs::remove_dir_all(&profile).ok();

    // After a restart of the api (an empty cache; a new browser profile, so no cached answers
    // there either), one page load renders every panel from PostgreSQL: the DOM checked is the
    // very page of the screenshot. A failed attempt is retried after another restart, so that
    // the page that passes was rendered from an empty cache too.
    let screenshot = test_output_dir().join("dashboard-after-restart.png");
    let mut attempts = 0;
    let dom = loop {
        attempts += 1;
        stack.restart_api().await;
        std::fs::remove_file(&screenshot).ok();
        let profile = std::env::temp_dir().join(format!("chromium-{}-restarted-{attempts}", stack.env.id));
        let shot = format!("--screenshot={}", screenshot.display());
        let dom = chromium(&profile, &url, &["--dump-dom", &shot]).await;
        std::fs::remove_dir_all(&profile).ok();
        if dom.contains(r#"data-ready="true""#) || attempts == 3 {
            break dom;
        }
    };
    assert_every_panel_filled(&dom);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot after the restart");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    // The page was served by the new instance: its answers are in the new cache now.
    let cached = stack
        .http
        .get(format!(
            "{}/v1/metrics/active-users?from=2026-03-01&to=2026-03-03&interval=day",
            stack.base
        ))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.headers()["x-cache"], "hit");
}

/// Course k1 as an instructor sees it, with times relative to today (at-risk and activity windows
/// count days back from today), in project p1. Its catalog comes from `course_published`: lessons
/// l1, l2, video v1, quiz q1 with questions q1-a and q1-b. The numbers the dashboard test asserts
/// are worked out from these in its comments.
fn instructor_events() -> Vec<Value> {
    let today = chrono::Utc::now().date_naive();
    let at = |days: u64, time: &str| format!("{}T{time}Z", today - chrono::Days::new(days));
    let k1 = |extra: Value| {
        let mut properties = json!({"course_id": "k1"});
        properties
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        properties
    };
    let e = |user: &str, name: &str, ts: String, extra: Value| ev("p1", user, name, &ts, k1(extra));
    let video = |position: u32| json!({"video_id": "v1", "length_s": 100, "position_s": position});
    vec![
        e(
            "t1",
            "course_published",
            at(28, "08:00:00"),
            json!({"title": "Statistics", "total_lessons": 2, "instructor_id": "t1",
                   "items": ["l1", "l2", "v1", "q1", "q1-a", "q1-b"]}),
        ),
        // a: everything, right on the second try of q1-b, rewatches 20-60 s of v1; active 2 days ago.
        e("a", "course_enrolled", at(20, "10:00:00"), json!({})),
        e("a", "lesson_started", at(20, "10:01:00"), json!({"lesson_id": "l1"})),
        e(
            "a",
            "lesson_completed",
            at(20, "10:10:00"),
            json!({"lesson_id": "l1", "time_spent_s": 540}),
        ),
        e("a", "video_played", at(20, "10:11:00"), video(0)),
        e(
            "a",
            "video_seeked",
            at(20, "10:12:00"),
            json!({"video_id": "v1", "length_s": 100, "from_s": 60, "to_s": 20}),
        ),
        e("a", "video_played", at(20, "10:12:30"), video(20)),
        e("a", "video_completed", at(20, "10:14:00"), {
            let mut v = video(100);
            v["duration_s"] = json!(80);
            v
        }),
        e(
            "a",
            "question_answered",
            at(20, "10:15:00"),
            json!({"quiz_id": "q1", "item_id": "q1-a", "correct": true, "duration_s": 30}),
        ),
        e(
            "a",
            "question_answered",
            at(20, "10:16:00"),
            json!({"quiz_id": "q1", "item_id": "q1-b", "correct": false}),
        ),
        e(
            "a",
            "question_answered",
            at(20, "10:17:00"),
            json!({"quiz_id": "q1", "item_id": "q1-b", "correct": true}),
        ),
        e(
            "a",
            "quiz_submitted",
            at(20, "10:18:00"),
            json!({"quiz_id": "q1", "score": 100, "max_score": 100, "passed": true}),
        ),
        e("a", "lesson_started", at(2, "09:00:00"), json!({"lesson_id": "l2"})),
        e(
            "a",
            "lesson_completed",
            at(2, "09:20:00"),
            json!({"lesson_id": "l2", "time_spent_s": 1200}),
        ),
        e(
            "a",
            "course_graded",
            at(2, "09:21:00"),
            json!({"grade": 0.9, "passed": true}),
        ),
        // b: one lesson, 40 s of v1, fails q1 three times and stops coming.
        e("b", "course_enrolled", at(25, "11:00:00"), json!({})),
        e("b", "lesson_started", at(25, "11:02:00"), json!({"lesson_id": "l1"})),
        e(
            "b",
            "lesson_completed",
            at(25, "11:20:00"),
            json!({"lesson_id": "l1", "time_spent_s": 1080}),
        ),
        e("b", "video_played", at(25, "11:21:00"), video(0)),
        e("b", "video_paused", at(25, "11:22:00"), {
            let mut v = video(40);
            v["duration_s"] = json!(40);
            v
        }),
        e(
            "b",
            "question_answered",
            at(24, "15:00:00"),
            json!({"quiz_id": "q1", "item_id": "q1-a", "correct": false}),
        ),
        e(
            "b",
            "question_answered",
            at(24, "15:05:00"),
            json!({"quiz_id": "q1", "item_id": "q1-a", "correct": false}),
        ),
        e(
            "b",
            "quiz_submitted",
            at(24, "15:06:00"),
            json!({"quiz_id": "q1", "score": 0, "passed": false}),
        ),
        e(
            "b",
            "quiz_submitted",
            at(24, "15:10:00"),
            json!({"quiz_id": "q1", "score": 0, "passed": false}),
        ),
        e(
            "b",
            "quiz_submitted",
            at(24, "15:15:00"),
            json!({"quiz_id": "q1", "score": 10, "passed": false}),
        ),
        // c: opens l1 and unenrols the next day.
        e("c", "course_enrolled", at(10, "12:00:00"), json!({})),
        e(
            "c",
            "content_viewed",
            at(10, "12:03:00"),
            json!({"item_id": "l1", "duration_s": 45}),
        ),
        e("c", "course_unenrolled", at(9, "08:00:00"), json!({})),
        // d: both lessons, graded under the pass mark.
        e("d", "course_enrolled", at(5, "14:00:00"), json!({})),
        e(
            "d",
            "lesson_completed",
            at(5, "14:01:00"),
            json!({"lesson_id": "l1", "time_spent_s": 600}),
        ),
        e(
            "d",
            "lesson_completed",
            at(3, "14:00:00"),
            json!({"lesson_id": "l2", "time_spent_s": 700}),
        ),
        e(
            "d",
            "course_graded",
            at(3, "14:05:00"),
            json!({"grade": 0.35, "passed": false}),
        ),
    ]
}

#[tokio::test]
async fn the_dashboards_instructor_panels_show_the_apis_numbers_in_headless_chromium() {
    let mut stack = stack().await;
    stack.publish(&instructor_events()).await;
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(30);
    let course = |route: &str| format!("/v1/courses/k1/{route}");

    // The api's answers, checked against the events by hand; the page must show these.
    let engagement = stack.ok(&course("engagement"), READ_KEY).await;
    // Enrolled now: a, b, d (c unenrolled). Latest event within 7 days: a (2), d (3); within 30: all.
    assert_eq!(
        [
            &engagement["current_enrollees"],
            &engagement["active_7d"],
            &engagement["active_30d"]
        ],
        [&json!(3), &json!(2), &json!(4)],
        "{engagement}"
    );
    let risk = stack.ok(&course("at-risk"), READ_KEY).await;
    // Progress a 100, b 50, d 100: median 100. b: idle 24 days, 50 points behind, 3 failed quizzes;
    // d: grade 0.35.
    assert_eq!(risk["total"], 2, "{risk}");
    assert_eq!(risk["median_progress_pct"], 100.0, "{risk}");
    let flagged: Vec<(&str, Vec<(&str, f64)>)> = risk["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let reasons = l["reasons"].as_array().unwrap();
            let reasons = reasons
                .iter()
                .map(|r| (r["rule"].as_str().unwrap(), r["value"].as_f64().unwrap()));
            (l["user_id"].as_str().unwrap(), reasons.collect())
        })
        .collect();
    assert_eq!(
        flagged,
        [
            ("b", vec![("inactive", 24.0), ("behind", 50.0), ("failing", 3.0)]),
            ("d", vec![("grade", 0.35)])
        ]
    );
    let drop = stack.ok(&course("drop-off"), READ_KEY).await;
    // l1: a, b, d and c (who opened it); l2: a, d; v1, q1, q1-a: a, b; q1-b: a.
    let reach: Vec<(&str, i64)> = drop["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item_id"].as_str().unwrap(), i["learners"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        reach,
        [("l1", 4), ("l2", 2), ("v1", 2), ("q1", 2), ("q1-a", 2), ("q1-b", 1)]
    );
    let difficulty = stack.ok(&course("items/difficulty"), READ_KEY).await;
    let q1b = &difficulty["items"].as_array().unwrap()[2];
    // a: wrong, then right.
    assert_eq!(
        (
            &q1b["item_id"],
            &q1b["first_attempt_correct_rate"],
            &q1b["last_attempt_correct_rate"]
        ),
        (&json!("q1-b"), &json!(0.0), &json!(1.0)),
        "{difficulty}"
    );
    assert_eq!(q1b["mean_attempts_until_correct"], 2.0);
    let videos = stack.ok(&course("videos"), READ_KEY).await;
    let v1 = &videos["items"][0];
    // a watched 0-60 and 20-100 (all of it, 20-60 twice), b 0-40.
    assert_eq!((&v1["viewers"], &v1["full_views"]), (&json!(2), &json!(1)), "{videos}");
    let segment = |k: usize| {
        (
            v1["segments"][k]["viewers"].as_i64(),
            v1["segments"][k]["rewatched"].as_i64(),
        )
    };
    assert_eq!(
        [segment(0), segment(4), segment(8), segment(12)],
        [
            (Some(2), Some(0)),
            (Some(2), Some(1)),
            (Some(1), Some(1)),
            (Some(1), Some(0))
        ]
    );
    let grades = stack.ok(&course("grades"), READ_KEY).await;
    assert_eq!(
        (&grades["graded"], &grades["passed"], &grades["pass_rate"]),
        (&json!(2), &json!(1), &json!(0.5)),
        "{grades}"
    );
    let time = stack
        .ok(&course(&format!("time-on-task?from={from}&to={today}")), READ_KEY)
        .await;
    // Two sessions each; a 18 + 21 min, b 22 + 15, c 3 + 0, d 1 + 5: 85 min. Reported: the lessons'
    // time spent and the durations of a's video and answer, b's pause and c's reading.
    assert_eq!(
        (
            &time["totals"]["sessions"],
            &time["totals"]["session_s"],
            &time["totals"]["reported_s"]
        ),
        (&json!(8), &json!(5100.0), &json!(4315)),
        "{time}"
    );

    let url = format!("{}/?key={READ_KEY}&from={from}&to={today}&course=k1", stack.base);
    let profile = std::env::temp_dir().join(format!("chromium-{}-instructor", stack.env.id));
    let dom = eventually(
        "the dashboard to render every panel",
        Duration::from_secs(120),
        || async {
            let dom = chromium(&profile, &url, &["--dump-dom"]).await;
            dom.contains(r#"data-ready="true""#).then_some(dom)
        },
    )
    .await;
    let screenshot = test_output_dir().join("dashboard-instructor.png");
    std::fs::remove_file(&screenshot).ok();
    chromium(&profile, &url, &[&format!("--screenshot={}", screenshot.display())]).await;
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot");
    std::fs::remove_dir_all(&profile).ok();
    let shown = &dom[dom.find("<main>").unwrap_or(0)..dom.find("</main>").unwrap_or(dom.len())];
    assert!(!shown.contains(r#"class="error""#), "{shown}");

    let within = |html: &str, start: &str| -> String {
        let at = html.find(start).unwrap_or_else(|| panic!("no {start:?} in:\n{html}"));
        let end = html[at..].find("</tr>").map_or(html.len(), |e| at + e);
        html[at..end].to_owned()
    };
    let engagement_html = panel(&dom, "instructor-panel");
    assert!(
        engagement_html.contains(r#"<option value="k1" selected="">k1</option>"#),
        "{engagement_html}"
    );
    for (kpi, value) in [("current_enrollees", 3), ("active_7d", 2), ("active_30d", 4)] {
        let needle = format!(r#"data-kpi="{kpi}"><b>{value}</b>"#);
        assert!(engagement_html.contains(&needle), "no {needle}:\n{engagement_html}");
    }
    let risk_html = panel(&dom, "at-risk");
    let b = within(risk_html, r#"<tr data-user="b">"#);
    for chip in [
        r#"data-rule="inactive">inactive 24 d (≥ 14)"#,
        r#"data-rule="behind">behind 50 pts (≥ 25)"#,
        r#"data-rule="failing">failed 3 in a row (≥ 3)"#,
        r#"<td class="num">50%</td>"#,
    ] {
        assert!(b.contains(chip), "learner b lacks {chip}:\n{b}");
    }
    let d = within(risk_html, r#"<tr data-user="d">"#);
    assert!(d.contains(r#"data-rule="grade">grade 0.35 (&lt; 0.5)"#), "{d}");
    assert!(
        risk_html.find(r#"data-user="b""#) < risk_html.find(r#"data-user="d""#),
        "most reasons first"
    );
    assert!(!risk_html.contains(r#"data-user="a""#) && !risk_html.contains(r#"data-user="c""#));
    assert!(
        risk_html.contains("2 learner(s) flagged · median progress 100%"),
        "{risk_html}"
    );

    let drop_html = panel(&dom, "drop-off");
    let bars: Vec<(String, String)> = drop_html
        .match_indices(r#"class="reach" data-item=""#)
        .map(|(at, m)| {
            let rest = &drop_html[at + m.len()..];
            let item = &rest[..rest.find('"').unwrap()];
            let learners = rest.split(r#"data-learners=""#).nth(1).unwrap();
            (item.to_owned(), learners[..learners.find('"').unwrap()].to_owned())
        })
        .collect();
    let api_bars: Vec<(String, String)> = reach.iter().map(|(i, n)| ((*i).to_owned(), n.to_string())).collect();
    assert_eq!(bars, api_bars, "one bar per catalog item, in order, with its reach");
    assert!(
        drop_html.contains("4 reached the first item, 1 the last (25%)"),
        "{drop_html}"
    );

    let difficulty_html = panel(&dom, "difficulty");
    let order: Vec<Option<usize>> = ["q1-b", "q1", "q1-a"]
        .iter()
        .map(|i| difficulty_html.find(&format!(r#"<tr data-item="{i}""#)))
        .collect();
    assert!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "one row per item, hardest first (by first-attempt rate, then id): {order:?}\n{difficulty_html}"
    );
    let q1b_row = within(difficulty_html, r#"<tr data-item="q1-b""#);
    assert!(
        q1b_row.contains(r#"<td class="num">1</td><td class="num">2</td><td class="num">0%</td><td class="num">100%</td><td class="num">2.00</td><td class="num">0</td>"#),
        "{q1b_row}"
    );
    let q1_row = within(difficulty_html, r#"<tr data-item="q1""#);
    // a passed at once, b failed three times.
    assert!(
        q1_row.contains(r#"<td class="num">2</td><td class="num">4</td><td class="num">50%</td><td class="num">50%</td><td class="num">1.00</td><td class="num">1</td>"#),
        "{q1_row}"
    );

    let videos_html = panel(&dom, "videos");
    assert!(videos_html.contains(r#"data-video="v1""#), "{videos_html}");
    assert!(
        videos_html.contains("2 viewers") && videos_html.contains("1 full views (50%)"),
        "{videos_html}"
    );
    for (k, segment) in v1["segments"].as_array().unwrap().iter().enumerate() {
        let needle = format!(
            r#"data-index="{k}" data-viewers="{}" data-rewatched="{}""#,
            segment["viewers"], segment["rewatched"]
        );
        assert!(videos_html.contains(&needle), "no {needle}:\n{videos_html}");
    }

    let grades_html = panel(&dom, "grades");
    assert!(
        grades_html.contains("2 graded, 1 passed · pass rate 50%"),
        "{grades_html}"
    );
    for (bucket, learners) in [("30–40%", 1), ("90–100%", 1), ("50–60%", 0)] {
        let needle = format!(r#"<span class="label">{bucket}</span>"#);
        let at = grades_html
            .find(&needle)
            .unwrap_or_else(|| panic!("no {needle}:\n{grades_html}"));
        let row = grades_html[at..]
            .split(r#"<div class="hbar"#)
            .next()
            .unwrap_or_default();
        assert!(
            row.contains(&format!(r#"<span class="num">{learners}</span>"#)),
            "{row}"
        );
    }
    let time_html = panel(&dom, "time-panel");
    assert!(
        time_html.contains("1.4 h in 8 sessions · 1.2 h reported by the events"),
        "{time_html}"
    );

    // A course nobody touched: every instructor panel says so, none fails.
    let url = format!("{}/?key={READ_KEY}&from={from}&to={today}&course=nothing", stack.base);
    let profile = std::env::temp_dir().join(format!("chromium-{}-instructor-empty", stack.env.id));
    let dom = chromium(&profile, &url, &["--dump-dom"]).await;
    std::fs::remove_dir_all(&profile).ok();
    assert!(dom.contains(r#"data-ready="true""#), "{dom}");
    for (id, empty) in [
        ("at-risk", "No current enrollee is at risk"),
        ("drop-off", "The catalog lists no items"),
        ("difficulty", "No question or quiz attempts"),
        ("videos", "No video watched"),
        ("grades", "No grades in this course yet"),
        ("time-panel", "No time on task between"),
    ] {
        let html = panel(&dom, id);
        assert!(html.contains(empty), "panel {id} lacks {empty:?}:\n{html}");
    }
    assert!(panel(&dom, "instructor-panel").contains(r#"data-kpi="current_enrollees"><b>0</b>"#));
}

#[tokio::test]
async fn connections_streams_and_dates_are_bounded() {
    let mut stack = stack().await;
    stack.api_config.header_read_timeout = Duration::from_secs(1);
    stack.api_config.max_streams = 3;
    stack.api_config.max_streams_per_key = 2;
    stack.restart_api().await;
    let addr = stack.base.trim_start_matches("http://").to_owned();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // Closed, with a 408 or without an answer, once the header-read timeout has passed: a
    // request whose headers never end, and a keep-alive connection left idle after a request.
    let closed = async |tcp: &mut tokio::net::TcpStream, what: &str| {
        let mut buffer = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => assert!(
                    std::str::from_utf8(&buffer[..n]).is_ok_and(|t| t.starts_with("HTTP/1.1 408")),
                    "{what}: unexpected bytes {:?}",
                    String::from_utf8_lossy(&buffer[..n])
                ),
                Err(_) => panic!("{what}: still open 10 s after a 1 s header-read timeout"),
            }
        }
    };
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/courses HTTP/1.1\r\nHost: api\r\n")
        .await
        .unwrap();
    closed(&mut slow, "unfinished headers").await;
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz-not-here HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 4096];
    let n = idle.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 "), "an answer first");
    closed(&mut idle, "idle keep-alive").await;

    // Live streams: 2 per credential, 3 in all; read keys never in a URL.
    let open = async |user: &str| {
        let student = token(api::Role::Student, user, "p1", &[]);
        stack
            .http
            .get(format!("{}/v1/users/{user}/progress/stream", stack.base))
            .bearer_auth(student)
            .send()
            .await
            .unwrap()
    };
    let u1a = open("u1").await;
    let u1b = open("u1").await;
    assert_eq!((u1a.status(), u1b.status()), (StatusCode::OK, StatusCode::OK));
    let third = open("u1").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.json::<Value>().await.unwrap()["error"], "too_many");
    let u2 = open("u2").await;
    assert_eq!(u2.status(), StatusCode::OK);
    assert_eq!(open("u3").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let in_url = stack
        .http
        .get(format!("{}/v1/users/u1/progress/stream?key={READ_KEY}", stack.base))
        .send()
        .await
        .unwrap();
    assert_eq!(in_url.status(), StatusCode::FORBIDDEN);
    drop((u1a, u1b, u2));

    // Dates from 1970 to 9999, with a 422 naming the parameter.
    for (from, to, field) in [
        ("1969-12-31", "2026-03-03", "from"),
        ("-9999-01-01", "2026-03-03", "from"),
        ("2026-03-01", "+262142-12-31", "to"),
        ("2026-03-01", "10000-01-01", "to"),
    ] {
        for path in [
            format!("/v1/metrics/active-users?from={from}&to={to}"),
            format!("/v1/retention?from={from}&to={to}"),
        ] {
            let (status, body) = stack.get(&path, READ_KEY).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
            assert!(
                body["detail"].as_str().unwrap().contains(&format!("`{field}`")),
                "{path}: {body}"
            );
        }
        let funnel = json!({"steps": ["a", "b"], "from": from, "to": to, "window": "7d"});
        let (status, body) = stack.post("/v1/funnels", READ_KEY, &funnel).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "funnel {from}..{to}: {body}");
    }
}
