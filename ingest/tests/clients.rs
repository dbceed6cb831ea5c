//! Real clients, unchanged: the official Segment Python library (`segment-analytics-python`,
//! installed by ./scripts/test into a venv) and a real headless Chromium whose page calls `fetch`
//! with a non-simple header (so a CORS preflight) and `navigator.sendBeacon` on unload. Both must
//! get their events into the stream with the right fields.

mod support;

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use support::{cache_dir, spawn_app, stream_messages, KEY};
use test_support::eventually;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The venv's python with segment-analytics-python (./scripts/test creates it).
fn segment_python() -> PathBuf {
    std::env::var_os("ANALYTICS_SEGMENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("segment-venv/bin/python"))
}

const SEGMENT_SCRIPT: &str = r#"
import sys
import segment.analytics as analytics

errors = []
analytics.write_key = sys.argv[1]
analytics.host = sys.argv[2]
analytics.on_error = lambda error, batch: errors.append(error)
analytics.track("learner-1", "Course Viewed", {"course_id": "c-42"})
analytics.page("learner-1", "Docs", "Getting Started", {"path": "/docs/start"})
analytics.identify("learner-1", {"plan": "pro", "email": "ada@example.com"})
analytics.track(anonymous_id="anon-7", event="Quiz Submitted", properties={"course_id": "c-42", "quiz_id": "q1", "score": 8, "passed": True})
analytics.flush()
analytics.shutdown()
if errors:
    print(errors, file=sys.stderr)
    sys.exit(1)
"#;

#[tokio::test]
async fn the_official_segment_python_library_sends_events_that_arrive_with_the_right_fields() {
    let app = spawn_app().await;
    let python = segment_python();
    assert!(
        python.exists(),
        "{} is missing: ./scripts/test installs segment-analytics-python into it",
        python.display()
    );
    let output = tokio::process::Command::new(&python)
        .args(["-c", SEGMENT_SCRIPT, KEY, &format!("http://{}", app.addr)])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the Segment client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = app.stored(4).await;
    let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["course_viewed", "page_view", "identify", "quiz_submitted"]);
    for event in &events {
        assert_eq!(event.project, support::PROJECT);
        assert!(!event.message_id_assigned, "the library sends its own messageId");
        assert!(event.timestamp.is_some() && event.sent_at.is_some(), "{event:?}");
        assert_eq!(event.context["library"]["name"], "analytics-python", "{event:?}");
    }
    assert_eq!(events[0].user_id.as_deref(), Some("learner-1"));
    assert_eq!(events[0].properties["course_id"], "c-42");
    assert_eq!(events[1].properties["page"], "/docs/start");
    assert_eq!(events[2].traits["plan"], "pro");
    assert_eq!(events[3].anonymous_id.as_deref(), Some("anon-7"));
    assert_eq!(events[3].properties["passed"], true);
}

/// The page: a cross-origin `fetch` with a non-simple header, whose readable answer (proof that
/// CORS let the page read it) sends the browser to /next?accepted=N, which unloads the page and so
/// fires its `sendBeacon`.
fn page(ingest: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>lesson</title></head><body><script>
const ingest = "{ingest}", key = "{KEY}";
window.addEventListener("pagehide", () => {{
  navigator.sendBeacon(ingest + "/v1/beacon?writeKey=" + key, JSON.stringify({{batch: [
    {{type: "track", event: "Lesson Left", userId: "browser-1", messageId: "beacon-1", properties: {{course_id: "c1"}}}}]}}));
}});
fetch(ingest + "/v1/track", {{
  method: "POST",
  headers: {{"Content-Type": "application/json", "Authorization": "Basic " + btoa(key + ":"), "X-Trace-Id": "t-1"}},
  body: JSON.stringify({{event: "Lesson Started", userId: "browser-1", messageId: "fetch-1", properties: {{course_id: "c1"}}}}),
}}).then(r => r.json()).then(reply => {{ location.href = "/next?accepted=" + reply.accepted; }})
  .catch(error => {{ location.href = "/failed?" + encodeURIComponent(String(error)); }});
</script></body></html>"#
    )
}

/// Serves `html` at `/` and a blank page elsewhere on loopback, recording each requested path.
async fn serve_page(html: String) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (html, seen) = (html.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = if path == "/" {
                    html
                } else {
                    "<!doctype html><title>next</title>".to_owned()
                };
                seen.lock().unwrap().push(path);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.ok();
            });
        }
    });
    (addr, paths)
}

/// A headless Chromium, killed on drop.
struct Browser(std::process::Child, PathBuf);

impl Drop for Browser {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
        std::fs::remove_dir_all(&self.1).ok();
    }
}

#[tokio::test]
async fn a_real_browser_page_gets_its_preflighted_fetch_and_its_unload_beacon_in() {
    let app = spawn_app().await;
    let (page_addr, paths) = serve_page(page(&format!("http://{}", app.addr))).await;
    let profile = std::env::temp_dir().join(format!("ingest-chromium-{}", uuid::Uuid::new_v4().simple()));
    let child = test_support::chromium(&profile)
        .arg("--disable-dev-shm-usage")
        .arg(format!("http://{page_addr}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is installed (./scripts/test installs it)");
    let _browser = Browser(child, profile);

    eventually("the page to read the fetch's answer", Duration::from_secs(60), || {
        let seen = paths.lock().unwrap().clone();
        async move {
            assert!(
                !seen.iter().any(|p| p.starts_with("/failed")),
                "the fetch failed: {seen:?}"
            );
            seen.iter().any(|p| p == "/next?accepted=1").then_some(())
        }
    })
    .await;
    eventually("both events in the stream", Duration::from_secs(30), || async {
        (stream_messages(&app.env).await >= 2).then_some(())
    })
    .await;
    let events = app.stored(2).await;
    let mut got: Vec<_> = events
        .iter()
        .map(|e| (e.message_id.as_str(), e.event.as_str(), e.user_id.as_deref()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("beacon-1", "lesson_left", Some("browser-1")),
            ("fetch-1", "lesson_started", Some("browser-1")),
        ]
    );
}
