//! How requests share JetStream messages: a lone request is not held for the linger when nothing
//! is waiting for an acknowledgement, and concurrent small requests still share messages.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{spawn_app_with, stream_messages, track};

#[tokio::test]
async fn a_lone_request_on_an_idle_ingest_does_not_wait_for_the_linger() {
    let linger = Duration::from_secs(3);
    let app = spawn_app_with(|config| config.coalescing.linger = linger).await;
    for i in 0..3 {
        let started = Instant::now();
        let response = app
            .post(
                "/v1/batch",
                &json!({"batch": [track(&format!("lone-{i}"), "u1", "Course Viewed")]}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let waited = started.elapsed();
        assert!(
            waited < linger / 2,
            "answered after {waited:?}, with a linger of {linger:?}"
        );
    }
    assert_eq!(app.stored(3).await.len(), 3);
}

#[tokio::test]
async fn concurrent_single_event_requests_share_messages() {
    let app = spawn_app_with(|_| {}).await;
    let requests = 400;
    let bodies: Vec<_> = (0..requests)
        .map(|i| json!({"event": "Lesson Started", "userId": "u1", "messageId": format!("c-{i}")}))
        .collect();
    let responses = futures::future::join_all(bodies.iter().map(|body| app.post("/v1/track", body))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.stored(requests).await.len(), requests);
    let messages = stream_messages(&app.env).await;
    assert!(
        messages < requests as u64 / 2,
        "{requests} concurrent requests took {messages} messages"
    );
}
