#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

//! `loadgen`: replays a generated workload against ingest in Segment batches, with a bounded
//! number of requests in flight, and prints what it sent, how fast, and the DAU it expects.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bench::Workload;
use chrono::NaiveDate;
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
    /// After sending, poll this api until its DAU series equals the generator's own count.
    #[arg(long, env = "LOADGEN_API_URL")]
    verify_api: Option<String>,
    /// Read key for the api.
    #[arg(long, env = "API_READ_KEY", default_value = "")]
    read_key: String,
    /// Longest to wait for the pipeline to catch up, in seconds.
    #[arg(long, default_value_t = 300)]
    verify_timeout_s: u64,
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
    if let Some(api) = &args.verify_api {
        verify(
            &client,
            api,
            &args.read_key,
            &generated.dau,
            Duration::from_secs(args.verify_timeout_s),
        )
        .await?;
    }
    Ok(())
}

/// Prints the top events and pages over the range, as the api reports them.
async fn headlines(
    client: &reqwest::Client,
    api: &str,
    read_key: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<()> {
    for (path, field, count) in [("events/top", "event", "events"), ("pages/top", "page", "views")] {
        let url = format!(
            "{}/v1/metrics/{path}?from={from}&to={to}&limit=5",
            api.trim_end_matches('/')
        );
        let reply: serde_json::Value = client
            .get(&url)
            .bearer_auth(read_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!("\ntop {field}s, {from} to {to}:");
        for item in reply["items"].as_array().into_iter().flatten() {
            println!(
                "  {:<28} {:>8}",
                item[field].as_str().unwrap_or("?"),
                item[count].as_i64().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Polls the api until its DAU per day equals `expected`, then prints the series side by side.
async fn verify(
    client: &reqwest::Client,
    api: &str,
    read_key: &str,
    expected: &BTreeMap<NaiveDate, usize>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (Some(from), Some(to)) = (expected.keys().next(), expected.keys().next_back()) else {
        return Ok(());
    };
    let url = format!(
        "{}/v1/metrics/active-users?from={from}&to={to}&interval=day",
        api.trim_end_matches('/')
    );
    let started = Instant::now();
    loop {
        let reply: serde_json::Value = client
            .get(&url)
            .bearer_auth(read_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let rows = reply["series"].as_array().cloned().unwrap_or_default();
        let actual: BTreeMap<NaiveDate, usize> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    row["date"].as_str()?.parse().ok()?,
                    usize::try_from(row["dau"].as_u64()?).ok()?,
                ))
            })
            .collect();
        let expected_nonzero: BTreeMap<_, _> = expected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| (*d, *n))
            .collect();
        let actual_nonzero: BTreeMap<_, _> = actual.iter().filter(|(_, n)| **n > 0).map(|(d, n)| (*d, *n)).collect();
        if actual_nonzero == expected_nonzero {
            println!(
                "\n{:<12} {:>6} {:>6} {:>6}   (DAU: expected by the generator / reported by the api)",
                "day", "DAU", "WAU", "MAU"
            );
            for row in &rows {
                println!(
                    "{:<12} {:>6} {:>6} {:>6}",
                    row["date"].as_str().unwrap_or("?"),
                    row["dau"],
                    row["wau"],
                    row["mau"]
                );
            }
            let total: usize = expected.values().sum();
            println!(
                "\nDAU correct: the api's series equals the generator's own count on all {} days ({total} user-days), after {:.1} s",
                expected.len(),
                started.elapsed().as_secs_f64()
            );
            headlines(client, api, read_key, *from, *to).await?;
            return Ok(());
        }
        if started.elapsed() > timeout {
            anyhow::bail!("after {timeout:?} the api's DAU still differs from the generator's: expected {expected_nonzero:?}, got {actual_nonzero:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
