//! Ingest over real HTTP against the real NATS server: what clients send, what they are told, and
//! what lands in the JetStream stream.

mod support;

use ingest::Limits;
use serde_json::{json, Value};
use support::{spawn_app, spawn_app_with, track, KEY};

#[tokio::test]
async fn batch_with_one_bad_event_accepts_the_rest() {
    let app = spawn_app().await;
    let batch = json!({"batch": [
        track("m1", "u1", "Course Viewed"),
        {"type": "track", "event": "Login", "messageId": "m2"},
        track("m3", "u2", "COURSE_ENROLLED"),
        {"type": "track", "event": "x", "userId": "u3", "messageId": "m4", "properties": {"$gt": ""}},
        track("m1", "u1", "Course Viewed"),
    ]});
    let response = app.post("/v1/batch", &batch).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["success"], true);
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["duplicates"], 1);
    assert_eq!(reply["rejected"][0]["index"], 1);
    assert_eq!(reply["rejected"][0]["messageId"], "m2");
    assert!(reply["rejected"][0]["error"].as_str().unwrap().contains("userId"));
    assert_eq!(reply["rejected"][1]["index"], 3);
    assert!(reply["rejected"][1]["error"].as_str().unwrap().contains("$gt"));

    let events = app.stored(2).await;
    let names: Vec<_> = events
        .iter()
        .map(|e| (e.message_id.as_str(), e.event.as_str(), e.project.as_str()))
        .collect();
    assert_eq!(
        names,
        [("m1", "course_viewed", "proj-a"), ("m3", "course_enrolled", "proj-a")]
    );
    assert_eq!(events[0].properties["course_id"], "c1");
}

#[tokio::test]
async fn each_single_event_endpoint_accepts_its_own_type() {
    let app = spawn_app().await;
    for (path, body) in [
        (
            "/v1/track",
            json!({"event": "Lesson Completed", "userId": "u1", "messageId": "t1"}),
        ),
        (
            "/v1/page",
            json!({"name": "Home", "anonymousId": "a1", "messageId": "p1", "properties": {"path": "/"}}),
        ),
        (
            "/v1/screen",
            json!({"name": "Settings", "userId": "u1", "messageId": "s1"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "messageId": "i1", "traits": {"plan": "pro"}}),
        ),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(response.status(), 200, "{path}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["accepted"], 1, "{path}: {reply}");
    }
    let wrong_type = app.post("/v1/track", &json!({"type": "page", "userId": "u1"})).await;
    let reply: Value = wrong_type.json().await.unwrap();
    assert_eq!(reply["accepted"], 0);
    assert!(reply["rejected"][0]["error"].as_str().unwrap().contains("track"));

    let events = app.stored(4).await;
    let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["lesson_completed", "page_view", "screen_view", "identify"]);
    assert_eq!(events[1].properties["page"], "/");
    assert_eq!(events[3].traits["plan"], "pro");
}

#[tokio::test]
async fn write_keys_are_taken_from_any_place_sdks_put_them_and_unknown_keys_get_401() {
    let app = spawn_app().await;
    let batch = json!({"batch": [track("k1", "u1", "login")]});
    let bearer = app
        .http
        .post(app.url("/v1/batch"))
        .bearer_auth(KEY)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let query = app
        .http
        .post(app.url(&format!("/v1/batch?writeKey={KEY}")))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let in_body = json!({"writeKey": KEY, "batch": [track("k2", "u1", "login")]});
    let body = app.http.post(app.url("/v1/batch")).json(&in_body).send().await.unwrap();
    assert_eq!(body.status(), 200);

    for request in [
        app.http.post(app.url("/v1/batch")).json(&batch),
        app.http
            .post(app.url("/v1/batch"))
            .basic_auth("wk_other", Some(""))
            .json(&batch),
        app.http
            .post(app.url("/v1/batch"))
            .json(&json!({"writeKey": "nope", "batch": []})),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["success"], false);
        assert!(reply["detail"].as_str().unwrap().contains("write key"));
    }
}

