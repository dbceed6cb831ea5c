//! A small load generator for one ingest process: `concurrency` clients POST batches of
//! `batch` events to /v1/batch for `seconds`, then it prints requests/s, events/s and latency
//! percentiles. Numbers are for reports, never for assertions in tests.
//!
//! cargo run --release -p ingest --example load -- --url http://127.0.0.1:8080 --key K --batch 100

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "INGEST_WRITE_KEY")]
    key: String,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent clients (each one request at a time, keep-alive).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = format!("{}/v1/batch", args.url.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.concurrency {
        let (http, url, key, batch) = (http.clone(), url.clone(), args.key.clone(), args.batch);
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            // One body per client, built once and resent: the generator's own CPU (this machine
            // has 2 cores, shared with ingest and NATS) goes to sending, not to JSON.
            let events: Vec<_> = (0..batch)
                .map(|i| {
                    serde_json::json!({"type": "track", "event": "Lesson Completed", "userId": format!("u{client}"),
                        "messageId": format!("{client}-{i}"), "properties": {"course_id": "c1", "lesson_id": "l1", "time_spent_s": 42}})
                })
                .collect();
            let body = bytes::Bytes::from(serde_json::to_vec(&serde_json::json!({"batch": events})).unwrap());
            while Instant::now() < deadline {
                let body = body.clone();
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for client in clients {
        let (l, f) = client.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "batch={} concurrency={} requests/s={:.0} events/s={:.0} failures={} p50={:?} p99={:?}",
        args.batch,
        args.concurrency,
        latencies.len() as f64 / elapsed,
        (latencies.len() * args.batch) as f64 / elapsed,
        failures,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
