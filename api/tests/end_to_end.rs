//! The whole pipeline as users run it: the three real binaries as processes, against the real NATS,
//! MongoDB and PostgreSQL servers, isolated in this test's own stream and databases. Events for
//! several users and days go in through ingest; the exact DAU series comes out of the api.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};
use test_support::{eventually, free_addr, workspace_binary as binary, Service, TestEnv};

const WRITE_KEY: &str = "wk_end_to_end";
const READ_KEY: &str = "rk_end_to_end";
const PROJECT: &str = "e2e";

fn track(user: &str, id: &str, event: &str, timestamp: &str) -> Value {
    json!({"type": "track", "event": event, "userId": user, "messageId": id, "timestamp": timestamp,
           "properties": {"course_id": "c1"}})
}

#[tokio::test]
async fn events_posted_to_ingest_come_out_of_the_api_as_the_exact_dau_series() {
    let env = TestEnv::new().await;
    let (ingest_addr, ingest_admin, workers_admin, api_addr, api_admin) =
        (free_addr(), free_addr(), free_addr(), free_addr(), free_addr());
    let mut shared = env.service_env();
    shared.extend([
        ("WORKERS_MONGO_WRITE_CONCERN", "1".to_owned()),
        ("WORKERS_MONGO_JOURNAL", "false".to_owned()),
    ]);
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        shared.iter().cloned().chain(extra.iter().cloned()).collect()
    };

    let settings: [(&str, &[&str]); 3] = [
        (
            "ingest",
            &[
                "INGEST_ADDR",
                "INGEST_ADMIN_ADDR",
                "NATS_URL",
                "INGEST_WRITE_KEY",
                "INGEST_MAX_BODY_BYTES",
            ],
        ),
        (
            "workers",
            &[
                "WORKERS_ADMIN_ADDR",
                "NATS_URL",
                "DATABASE_URL",
                "MONGO_URI",
                "MONGO_DB",
                "WORKERS_BATCH_EVENTS",
            ],
        ),
        ("api", &["API_ADDR", "API_ADMIN_ADDR", "DATABASE_URL", "API_READ_KEY"]),
    ];
    for (name, expected) in settings {
        let output = Command::new(binary(name)).arg("--help").output().expect("--help runs");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name} --help failed");
        for setting in expected {
            assert!(help.contains(setting), "{name} --help does not list {setting}:\n{help}");
        }
    }

    let workers = Service::start("workers", &with(&[("WORKERS_ADMIN_ADDR", workers_admin.to_string())]));
    let ingest = Service::start(
        "ingest",
        &with(&[
            ("INGEST_ADDR", ingest_addr.to_string()),
            ("INGEST_ADMIN_ADDR", ingest_admin.to_string()),
            ("INGEST_WRITE_KEY", WRITE_KEY.to_owned()),
            ("INGEST_PROJECT", PROJECT.to_owned()),
        ]),
    );
    let api = Service::start(
        "api",
        &with(&[
            ("API_ADDR", api_addr.to_string()),
            ("API_ADMIN_ADDR", api_admin.to_string()),
            ("API_READ_KEY", READ_KEY.to_owned()),
            ("API_PROJECT", PROJECT.to_owned()),
        ]),
    );
    let http = reqwest::Client::new();
    for admin in [ingest_admin, workers_admin, api_admin] {
        let health = format!("http://{admin}/healthz");
        let ready = format!("http://{admin}/readyz");
        eventually(&format!("{ready} to answer 200"), Duration::from_secs(60), || {
            let http = http.clone();
            let (health, ready) = (health.clone(), ready.clone());
            async move {
                let healthy = http.get(&health).send().await.ok()?.status().is_success();
                let ready = http.get(&ready).send().await.ok()?.status().is_success();
                (healthy && ready).then_some(())
            }
        })
        .await;
    }

    // Three days: u1 every day, u2 twice on day 1 and once on day 3, an anonymous visitor on day 2,
    // u3 late on day 3 (UTC), and a resent event and a repeated one that must not count twice.
    let batch_1 = json!({"batch": [
        track("u1", "e1", "Login", "2026-03-01T08:00:00Z"),
        track("u2", "e2", "Course Viewed", "2026-03-01T09:00:00Z"),
        track("u2", "e3", "Lesson Started", "2026-03-01T23:59:59Z"),
        track("u1", "e4", "Login", "2026-03-02T10:00:00Z"),
        {"type": "page", "anonymousId": "anon-9", "messageId": "e5", "timestamp": "2026-03-02T11:00:00Z", "properties": {"path": "/home"}},
        track("u2", "e5b", "Login", "not a time"),
    ]});
    let batch_2 = json!({"batch": [
        track("u1", "e6", "Login", "2026-03-03T00:00:00Z"),
        track("u2", "e7", "Login", "2026-03-03T12:00:00Z"),
        track("u3", "e8", "Login", "2026-03-03T23:00:00Z"),
        track("u1", "e4", "Login", "2026-03-02T10:00:00Z"),
    ]});
    let ingest_url = format!("http://{ingest_addr}/v1/batch");
    let reply: Value = http
        .post(&ingest_url)
        .basic_auth(WRITE_KEY, Some(""))
        .json(&batch_1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["accepted"], 5, "{reply}");
    assert_eq!(reply["rejected"][0]["index"], 5, "{reply}");
    assert_eq!(reply["rejected"][0]["messageId"], "e5b", "{reply}");
    let reply: Value = http
        .post(&ingest_url)
        .bearer_auth(WRITE_KEY)
        .json(&batch_2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["accepted"], 4, "{reply}");
    let unauthorized = http
        .post(&ingest_url)
        .bearer_auth("wrong")
        .json(&batch_2)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let api_url = format!("http://{api_addr}/v1/metrics/active-users?from=2026-02-28&to=2026-03-04&interval=day");
    let expected = json!([
        {"date": "2026-02-28", "dau": 0, "wau": 0, "mau": 0},
        {"date": "2026-03-01", "dau": 2, "wau": 2, "mau": 2},
        {"date": "2026-03-02", "dau": 2, "wau": 3, "mau": 3},
        {"date": "2026-03-03", "dau": 3, "wau": 4, "mau": 4},
        {"date": "2026-03-04", "dau": 0, "wau": 4, "mau": 4},
    ]);
    let series = eventually(
        "the api to report the DAU of every event",
        Duration::from_secs(30),
        || {
            let (http, api_url, expected) = (http.clone(), api_url.clone(), expected.clone());
            async move {
                let reply: Value = http
                    .get(&api_url)
                    .bearer_auth(READ_KEY)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (reply["series"] == expected).then_some(reply)
            }
        },
    )
    .await;
    assert_eq!(series["interval"], "day");

    let weekly: Value = http
        .get(format!(
            "http://{api_addr}/v1/metrics/active-users?from=2026-03-01&to=2026-03-31&interval=month"
        ))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(weekly["series"], json!([{"start": "2026-03-01", "active_users": 4}]));
    let denied = http.get(&api_url).bearer_auth(WRITE_KEY).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let invalid = http
        .get(format!(
            "http://{api_addr}/v1/metrics/active-users?from=2026-03-05&to=2026-03-01"
        ))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    assert!(invalid.text().await.unwrap().contains("after"));

    // Every event stored once in MongoDB, whatever was resent.
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let stored = mongo
        .database(&env.mongo_db)
        .collection::<mongodb::bson::Document>("events")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 8);

    // Each /metrics passes promtool's checks and carries the pipeline's own metrics.
    for (admin, expected_metric) in [
        (ingest_admin, "ingest_events_accepted_total"),
        (workers_admin, "workers_events_stored_total"),
        (api_admin, "api_http_request_duration_seconds"),
    ] {
        let body = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains(expected_metric),
            "{admin} /metrics lacks {expected_metric}:\n{body}"
        );
        if admin == api_admin {
            for cache_metric in ["api_cache_hits_total", "api_cache_misses_total"] {
                assert!(
                    body.contains(cache_metric),
                    "the api's /metrics lacks {cache_metric}:\n{body}"
                );
            }
        }
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool is installed (Debian package prometheus; ./scripts/test installs it)");
        std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool rejects {admin}/metrics:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    ingest.stop();
    api.stop();
    workers.stop();
}
