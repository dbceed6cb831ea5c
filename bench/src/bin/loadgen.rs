#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

//! `loadgen`: replays a generated workload against ingest in Segment batches, with a bounded
//! number of requests in flight, and prints what it sent, how fast, and the DAU it expects.

use std::time::Instant;

use anyhow::Context as _;
use bench::Workload;
use clap::Parser;
use futures::{stream, StreamExt as _};

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Replay a realistic e-learning workload against ingest.")]
struct Args {
    /// Ingest base URL.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Write key to send (Basic auth, as Segment SDKs do).
    #[arg(long, env = "INGEST_WRITE_KEY")]
    write_key: String,
    #[arg(long, default_value_t = 2_000)]
    learners: usize,
    #[arg(long, default_value_t = 20)]
    courses: usize,
    #[arg(long, default_value_t = 30)]
    days: i64,
    #[arg(long, default_value_t = 12)]
    lessons: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Write the expected DAU per day here, as JSON.
    #[arg(long)]
    expect_out: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let end = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let workload = Workload {
        learners: args.learners,
        courses: args.courses,
        days: args.days,
        lessons: args.lessons,
        seed: args.seed,
        end,
    };
    let generated = workload.generate();
    if let Some(path) = &args.expect_out {
        let expected = serde_json::json!({"events": generated.events.len(), "dau": generated.dau});
        std::fs::write(path, serde_json::to_vec_pretty(&expected)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let client = reqwest::Client::new();
    let url = format!("{}/v1/batch", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let bodies: Vec<Vec<u8>> = generated
        .events
        .chunks(args.batch_size)
        .map(|chunk| serde_json::to_vec(&serde_json::json!({"batch": chunk, "sentAt": chrono::Utc::now()})))
        .collect::<Result<_, _>>()?;
    let requests = bodies.len();
    let results: Vec<anyhow::Result<u64>> = stream::iter(bodies)
        .map(|body| {
            let (client, url, key) = (client.clone(), url.clone(), args.write_key.clone());
            async move {
                for attempt in 0..10u32 {
                    let response = client
                        .post(&url)
                        .basic_auth(&key, Some(""))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = response.status();
                    let reply: serde_json::Value = response.json().await.unwrap_or_default();
                    if status.is_success() {
                        anyhow::ensure!(
                            reply["rejected"].as_array().is_none_or(Vec::is_empty),
                            "events were rejected: {reply}"
                        );
                        return Ok(reply["accepted"].as_u64().unwrap_or_default());
                    }
                    anyhow::ensure!(
                        status.is_server_error() || status.as_u16() == 429,
                        "ingest answered {status}: {reply}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt + 1))).await;
                }
                anyhow::bail!("ingest kept refusing a batch")
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut accepted = 0;
    for result in results {
        accepted += result?;
    }
    println!(
        "sent {} events from {} learners over {} days in {requests} requests: {accepted} accepted in {elapsed:.2} s ({:.0} events/s)",
        generated.events.len(),
        args.learners,
        args.days,
        accepted as f64 / elapsed
    );
    Ok(())
}
