//! Browsers: CORS preflights on every endpoint, CORS headers on errors too, `sendBeacon`'s
//! text/plain batches on /v1/beacon, and per-project origin allow-lists.

mod support;

use serde_json::json;
use support::{spawn_app, track, KEY};

const ORIGIN: &str = "https://learn.example";

#[tokio::test]
async fn every_endpoint_answers_preflights_echoing_the_origin_and_the_requested_headers() {
    let app = spawn_app().await;
    for path in [
        "/v1/batch",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/identify",
        "/v1/beacon",
    ] {
        let response = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-trace-id",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("access-control-allow-origin").as_deref(), Some(ORIGIN), "{path}");
        assert_eq!(
            header("access-control-allow-headers").as_deref(),
            Some("authorization, content-type, x-trace-id"),
            "{path}"
        );
        assert!(
            header("access-control-allow-methods").unwrap().contains("POST"),
            "{path}"
        );
        assert_eq!(header("access-control-max-age").as_deref(), Some("86400"), "{path}");
        assert_eq!(
            header("access-control-allow-credentials"),
            None,
            "{path}: no credentials for any origin"
        );
    }
}

#[tokio::test]
async fn error_responses_carry_cors_headers_so_pages_can_read_them() {
    let app = spawn_app().await;
    let unauthorized = app
        .http
        .post(app.url("/v1/batch"))
        .header("origin", ORIGIN)
        .bearer_auth("wk_wrong")
        .json(&json!({"batch": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["access-control-allow-origin"], ORIGIN);
    let malformed = app
        .http
        .post(app.url("/v1/batch"))
        .header("origin", ORIGIN)
        .bearer_auth(KEY)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["access-control-allow-origin"], ORIGIN);
    let ok = app
        .post("/v1/batch", &json!({"batch": [track("c1", "u1", "login")]}))
        .await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers().get("access-control-allow-origin").is_none(),
        "no Origin, no CORS"
    );
}

#[tokio::test]
async fn beacons_are_text_plain_batches_with_the_key_in_the_query_and_answer_204() {
    let app = spawn_app().await;
    let body = json!({"batch": [track("bc1", "u1", "Lesson Completed"), {"type": "page", "anonymousId": "a1", "messageId": "bc2", "properties": {"path": "/lesson/3"}}]});
    let response = app
        .http
        .post(app.url(&format!("/v1/beacon?writeKey={KEY}")))
        .header("origin", ORIGIN)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    let events = app.stored(2).await;
    let names: Vec<_> = events
        .iter()
        .map(|e| (e.message_id.as_str(), e.event.as_str()))
        .collect();
    assert_eq!(names, [("bc1", "lesson_completed"), ("bc2", "page_view")]);

    let unknown = app
        .http
        .post(app.url("/v1/beacon?writeKey=wk_nope"))
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
}

/// Posts one track event from a browser page at `origin` with `key`; the status, the
/// `Access-Control-Allow-Origin` answered, and the body.
async fn post_from(
    app: &support::TestApp,
    key: &str,
    origin: &str,
    id: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let response = app
        .http
        .post(app.url("/v1/batch"))
        .header("origin", origin)
        .basic_auth(key, Some(""))
        .json(&json!({"batch": [track(id, id, "Lesson Started")]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let allowed = response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, allowed, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_project_with_an_allow_list_refuses_other_origins_and_tells_them_nothing() {
    let app = spawn_app().await;
    let pool = app.migrate().await;
    let (_, key) = common::keys::create(&pool, "gamma", common::keys::Scope::Write)
        .await
        .unwrap();
    common::origins::set(&pool, "gamma", &[ORIGIN.to_owned()])
        .await
        .unwrap();

    let (status, allowed, _) = post_from(&app, &key, ORIGIN, "o1").await;
    assert_eq!((status, allowed.as_deref()), (200, Some(ORIGIN)));
    let (status, allowed, body) = post_from(&app, &key, "https://evil.example", "o2").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(allowed, None, "a refused origin gets no CORS grant");
    assert_eq!(body["code"], "origin_not_allowed");
    assert!(
        body["message"].as_str().unwrap().contains("https://evil.example"),
        "{body}"
    );
    // A lookalike suffix is another origin.
    assert_eq!(post_from(&app, &key, "https://learn.example.evil", "o3").await.0, 403);
    // Servers and apps send no Origin: not browser requests, not refused.
    let server = app
        .post_as(
            &key,
            "/v1/batch",
            &json!({"batch": [track("s1", "s1", "Lesson Started")]}),
        )
        .await;
    assert_eq!(server.status(), 200);
    // The key in the body (sendBeacon, writeKey) is checked the same way.
    let beacon = app
        .http
        .post(app.url("/v1/beacon"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(json!({"writeKey": key, "batch": [track("b1", "b1", "Lesson Started")]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 403);
    // Exactly the two admitted events went in, in order.
    let users: Vec<_> = app.stored(2).await.iter().map(|e| e.user_key().to_owned()).collect();
    assert_eq!(users, ["o1", "s1"]);
}

#[tokio::test]
async fn the_static_key_follows_its_configured_origins_and_other_projects_keep_every_origin() {
    let app = support::spawn_app_with(|config| config.allowed_origins = vec![ORIGIN.to_owned()]).await;
    assert_eq!(post_from(&app, KEY, ORIGIN, "o4").await.0, 200);
    assert_eq!(post_from(&app, KEY, "https://other.example", "o5").await.0, 403);
    let pool = app.migrate().await;
    let (_, key) = common::keys::create(&pool, "open", common::keys::Scope::Write)
        .await
        .unwrap();
    let (status, allowed, _) = post_from(&app, &key, "https://other.example", "o6").await;
    assert_eq!((status, allowed.as_deref()), (200, Some("https://other.example")));
}
