//! Browsers: CORS preflights on every endpoint, CORS headers on errors too, and `sendBeacon`'s
//! text/plain batches on /v1/beacon.

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
