//! xAPI statements over real HTTP against the real NATS and PostgreSQL (docs/contract.md §4
//! "xAPI statements"): statements shaped like Moodle logstore_xapi's and Open edX
//! event-routing-backends' become the learning events of §5, batches are all or nothing,
//! statement ids are checked against their content, and the protocol's headers and credentials.

mod support;

use std::path::Path;

use base64::Engine as _;
use common::event::Event;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{spawn_app, spawn_app_with, stream_messages, TestApp, KEY};

const MOODLE_COURSE: &str = "https://moodle.campus.example/course/view.php?id=17";
const MOODLE_SECTION: &str = "https://moodle.campus.example/course/section.php?id=88";
const MOODLE_QUIZ: &str = "https://moodle.campus.example/mod/quiz/view.php?id=412";
const EDX_COURSE: &str = "https://courses.openlearn.example/course/course-v1:OpenLearnX+BIO101+2026_T3";
const EDX_LEARNER: &str = "9c1e4f7a-3b2d-4e8f-a6c5-1d0b9e8f7a62";
const EDX_VIDEO: &str = "https://courses.openlearn.example/xblock/block-v1:OpenLearnX+BIO101+2026_T3+type@video+block@4d2f9a81c3e74b0f9a6d5e2c1b3a7f08";
const EDX_PROBLEM: &str = "https://courses.openlearn.example/xblock/block-v1:OpenLearnX+BIO101+2026_T3+type@problem+block@b81e2c4d9f0a4c3e8d7b6a5f4e3d2c1b";

