//! Write keys stored hashed in PostgreSQL, managed with the real `api keys` command: a stored key
//! sends events of its own project only, read keys and unknown keys get 401, and a revoked key
//! stops working within the key cache's time to live.

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::json;
use support::{spawn_app_with, stored_with_subjects, track};
use test_support::eventually;

/// A binary of this workspace, built by `cargo test --workspace` next to the test executables.
fn binary(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("test executable path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join(name)
}

/// Runs `api keys <args>` against `database_url` and returns its standard output.
fn api_keys(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(binary("api"))
        .arg("keys")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the api binary runs (cargo test --workspace builds it)");
    assert!(
        output.status.success(),
        "api keys {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `api keys create`: the key on the first line, `id=<uuid> …` on the second.
fn create_key(database_url: &str, project: &str, scope: &str) -> (String, String) {
    let out = api_keys(database_url, &["create", "--project", project, "--scope", scope]);
    let mut lines = out.lines();
    let key = lines.next().unwrap().to_owned();
    let id = lines
        .next()
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    (key, id)
}

#[tokio::test]
async fn stored_write_keys_send_events_of_their_own_project_and_revoked_keys_stop_working() {
    let app = spawn_app_with(|config| config.key_cache_ttl = Duration::from_millis(300)).await;
    let db = app.env.database_url.clone();
    let (acme, acme_id) = create_key(&db, "acme", "write");
    let (beta, _) = create_key(&db, "beta", "write");
    let (read, _) = create_key(&db, "acme", "read");
    assert!(acme.starts_with("wk_") && acme.len() == 35, "{acme}");
    assert!(read.starts_with("rk_"), "{read}");

    let listed = api_keys(&db, &["list", "--project", "acme"]);
    assert!(listed.contains(&acme_id), "{listed}");
    assert!(!listed.contains(&acme), "list must never print keys: {listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let batch = json!({"batch": [track("a1", "u1", "login")]});
    let bearer = app
        .http
        .post(app.url("/v1/batch"))
        .bearer_auth(&acme)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // The project comes from the key, whatever the body claims.
    let in_body = json!({"writeKey": beta, "batch": [{"type": "track", "event": "login", "userId": "u2", "messageId": "b1", "project": "acme"}]});
    assert_eq!(
        app.http
            .post(app.url("/v1/batch"))
            .json(&in_body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let events = stored_with_subjects(&app.env, 2).await;
    let prefix = &app.env.nats.subject_prefix;
    let seen: Vec<_> = events
        .iter()
        .map(|(subject, e)| (subject.as_str(), e.project.as_str(), e.message_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (format!("{prefix}.events.acme").as_str(), "acme", "a1"),
            (format!("{prefix}.events.beta").as_str(), "beta", "b1"),
        ]
    );

    for key in [read.as_str(), "wk_00000000000000000000000000000000"] {
        let response = app.post_as(key, "/v1/batch", &batch).await;
        assert_eq!(response.status(), 401, "{key}");
    }

    let revoked = api_keys(&db, &["revoke", "--id", &acme_id]);
    assert!(revoked.contains(&acme_id));
    eventually("the revoked key to be refused", Duration::from_secs(10), || {
        let request = app.http.post(app.url("/v1/batch")).bearer_auth(&acme).json(&batch);
        async move { (request.send().await.ok()?.status() == 401).then_some(()) }
    })
    .await;
    let listed = api_keys(&db, &["list", "--project", "acme"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&acme_id) && !l.ends_with("revoked=-")),
        "{listed}"
    );
    assert_eq!(app.post_as(&beta, "/v1/batch", &batch).await.status(), 200);
}

#[tokio::test]
async fn without_a_static_key_only_stored_keys_are_accepted() {
    let app = spawn_app_with(|config| config.write_key = None).await;
    let batch = json!({"batch": [track("s1", "u1", "login")]});
    // No key table yet (no migration has run): every key is unknown, not an error.
    assert_eq!(app.post_as(support::KEY, "/v1/batch", &batch).await.status(), 401);
    let pool = app.migrate().await;
    let (_, key) = common::keys::create(&pool, "gamma", common::keys::Scope::Write)
        .await
        .unwrap();
    let response = app.post_as(&key, "/v1/batch", &batch).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.stored(1).await[0].project, "gamma");
}

#[tokio::test]
async fn readiness_needs_postgres_only_when_there_is_no_static_key() {
    let unreachable = "postgres://postgres@127.0.0.1:1/nowhere".to_owned();
    let with_static = spawn_app_with(|config| config.postgres.url = unreachable.clone()).await;
    let ready = (with_static.app.admin_state(None).readiness)().await;
    assert_eq!(ready, Ok(()));
    let without = spawn_app_with(|config| {
        config.postgres.url = unreachable.clone();
        config.write_key = None;
    })
    .await;
    let ready = (without.app.admin_state(None).readiness)().await;
    assert!(ready.unwrap_err().contains("PostgreSQL"));
    // A stored key cannot be checked without the database: 503 (retry), not 401.
    let response = without
        .post_as(
            "wk_00000000000000000000000000000000",
            "/v1/batch",
            &json!({"batch": []}),
        )
        .await;
    assert_eq!(response.status(), 503);
}