#[tokio::test]
async fn limits_are_enforced_on_both_sides_with_the_right_status() {
    let limits = Limits {
        max_batch_events: 10,
        max_body_bytes: 4_096,
        ..Limits::default()
    };
    let app = spawn_app_with(|config| config.limits = limits).await;
    let events = |n: usize| -> Vec<Value> { (0..n).map(|i| track(&format!("b{n}-{i}"), "u1", "login")).collect() };

    let at_limit = app.post("/v1/batch", &json!({"batch": events(10)})).await;
    assert_eq!(at_limit.status(), 200);
    let over_limit = app.post("/v1/batch", &json!({"batch": events(11)})).await;
    assert_eq!(over_limit.status(), 413);
    assert!(over_limit.text().await.unwrap().contains("at most 10"));

    let padding = |n: usize| json!({"batch": [{"type": "track", "event": "x", "userId": "u", "properties": {"p": "x".repeat(n)}}]});
    let size = |body: &Value| serde_json::to_vec(body).unwrap().len();
    let fits = padding(4_096 - size(&padding(0)));
    assert_eq!(size(&fits), 4_096);
    assert_eq!(app.post("/v1/batch", &fits).await.status(), 200);
    let too_big = padding(4_097 - size(&padding(0)));
    assert_eq!(app.post("/v1/batch", &too_big).await.status(), 413);

    let body = serde_json::to_vec(&json!({"batch": events(3)})).unwrap();
    let gzip = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    };
    for (encoding, payload, status) in [
        ("gzip", gzip, 200),
        ("zstd", zstd::encode_all(&body[..], 1).unwrap(), 200),
        ("br", body.clone(), 415),
        ("gzip", b"not gzip".to_vec(), 400),
    ] {
        let response = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .header("content-encoding", encoding)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{encoding}");
    }

    // The body decides, not the label: SDKs send the JSON envelope as application/json,
    // text/plain (sendBeacon) and gzipped application/x-www-form-urlencoded (rudder-sdk-node);
    // 415 is for bodies that are not JSON under a type that does not claim JSON.
    let gzip = |bytes: &[u8]| {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    for (content_type, encoding, payload, status) in [
        ("application/x-www-form-urlencoded", "gzip", gzip(&body), 200),
        ("application/xml", "identity", body.clone(), 200),
        ("text/plain;charset=UTF-8", "identity", body.clone(), 200),
        ("application/xml", "identity", b"<batch/>".to_vec(), 415),
        (
            "application/x-www-form-urlencoded",
            "identity",
            b"batch=1".to_vec(),
            415,
        ),
        ("application/json", "identity", b"<batch/>".to_vec(), 400),
    ] {
        let response = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .header("content-type", content_type)
            .header("content-encoding", encoding)
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{content_type}");
        if status != 200 {
            // Segment's and RudderStack's SDKs print `code` and `message`.
            let reply: Value = response.json().await.unwrap();
            assert!(reply["code"].is_string() && reply["message"].is_string(), "{reply}");
        }
    }
    for malformed in [&b"{"[..], b"[]", b"{\"batch\": 3}", b""] {
        let response = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .body(malformed.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(malformed));
    }
    assert_eq!(app.http.get(app.url("/v1/batch")).send().await.unwrap().status(), 405);
    assert_eq!(
        app.http.post(app.url("/v2/elsewhere")).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn compressed_bodies_are_capped_once_decompressed_on_both_sides_of_the_cap() {
    let app = spawn_app_with(|config| config.limits.max_decoded_bytes = 10_000).await;
    let gzip_padded_to = |size: usize| {
        use std::io::Write as _;
        let mut body = serde_json::to_vec(&json!({"batch": [track("z1", "u1", "login")]})).unwrap();
        body.resize(size, b' ');
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    };
    for (size, status) in [(10_000, 200), (10_001, 413), (5_000_000, 413)] {
        let response = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .header("content-encoding", "gzip")
            .body(gzip_padded_to(size))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{size} bytes decompressed");
    }
}
