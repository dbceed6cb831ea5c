//! Memory before authentication (issue "Reliability and security", item 2): small compressed
//! bodies that decode to megabytes, sent many at once with no valid key, must not grow ingest.
//! The body's `writeKey` is read without parsing the body into a tree, and the bytes being
//! decoded at once are bounded by `INGEST_MAX_DECODING_BYTES`. Runs the real `ingest` binary so
//! its peak resident memory (VmHWM) is its own.

use std::{io::Write as _, time::Duration};

use reqwest::StatusCode;
use test_support::{eventually, free_addr, Service, TestEnv};

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// A gzip body (a few KiB) that decodes to `decoded` bytes: `prefix`, then zeros and
/// commas (the shape that costs a JSON tree the most per byte), then `suffix`.
fn bomb(prefix: &str, suffix: &str, decoded: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(prefix.as_bytes()).unwrap();
    let chunk = "0,".repeat(32 * 1024);
    let mut written = prefix.len() + suffix.len() + 1;
    while written + chunk.len() < decoded {
        gz.write_all(chunk.as_bytes()).unwrap();
        written += chunk.len();
    }
    gz.write_all(b"0").unwrap();
    gz.write_all(suffix.as_bytes()).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn decompression_bombs_without_a_valid_key_do_not_grow_ingest() {
    let env = TestEnv::new().await;
    let (addr, admin) = (free_addr(), free_addr());
    let mut vars = env.service_env();
    vars.extend([
        ("INGEST_ADDR", addr.to_string()),
        ("INGEST_ADMIN_ADDR", admin.to_string()),
        ("INGEST_WRITE_KEY", "wk_amplification".to_owned()),
        ("INGEST_PROJECT", "proj-a".to_owned()),
    ]);
    let ingest = Service::start("ingest", &vars);
    let http = reqwest::Client::new();
    eventually("ingest ready", Duration::from_secs(30), || {
        let http = http.clone();
        async move {
            let ready = http.get(format!("http://{admin}/readyz")).send().await;
            ready.is_ok_and(|r| r.status().is_success()).then_some(())
        }
    })
    .await;
    let idle = peak_rss_mib(ingest.pid());

    // Just under the 8 MiB decoded limit, so every body is decoded in full.
    let decoded = 8 * 1024 * 1024 - 4096;
    let bodies = [
        // A wrong key in the body, before a batch of 4 million numbers.
        bomb(r#"{"writeKey":"wk_forged","batch":["#, "]}", decoded),
        // The key after the batch: found only by reading the whole body.
        bomb(r#"{"batch":["#, r#"],"writeKey":"wk_forged"}"#, decoded),
        // No key at all.
        bomb(r#"{"batch":["#, "]}", decoded),
        // A single-event route.
        bomb(r#"{"event":"x","properties":{"p":["#, "]}}", decoded),
    ];
    assert!(
        bodies.iter().all(|b| b.len() < 64 * 1024),
        "the bombs are small on the wire"
    );
    for round in 0..3 {
        let sends = (0..32).map(|i| {
            let body = bodies[i % bodies.len()].clone();
            let path = if i % bodies.len() == 3 {
                "/v1/track"
            } else {
                "/v1/batch"
            };
            let http = http.clone();
            async move {
                http.post(format!("http://{addr}{path}"))
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        for (i, status) in futures::future::join_all(sends).await.into_iter().enumerate() {
            let status = status.unwrap_or_else(|e| panic!("round {round}, request {i}: {e}"));
            // 401 (no valid key), or 503 when the decoding budget made it wait too long.
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                "round {round}, request {i}: {status}"
            );
        }
    }
    let peak = peak_rss_mib(ingest.pid());
    eprintln!("ingest peak RSS: {idle:.0} MiB idle, {peak:.0} MiB after the bombs");
    assert!(
        peak < 150.0,
        "ingest's peak RSS went from {idle:.0} MiB to {peak:.0} MiB under 96 bombs of 8 MiB each"
    );

    // And the front door still works for a real client.
    let ok = http
        .post(format!("http://{addr}/v1/track"))
        .basic_auth("wk_amplification", Some(""))
        .json(&serde_json::json!({"event": "login", "userId": "u1", "messageId": "after-bombs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "{:?}", ok.text().await);
    ingest.stop();
    env.cleanup().await;
}
