//! Real SDKs, unmodified and with their default settings (only the host and write key set), send
//! every call type they offer to a real ingest, and each call arrives in the stream with the right
//! fields: segment-analytics-python and rudder-sdk-python (in the venv ./scripts/test makes),
//! @segment/analytics-node and @rudderstack/rudder-sdk-node (gzipped, and labelled
//! `application/x-www-form-urlencoded`) from the cache's node_modules. clients.rs already covers
//! Segment Python's track, page and identify; here it sends the rest.

mod support;

use std::time::Duration;

use common::event::Event;
use support::{cache_dir, spawn_app, TestApp, KEY, PROJECT};
use tokio::process::Command;

/// Runs an SDK's script with the write key and ingest's URL as its last two arguments, and asserts
/// it exits 0 (every script exits 1 when its SDK reports an error) within two minutes.
async fn run(sdk: &str, mut command: Command, app: &TestApp) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command
            .args([KEY, &format!("http://{}", app.addr)])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{sdk} did not finish in time"))
    .unwrap_or_else(|e| panic!("{sdk} did not start: {e}"));
    assert!(
        output.status.success(),
        "{sdk} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a Python SDK: module-level settings (write key and `host_setting` from argv), an
/// `on_error` that fails the run, `calls` on `analytics`, then a flush.
async fn run_python(sdk: &str, module: &str, host_setting: &str, calls: &str, app: &TestApp) {
    let python = cache_dir().join("segment-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: ./scripts/test installs {sdk} into it",
        python.display()
    );
    let script = format!(
        r#"
import sys
import {module} as analytics

errors = []
analytics.write_key = sys.argv[1]
analytics.{host_setting} = sys.argv[2]
analytics.on_error = lambda error, batch: errors.append(error)
{calls}
analytics.flush()
analytics.shutdown()
if errors:
    print(errors, file=sys.stderr)
    sys.exit(1)
"#
    );
    let mut command = Command::new(python);
    command.args(["-c", &script]);
    run(sdk, command, app).await;
}

/// Runs a Node SDK `package`: `setup` makes `client` from `writeKey` and `host`, every call type is
/// sent with a callback that fails the run on error, and `flush` sends what is queued.
async fn run_node(package: &str, setup: &str, user: &str, flush: &str, app: &TestApp) {
    let modules = cache_dir().join("sdk-node/node_modules");
    assert!(
        modules.join(package).exists(),
        "{package} is missing from {}: ./scripts/test installs it",
        modules.display()
    );
    let script = format!(
        r#"const [writeKey, host] = process.argv.slice(2);
{setup}
const sent = (call, message) =>
  new Promise((resolve, reject) => client[call](message, (err) => (err ? reject(err) : resolve())));
const userId = "{user}";
Promise.all([
  sent("track", {{ userId, event: "Course Viewed", properties: {{ course_id: "c-42" }} }}),
  sent("page", {{ userId, category: "Docs", name: "Getting Started", properties: {{ path: "/docs/start" }} }}),
  sent("screen", {{ userId, name: "Lesson Player", properties: {{ lesson_id: "l-1" }} }}),
  sent("identify", {{ userId, traits: {{ plan: "pro", email: "ada@example.com" }} }}),
  sent("group", {{ userId, groupId: "class-9", traits: {{ name: "Class 9", size: 30 }} }}),
  sent("alias", {{ userId, previousId: "anon-" + userId }}),
  {flush},
]).catch((err) => {{
  console.error(err);
  process.exit(1);
}});
"#
    );
    let file = std::env::temp_dir().join(format!("ingest-sdk-{}.js", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, script).unwrap();
    let mut command = Command::new("node");
    command.arg(&file).env("NODE_PATH", &modules);
    run(package, command, app).await;
    std::fs::remove_file(&file).ok();
}

/// Every call type the scripts send, in order, as stored.
const ALL_CALLS: [&str; 6] = [
    "course_viewed",
    "page_view",
    "screen_view",
    "identify",
    "group",
    "alias",
];

/// Asserts `events` are the calls `names`, from `user` through the SDK named `library`, each with
/// the fields the scripts gave it (an alias links `anon-{user}`).
fn assert_arrived(events: &[Event], names: &[&str], user: &str, library: &str) {
    let got: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(got, names);
    for event in events {
        assert_eq!(event.project, PROJECT);
        assert!(!event.message_id_assigned, "the SDK sends its own messageId: {event:?}");
        assert!(event.timestamp.is_some() && event.sent_at.is_some(), "{event:?}");
        assert_eq!(event.user_id.as_deref(), Some(user), "{event:?}");
        assert_eq!(event.context["library"]["name"], library, "{event:?}");
        let (properties, traits) = (&event.properties, &event.traits);
        match event.event.as_str() {
            "course_viewed" => assert_eq!(properties["course_id"], "c-42", "{event:?}"),
            "page_view" => {
                assert_eq!(properties["page"], "/docs/start", "{event:?}");
                assert_eq!(properties["name"], "Getting Started", "{event:?}");
                assert_eq!(properties["category"], "Docs", "{event:?}");
            }
            "screen_view" => assert_eq!(properties["name"], "Lesson Player", "{event:?}"),
            "identify" => {
                assert_eq!(traits["plan"], "pro", "{event:?}");
                assert_eq!(traits["email"], "ada@example.com", "{event:?}");
            }
            "group" => {
                assert_eq!(event.group_id.as_deref(), Some("class-9"), "{event:?}");
                assert_eq!(traits["name"], "Class 9", "{event:?}");
                assert_eq!(traits["size"], 30, "{event:?}");
            }
            "alias" => assert_eq!(event.previous_id, Some(format!("anon-{user}")), "{event:?}"),
            other => panic!("unexpected event {other}"),
        }
    }
}

#[tokio::test]
async fn segment_python_screen_group_and_alias_arrive_with_the_right_fields() {
    let app = spawn_app().await;
    let calls = r#"
user = "segment-python-1"
analytics.screen(user, None, "Lesson Player", {"lesson_id": "l-1"})
analytics.group(user, "class-9", {"name": "Class 9", "size": 30})
analytics.alias("anon-" + user, user)
"#;
    run_python("segment-analytics-python", "segment.analytics", "host", calls, &app).await;
    let names = ["screen_view", "group", "alias"];
    assert_arrived(&app.stored(3).await, &names, "segment-python-1", "analytics-python");
}

#[tokio::test]
async fn rudder_python_sends_every_call_type_and_each_arrives_with_the_right_fields() {
    let app = spawn_app().await;
    // It sends identify's traits only under `context.traits`, and gzips every body.
    let calls = r#"
user = "rudder-python-1"
analytics.track(user, "Course Viewed", {"course_id": "c-42"})
analytics.page(user, "Docs", "Getting Started", {"path": "/docs/start"})
analytics.screen(user, None, "Lesson Player", {"lesson_id": "l-1"})
analytics.identify(user, {"plan": "pro", "email": "ada@example.com"})
analytics.group(user, "class-9", {"name": "Class 9", "size": 30})
analytics.alias("anon-" + user, user)
"#;
    run_python(
        "rudder-sdk-python",
        "rudderstack.analytics",
        "dataPlaneUrl",
        calls,
        &app,
    )
    .await;
    assert_arrived(&app.stored(6).await, &ALL_CALLS, "rudder-python-1", "analytics-python");
}

#[tokio::test]
async fn segment_node_sends_every_call_type_and_each_arrives_with_the_right_fields() {
    let app = spawn_app().await;
    let setup = r#"const { Analytics } = require("@segment/analytics-node");
const client = new Analytics({ writeKey, host });"#;
    run_node(
        "@segment/analytics-node",
        setup,
        "segment-node-1",
        "client.closeAndFlush()",
        &app,
    )
    .await;
    assert_arrived(
        &app.stored(6).await,
        &ALL_CALLS,
        "segment-node-1",
        "@segment/analytics-node",
    );
}

#[tokio::test]
async fn rudder_node_sends_every_call_type_and_each_arrives_with_the_right_fields() {
    let app = spawn_app().await;
    // Its defaults gzip the JSON and label it `application/x-www-form-urlencoded`; it sends its
    // first event alone, the rest on flush, with `originalTimestamp` rather than `timestamp`.
    let setup = r#"const Analytics = require("@rudderstack/rudder-sdk-node");
const client = new Analytics(writeKey, { dataPlaneUrl: host });"#;
    run_node(
        "@rudderstack/rudder-sdk-node",
        setup,
        "rudder-node-1",
        "client.flush()",
        &app,
    )
    .await;
    assert_arrived(&app.stored(6).await, &ALL_CALLS, "rudder-node-1", "analytics-node");
}