fn fixture(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/xapi")
        .join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

/// A request as an LRS client sends it: version header, JSON, the given Authorization.
fn request(app: &TestApp, method: Method, path: &str, authorization: Option<&str>) -> reqwest::RequestBuilder {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("X-Experience-API-Version", "1.0.3");
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    request
}

async fn post(app: &TestApp, body: &Value) -> reqwest::Response {
    request(app, Method::POST, "/xAPI/statements", Some(&basic(KEY, "")))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn put(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    request(
        app,
        Method::PUT,
        &format!("/xAPI/statements?statementId={id}"),
        Some(&basic(KEY, "")),
    )
    .json(body)
    .send()
    .await
    .unwrap()
}

/// An app whose database has the migrations applied (ingest records statement ids there).
async fn migrated_app() -> (TestApp, sqlx::PgPool) {
    let app = spawn_app().await;
    let pool = app.migrate().await;
    (app, pool)
}

/// Property values compared as the workers read them: numbers as numbers, whatever their spelling.
fn same(actual: Option<&Value>, expected: &Value) -> bool {
    match (actual, expected) {
        (Some(Value::Number(a)), Value::Number(e)) => a.as_f64() == e.as_f64(),
        (Some(actual), expected) => actual == expected,
        (None, Value::Null) => true,
        (None, _) => false,
    }
}

/// Asserts one event: its name, learner and course, and the given properties (null: absent).
fn expect(event: &Event, name: &str, user: &str, course: &str, properties: &[(&str, Value)]) {
    let context = format!("{} {:?}", event.event, event.properties);
    assert_eq!(event.event, name, "{context}");
    assert_eq!(event.user_id.as_deref(), Some(user), "{context}");
    assert!(
        same(event.property("course_id"), &json!(course)),
        "course_id of {context}"
    );
    for (key, value) in properties {
        assert!(same(event.property(key), value), "{key} of {context}: expected {value}");
    }
}

async fn statement_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from xapi_statements")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn moodle_statements_become_the_learning_events_they_describe() {
    let (app, _pool) = migrated_app().await;
    let files = [
        "user_enrolment_created",
        "course_viewed",
        "course_module_viewed",
        "course_module_completion_updated",
        "attempt_submitted",
        "user_enrolment_deleted",
        "course_completed",
    ];
    // logstore_xapi sends its batch of statements, without ids, in one POST.
    let statements: Vec<Value> = files
        .iter()
        .flat_map(|file| fixture(&format!("moodle/{file}.json")).as_array().unwrap().clone())
        .collect();
    let response = post(&app, &Value::Array(statements.clone())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    let ids: Vec<String> = response.json().await.unwrap();
    assert_eq!(ids.len(), 9);

    let events = app.stored(9).await;
    for (event, id) in events.iter().zip(&ids) {
        assert_eq!(&event.message_id, id, "the event's messageId is the statement id");
        assert_eq!(
            uuid::Uuid::parse_str(id).unwrap().get_version_num(),
            8,
            "derived from the content"
        );
        assert_eq!(event.project, support::PROJECT);
    }
    let page = "https://moodle.campus.example/mod/page/view.php?id=410";
    let resource = "https://moodle.campus.example/mod/resource/view.php?id=409";
    expect(&events[0], "course_enrolled", "305", MOODLE_COURSE, &[]);
    expect(
        &events[1],
        "course_viewed",
        "mailto:amara.okafor@campus.example",
        MOODLE_COURSE,
        &[],
    );
    expect(
        &events[2],
        "content_viewed",
        "305",
        MOODLE_COURSE,
        &[("item_id", json!(resource))],
    );
    expect(
        &events[3],
        "lesson_completed",
        "305",
        MOODLE_COURSE,
        &[
            ("lesson_id", json!(page)),
            ("module_id", json!(MOODLE_SECTION)),
            ("time_spent_s", Value::Null),
        ],
    );
    expect(
        &events[4],
        "quiz_submitted",
        "305",
        MOODLE_COURSE,
        &[
            ("quiz_id", json!(MOODLE_QUIZ)),
            ("score", json!(7.5)),
            ("max_score", json!(10)),
            ("passed", json!(true)),
            ("duration_s", json!(750)),
        ],
    );
    let question = |id: u32| format!("https://moodle.campus.example/question/question.php?cmid=412&id={id}");
    expect(
        &events[5],
        "question_answered",
        "305",
        MOODLE_COURSE,
        &[
            ("item_id", json!(question(5531))),
            ("quiz_id", json!(MOODLE_QUIZ)),
            ("correct", json!(true)),
        ],
    );
    expect(
        &events[6],
        "question_answered",
        "305",
        MOODLE_COURSE,
        &[("item_id", json!(question(5532))), ("correct", json!(false))],
    );
    expect(&events[7], "course_unenrolled", "306", MOODLE_COURSE, &[]);
    expect(&events[8], "course_completed", "305", MOODLE_COURSE, &[]);

    // The event time is the statement's; the whole statement, its verb and object are kept.
    assert_eq!(events[0].ts.to_rfc3339(), "2026-11-02T08:14:03+00:00");
    assert_eq!(
        events[0].property("verb"),
        Some(&json!("https://xapi.edlm/profiles/edlm-lms/concepts/verbs/enrolled"))
    );
    assert_eq!(events[0].property("object_id"), Some(&json!(MOODLE_COURSE)));
    for (event, statement) in events.iter().zip(&statements) {
        let kept: Value = serde_json::from_str(event.property("xapi_statement").unwrap().as_str().unwrap()).unwrap();
        assert_eq!(&kept, statement);
    }
}

#[tokio::test]
async fn open_edx_statements_become_the_learning_events_they_describe() {
    let (app, _pool) = migrated_app().await;
    let name = |file: &str| format!("openedx/{file}.json");
    // event-routing-backends PUTs one statement under its id, or POSTs a batch.
    let one_by_one = [
        "edx.course.enrollment.activated",
        "edx.ui.lms.outline.selected",
        "edx.completion.block_completion.changed",
        "problem_check",
        "edx.grades.problem.submitted",
    ];
    let batched = [
        "edx.grades.course.grade_calculated",
        "edx.course.grade.passed.first_time",
        "load_video",
        "play_video",
        "pause_video",
        "seek_video",
        "stop_video",
        "complete_video",
        "edx.course.grade.now_failed",
        "edx.course.enrollment.deactivated",
    ];
    let mut ids = Vec::new();
    for file in one_by_one {
        let statement = fixture(&name(file));
        let id = statement["id"].as_str().unwrap().to_owned();
        let response = put(&app, &id, &statement).await;
        assert_eq!(response.status(), 204, "{file}: {:?}", response.text().await);
        ids.push(id);
    }
    let batch: Vec<Value> = batched.iter().map(|file| fixture(&name(file))).collect();
    let response = post(&app, &Value::Array(batch.clone())).await;
    assert_eq!(response.status(), 200);
    let answered: Vec<String> = response.json().await.unwrap();
    let sent: Vec<String> = batch.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(answered, sent, "the statements' own ids, in order");
    ids.extend(sent);

    let events = app.stored(ids.len()).await;
    let message_ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(message_ids, ids);
    let (u, c) = (EDX_LEARNER, EDX_COURSE);
    expect(&events[0], "course_enrolled", u, c, &[]);
    assert_eq!(
        events[0].session_id.as_deref(),
        Some("7f3a9c2e51d84b6fa0c1e2d3f4a5b6c7")
    );
    let module = "https://courses.openlearn.example/courses/course-v1:OpenLearnX+BIO101+2026_T3/jump_to/block-v1:OpenLearnX+BIO101+2026_T3+type@sequential+block@5e6f7a8b9c0d4e1f2a3b4c5d6e7f8a9b";
    expect(&events[1], "content_viewed", u, c, &[("item_id", json!(module))]);
    let html = "https://courses.openlearn.example/xblock/block-v1:OpenLearnX+BIO101+2026_T3+type@html+block@c3d4e5f6a7b84c9d0e1f2a3b4c5d6e7f";
    expect(
        &events[2],
        "content_progressed",
        u,
        c,
        &[
            ("item_id", json!(html)),
            ("progress", json!(100)),
            ("completed", json!(true)),
        ],
    );
    expect(
        &events[3],
        "question_answered",
        u,
        c,
        &[
            ("item_id", json!(EDX_PROBLEM)),
            ("correct", json!(false)),
            ("score", json!(0)),
            ("quiz_id", Value::Null),
        ],
    );
    expect(
        &events[4],
        "question_answered",
        u,
        c,
        &[
            ("item_id", json!(EDX_PROBLEM)),
            ("correct", json!(true)),
            ("score", json!(1)),
        ],
    );
    expect(
        &events[5],
        "course_graded",
        u,
        c,
        &[
            ("grade", json!(0.82)),
            ("score", json!(0.82)),
            ("max_score", json!(1)),
            ("passed", Value::Null),
        ],
    );
    expect(
        &events[6],
        "course_graded",
        u,
        c,
        &[("passed", json!(true)), ("grade", Value::Null)],
    );
    expect(&events[7], "content_viewed", u, c, &[("item_id", json!(EDX_VIDEO))]);
    let video = |extra: &[(&'static str, Value)]| {
        let mut properties = vec![("video_id", json!(EDX_VIDEO)), ("length_s", json!(312))];
        properties.extend(extra.iter().cloned());
        properties
    };
    expect(&events[8], "video_played", u, c, &video(&[("position_s", json!(0))]));
    expect(
        &events[9],
        "video_paused",
        u,
        c,
        &video(&[("position_s", json!(120.2))]),
    );
    expect(
        &events[10],
        "video_seeked",
        u,
        c,
        &video(&[
            ("from_s", json!(120.2)),
            ("to_s", json!(60)),
            ("position_s", Value::Null),
        ]),
    );
    // stop_video (terminated) ends the watched interval as a pause does.
    expect(
        &events[11],
        "video_paused",
        u,
        c,
        &video(&[("position_s", json!(310.5))]),
    );
    expect(
        &events[12],
        "video_completed",
        u,
        c,
        &video(&[("position_s", json!(312)), ("duration_s", json!(312))]),
    );
    expect(&events[13], "course_graded", u, c, &[("passed", json!(false))]);
    expect(&events[14], "course_unenrolled", u, c, &[]);
    assert_eq!(
        events[14].session_id.as_deref(),
        Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    );
}

#[tokio::test]
async fn a_batch_with_one_invalid_statement_stores_nothing_and_names_it() {
    let (app, pool) = migrated_app().await;
    let good = fixture("openedx/play_video.json");
    let mut bad = fixture("openedx/pause_video.json");
    bad["actor"] = json!({"mbox": "learner@openlearn.example"});
    let mut worse = fixture("openedx/seek_video.json");
    worse["result"]["score"] = json!({"scaled": 1.5});
    let response = post(&app, &json!([good, bad, worse])).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_statement");
    assert_eq!(body["index"], 1);
    assert_eq!(body["field"], "actor.mbox");
    assert_eq!(
        body["message"],
        "statement 1: `actor.mbox` must be a mailto: IRI (mailto:name@example.org)"
    );

    // A statement whose event breaks ingest's own rules (§4 limits) fails the batch the same way.
    let mut long = fixture("openedx/pause_video.json");
    long["object"]["id"] = json!(format!("https://courses.openlearn.example/xblock/{}", "v".repeat(300)));
    let response = post(&app, &json!([good, long])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["index"].clone(), body["field"].clone()),
        (json!(1), json!("object.id"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`properties.video_id` is longer than 256 bytes"),
        "{body}"
    );

    assert_eq!(stream_messages(&app.env).await, 0, "nothing was published");
    assert_eq!(statement_rows(&pool).await, 0, "no statement id was recorded");
    assert_eq!(post(&app, &json!([good])).await.status(), 200);
    assert_eq!(app.stored(1).await[0].event, "video_played");
}

#[tokio::test]
async fn a_changed_statement_under_a_used_id_is_409_and_an_identical_resend_is_200() {
    let (app, pool) = migrated_app().await;
    let statement = fixture("openedx/edx.course.grade.passed.first_time.json");
    let id = statement["id"].as_str().unwrap().to_owned();
    assert_eq!(post(&app, &json!([statement])).await.status(), 200);
    // A resend (a retry after a lost answer): accepted, published again with the same messageId,
    // which the workers store and count once. `version` and key order are not content.
    let mut resent = statement.clone();
    resent.as_object_mut().unwrap().remove("version");
    let response = post(&app, &resent).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Vec<String>>().await.unwrap(), vec![id.clone()]);
    assert_eq!(put(&app, &id, &statement).await.status(), 204);
    let events = app.stored(3).await;
    assert!(events.iter().all(|e| e.message_id == id), "{events:?}");
    let published = stream_messages(&app.env).await;

    let mut changed = statement.clone();
    changed["verb"] = json!({"id": "http://adlnet.gov/expapi/verbs/failed", "display": {"en": "failed"}});
    let new = fixture("openedx/edx.course.grade.now_failed.json");
    for response in [post(&app, &json!([new, changed])).await, put(&app, &id, &changed).await] {
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "conflict");
        assert!(body["message"].as_str().unwrap().contains(&id), "{body}");
    }
    assert_eq!(stream_messages(&app.env).await, published, "nothing published on 409");
    assert_eq!(
        statement_rows(&pool).await,
        1,
        "the new statement of the refused batch was not recorded"
    );
    // So it may still be sent with other content.
    let mut new_changed = new.clone();
    new_changed["timestamp"] = json!("2026-11-19T07:45:20.003118+00:00");
    assert_eq!(post(&app, &json!([new_changed])).await.status(), 200);
}

#[tokio::test]
async fn statements_without_ids_get_ids_from_their_content_stable_across_resends() {
    let (app, _pool) = migrated_app().await;
    let statements = fixture("moodle/attempt_submitted.json");
    let first: Vec<String> = post(&app, &statements).await.json().await.unwrap();
    let again: Vec<String> = post(&app, &statements).await.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.len(), 3);
    assert!(first[0] != first[1] && first[1] != first[2], "{first:?}");
    let mut later = statements[0].clone();
    later["timestamp"] = json!("2026-11-04T10:30:00.000Z");
    let other: Vec<String> = post(&app, &json!([later])).await.json().await.unwrap();
    assert_ne!(other[0], first[0], "other content, another statement");
    let events = app.stored(7).await;
    assert_eq!(events[0].message_id, events[3].message_id);
    assert_eq!(events[6].message_id, other[0]);
}

#[tokio::test]
async fn put_stores_one_statement_under_its_statement_id() {
    let (app, _pool) = migrated_app().await;
    let mut statement = fixture("moodle/course_completed.json")[0].clone();
    let id = "3d1c5a8e-7b2f-4c9d-8e1a-6f5b4c3d2e10";
    let response = put(&app, id, &statement).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    assert_eq!(app.stored(1).await[0].message_id, id);

    statement["id"] = json!("0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d");
    let mismatch = put(&app, id, &statement).await;
    assert_eq!(mismatch.status(), 400);
    let body: Value = mismatch.json().await.unwrap();
    assert_eq!(body["field"], "id");
    for path in ["/xAPI/statements", "/xAPI/statements?statementId=nope"] {
        let response = request(&app, Method::PUT, path, Some(&basic(KEY, "")))
            .json(&statement)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
    }
    let array = put(&app, id, &json!([statement])).await;
    assert_eq!(array.status(), 400);
    assert_eq!(stream_messages(&app.env).await, 1);
}

#[tokio::test]
async fn the_version_header_is_required_and_every_answer_carries_it() {
    let (app, _pool) = migrated_app().await;
    let statements = fixture("moodle/course_viewed.json");
    for version in [None, Some("2.0.0"), Some("0.95"), Some("1.0.x")] {
        let mut request = app
            .http
            .post(app.url("/xAPI/statements"))
            .header("Authorization", basic(KEY, ""))
            .json(&statements);
        if let Some(version) = version {
            request = request.header("X-Experience-API-Version", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{version:?}");
        assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("X-Experience-API-Version"),
            "{body}"
        );
    }
    let about = app.http.get(app.url("/xAPI/about")).send().await.unwrap();
    assert_eq!(about.status(), 200);
    assert_eq!(about.headers()["x-experience-api-version"], "1.0.3");
    assert_eq!(about.json::<Value>().await.unwrap(), json!({"version": ["1.0.3"]}));

    // The `xAPI` segment in any case, a trailing slash, the 1.0.0 some clients send.
    let response = app
        .http
        .post(app.url("/xapi/statements/"))
        .header("Authorization", basic(KEY, ""))
        .header("X-Experience-API-Version", "1.0.0")
        .json(&statements)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (method, path, allowed) in [
        (Method::GET, "/xAPI/statements", "POST, PUT"),
        (Method::DELETE, "/xAPI/statements", "POST, PUT"),
        (Method::POST, "/xAPI/about", "GET"),
    ] {
        let response = request(&app, method.clone(), path, Some(&basic(KEY, "")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
        assert!(body["message"].as_str().unwrap().ends_with(allowed), "{body}");
    }
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/xAPI/statements"))
        .header("Origin", "https://lms.campus.example")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, x-experience-api-version",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-methods"],
        "POST, PUT, OPTIONS"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "authorization, content-type, x-experience-api-version"
    );
    // Only what is not a statement route stays 404.
    assert_eq!(
        request(&app, Method::POST, "/xAPI/activities", None)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn write_keys_are_accepted_as_basic_user_name_or_password_or_bearer_and_nothing_else() {
    let (app, pool) = migrated_app().await;
    let statements = fixture("moodle/course_module_viewed.json");
    let (_, stored) = common::keys::create(&pool, "campus", common::keys::Scope::Write)
        .await
        .unwrap();
    let (_, read) = common::keys::create(&pool, "campus", common::keys::Scope::Read)
        .await
        .unwrap();
    let accepted = [
        basic(KEY, ""),
        // Moodle asks for an "LRS username" and "LRS password", event-routing-backends for a
        // username and password or a key and secret: the key may be either part.
        basic("moodle", KEY),
        basic(&stored, "secret"),
        basic("lrs", &stored),
        format!("Bearer {KEY}"),
        format!("Bearer {stored}"),
    ];
    for authorization in &accepted {
        let response = request(&app, Method::POST, "/xAPI/statements", Some(authorization))
            .json(&statements)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{authorization}");
    }
    let events = app.stored(accepted.len()).await;
    let projects: Vec<&str> = events.iter().map(|e| e.project.as_str()).collect();
    assert_eq!(projects, ["proj-a", "proj-a", "campus", "campus", "proj-a", "campus"]);

    for authorization in [
        None,
        Some(basic("moodle", "wrong")),
        Some(basic(&read, "")),
        Some(format!("Bearer {read}")),
        Some("Digest username=x".to_owned()),
    ] {
        let response = request(&app, Method::POST, "/xAPI/statements", authorization.as_deref())
            .json(&statements)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    }
    // The key travels in the Authorization header only: not as ?writeKey=.
    let response = app
        .http
        .post(app.url(&format!("/xAPI/statements?writeKey={KEY}")))
        .header("X-Experience-API-Version", "1.0.3")
        .json(&statements)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(stream_messages(&app.env).await as usize, accepted.len());
}

#[tokio::test]
async fn the_projects_origin_allow_list_applies_to_statements_too() {
    let app = spawn_app_with(|config| config.allowed_origins = vec!["https://lms.campus.example".into()]).await;
    app.migrate().await;
    let statements = fixture("moodle/course_viewed.json");
    let send = |origin: &'static str| {
        request(&app, Method::POST, "/xAPI/statements", Some(&basic(KEY, "")))
            .header("Origin", origin)
            .json(&statements)
            .send()
    };
    let refused = send("https://elsewhere.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let allowed = send("https://lms.campus.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://lms.campus.example"
    );
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "Retry-After, X-Experience-API-Version"
    );
}

#[tokio::test]
async fn statement_ids_that_cannot_be_checked_are_503_and_nothing_is_published() {
    // The static key needs no database; the statement ids do.
    let app = spawn_app_with(|config| config.postgres.url = "postgres://postgres@127.0.0.1:1/nowhere".into()).await;
    let response = post(&app, &fixture("moodle/course_viewed.json")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    assert_eq!(stream_messages(&app.env).await, 0);
}
