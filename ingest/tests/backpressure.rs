//! Back-pressure and failure: the per-key rate limit (429), the bound on events in flight (503),
//! NATS going away and coming back (503 within the publish timeout, then 2xx again without a
//! restart), graceful shutdown, and slow clients (408). NATS failures use a private nats-server
//! so the shared one keeps serving the other tests.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{spawn_app_with, spawn_in, track, TestApp, KEY};
use test_support::PrivateNats;
use test_support::{eventually, TestEnv};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn batch(prefix: &str, n: usize) -> Value {
    json!({"batch": (0..n).map(|i| track(&format!("{prefix}-{i}"), "u1", "login")).collect::<Vec<_>>()})
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// An ingest whose NATS is a private server this test controls.
async fn spawn_on_private_nats(adjust: impl FnOnce(&mut ingest::Config)) -> (TestApp, PrivateNats) {
    let nats = PrivateNats::start().await;
    let mut env = TestEnv::new().await;
    env.nats.url = nats.url.clone();
    (spawn_in(env, adjust).await, nats)
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let app = spawn_app_with(|config| {
        config.rate_limit.events_per_second = 1;
        config.rate_limit.burst = 5;
    })
    .await;
    assert_eq!(app.post("/v1/batch", &batch("r", 5)).await.status(), 200);
    let limited = app.post("/v1/batch", &batch("s", 2)).await;
    assert_eq!(limited.status(), 429);
    assert!(retry_after(&limited) >= 1);
    let reply: Value = limited.json().await.unwrap();
    assert_eq!(reply["error"], "rate_limited");

    let pool = app.migrate().await;
    let (_, other) = common::keys::create(&pool, "other", common::keys::Scope::Write)
        .await
        .unwrap();
    assert_eq!(app.post_as(&other, "/v1/batch", &batch("o", 5)).await.status(), 200);
}

#[tokio::test]
async fn events_in_flight_are_bounded_and_beyond_the_bound_ingest_answers_503() {
    let (app, nats) = spawn_on_private_nats(|config| {
        config.limits.max_in_flight_events = 10;
        config.publish_timeout = Duration::from_secs(30);
    })
    .await;
    assert_eq!(app.post("/v1/batch", &batch("a", 10)).await.status(), 200);
    let over = app.post("/v1/batch", &batch("b", 11)).await;
    assert_eq!(over.status(), 503);
    assert!(retry_after(&over) >= 1);

    // Freeze NATS: a request's 8 events wait for their acknowledgement, and hold their places.
    nats.signal("-STOP");
    let waiting = tokio::spawn({
        let request = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .json(&batch("c", 8));
        async move { request.send().await.unwrap().status() }
    });
    eventually("8 events in flight", Duration::from_secs(10), || {
        let n = app.app.events_in_flight();
        async move { (n == 8).then_some(()) }
    })
    .await;
    assert_eq!(app.post("/v1/batch", &batch("d", 3)).await.status(), 503);
    nats.signal("-CONT");
    assert_eq!(waiting.await.unwrap(), 200);
    assert_eq!(app.post("/v1/batch", &batch("f", 10)).await.status(), 200);
}

#[tokio::test]
async fn nats_down_gives_503_within_the_publish_timeout_and_ingest_recovers_when_it_returns() {
    let publish_timeout = Duration::from_secs(2);
    let (app, mut nats) = spawn_on_private_nats(|config| config.publish_timeout = publish_timeout).await;
    assert_eq!(app.post("/v1/batch", &batch("up", 1)).await.status(), 200);

    nats.kill();
    let started = Instant::now();
    let down = app.post("/v1/batch", &batch("down", 1)).await;
    let waited = started.elapsed();
    assert_eq!(down.status(), 503);
    assert!(retry_after(&down) >= 1);
    assert!(
        waited < publish_timeout + Duration::from_secs(2),
        "503 came after {waited:?}, beyond the publish timeout of {publish_timeout:?}"
    );

    nats.restart().await;
    eventually("ingest to accept events again", Duration::from_secs(30), || {
        let request = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .json(&batch("back", 1));
        async move { (request.send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
    // Requests here carry one event each and go one at a time: one message per event. The one
    // answered 503 may have landed too (503 means "retry", and the workers drop the repeat).
    let messages = support::stream_messages(&app.env).await;
    let events = app.stored(usize::try_from(messages).unwrap()).await;
    assert_eq!(events[0].message_id, "up-0");
    assert!(events.iter().any(|e| e.message_id == "back-0"));
}

#[tokio::test]
async fn on_shutdown_in_flight_requests_finish_when_jetstream_confirms_in_the_grace() {
    let (mut app, nats) = spawn_on_private_nats(|config| config.shutdown_grace = Duration::from_secs(30)).await;
    nats.signal("-STOP");
    let waiting = tokio::spawn({
        let request = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .json(&batch("g", 3));
        async move { request.send().await.unwrap().status() }
    });
    eventually("3 events in flight", Duration::from_secs(10), || {
        let n = app.app.events_in_flight();
        async move { (n == 3).then_some(()) }
    })
    .await;
    app.shutdown.cancel();
    // Stops accepting: a new connection is refused once the listener is dropped.
    eventually("the listener to close", Duration::from_secs(10), || {
        let addr = app.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err().then_some(()) }
    })
    .await;
    nats.signal("-CONT");
    assert_eq!(waiting.await.unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(10), &mut app.served)
        .await
        .expect("serve returns once the requests are done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn on_shutdown_requests_jetstream_has_not_confirmed_by_the_grace_get_503() {
    let (mut app, nats) = spawn_on_private_nats(|config| {
        config.shutdown_grace = Duration::from_millis(500);
        config.publish_timeout = Duration::from_secs(60);
    })
    .await;
    nats.signal("-STOP");
    let waiting = tokio::spawn({
        let request = app
            .http
            .post(app.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .json(&batch("h", 2));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.headers().contains_key("retry-after"))
        }
    });
    eventually("2 events in flight", Duration::from_secs(10), || {
        let n = app.app.events_in_flight();
        async move { (n == 2).then_some(()) }
    })
    .await;
    app.shutdown.cancel();
    assert_eq!(waiting.await.unwrap(), (reqwest::StatusCode::SERVICE_UNAVAILABLE, true));
    tokio::time::timeout(Duration::from_secs(10), &mut app.served)
        .await
        .expect("serve returns after the grace")
        .unwrap()
        .unwrap();
    drop(nats);
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_and_is_disconnected() {
    let app = spawn_app_with(|config| config.limits.request_timeout = Duration::from_millis(500)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"batch\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("ingest answers and closes the connection")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test]
async fn a_client_that_stops_sending_its_headers_is_disconnected() {
    let app = spawn_app_with(|config| config.limits.request_timeout = Duration::from_millis(500)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/batch HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("ingest closes the connection instead of holding it")
        .ok();
    let response = String::from_utf8_lossy(&response);
    // hyper's header read timeout closes the connection without an answer (no request yet to
    // answer); a body that stops coming gets its 408 (above).
    assert!(response.is_empty(), "{response}");
}
