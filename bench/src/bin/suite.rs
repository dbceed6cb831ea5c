//! `suite`: the measurements `bench/run` writes into `bench/RESULTS.md`. Every figure is reported
//! beside a baseline measured in the same invocation, on the same servers, because on a 2-core
//! machine shared by the store, the services and the load generator only ratios are comparable.
//!
//! Phases (each prints a Markdown section to stdout):
//! - `store`: the MongoDB server's bare `insert_many` of the workers' own documents (100 and 1,000
//!   per call, 1 and 4 clients) as the ceiling; workers draining a preloaded stream with 1, 2 and
//!   4 processes (stored and counted, exactly once), their CPU per event and that of the servers;
//!   the p99 lag at 80% of one worker's rate; the seeds' stack (bench/peer) storing the same events.
//! - `ingest`: raw JetStream publishing of the same bytes and a no-op hyper server as ceilings,
//!   ingest at 1, 10, 100 and 500 events per request, its peak RSS.
//! - `api`: every endpoint, cached and uncached, on a drained workload; peak RSS.
//! - `noop`: the no-op hyper server itself (a child process of `ingest`).

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream;
use bench::Workload;
use clap::Parser;
use common::{event::Event, stream::Subjects};
use futures::{stream, StreamExt as _};
use mongodb::bson::{Document, RawDocumentBuf};
use serde_json::Value;
use test_support::{free_addr, workspace_binary, Service, TestEnv};

#[derive(Parser, Debug)]
#[command(name = "suite", about = "The measurements of bench/RESULTS.md (run by bench/run).")]
struct Args {
    #[command(subcommand)]
    phase: Phase,
}

#[derive(clap::Subcommand, Debug)]
enum Phase {
    Store {
        /// What the MongoDB server is, for the report (e.g. "FerretDB 1.24 on SQLite").
        #[arg(long)]
        label: String,
        #[command(flatten)]
        size: Size,
        /// The seeds' stack's URL (bench/peer/run prints it); none: not measured.
        #[arg(long)]
        peer: Option<String>,
        /// The peer's MongoDB database, dropped before each of its runs.
        #[arg(long, default_value = "peer")]
        peer_db: String,
        /// Worker process counts to drain with.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
        /// The ceiling and the drains only (no resends, no lag): for quick comparisons.
        #[arg(long)]
        drains_only: bool,
    },
    Ingest {
        #[command(flatten)]
        size: Size,
    },
    Api {
        #[command(flatten)]
        size: Size,
        /// Larger workloads (learners) measured after the first, one run each, to show how each
        /// endpoint's cost grows.
        #[arg(long, value_delimiter = ',')]
        also: Vec<usize>,
    },
    Noop {
        #[arg(long)]
        addr: SocketAddr,
    },
}

#[derive(clap::Args, Debug, Clone, Copy)]
struct Size {
    /// Learners of the generated workload (about 50 events each over 30 days).
    #[arg(long, default_value_t = 1_000)]
    learners: usize,
    /// Repetitions of each measurement; the report gives their median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each timed load.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
}

const PROJECT: &str = "bench";
const WRITE_KEY: &str = "wk_bench_of_at_least_some_length";
const READ_KEY: &str = "rk_bench_of_at_least_some_length";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().phase {
        Phase::Store {
            label,
            size,
            peer,
            peer_db,
            workers,
            drains_only,
        } => store(&label, size, peer.as_deref(), &peer_db, &workers, drains_only).await,
        Phase::Ingest { size } => ingest(size).await,
        Phase::Api { size, also } => {
            api(size).await?;
            for learners in also {
                api(Size {
                    learners,
                    runs: 1,
                    ..size
                })
                .await?;
            }
            Ok(())
        }
        Phase::Noop { addr } => noop(addr).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

fn workload(learners: usize) -> Workload {
    Workload {
        learners,
        courses: 20,
        days: 30,
        lessons: 12,
        seed: 7,
        end: chrono::Utc::now().date_naive() - chrono::Duration::days(1),
    }
}

/// The raw Segment events of the workload.
fn raw_events(learners: usize) -> Vec<Value> {
    workload(learners).generate().events
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn rate(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: CPU and memory from /proc.

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process, in MB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (parent pid, own CPU seconds, CPU seconds of its reaped children) of a process.
fn proc_times(pid: u32) -> Option<(u32, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: ppid is the 2nd; utime, stime, cutime and
    // cstime the 12th to 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    let ppid = fields.get(1)?.parse().ok()?;
    Some((ppid, ticks(11) + ticks(12), ticks(13) + ticks(14)))
}

/// Pids whose command name (`/proc/PID/comm`) starts with `prefix`.
fn pids_named(prefix: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with(prefix) && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

/// CPU seconds a server has used since it started, its exited processes included: its live
/// processes' own time, plus what its root processes reaped from exited children (PostgreSQL's
/// backends come and go with connections; summing only live ones goes backwards).
fn group_cpu(prefix: &str) -> f64 {
    let pids = pids_named(prefix);
    let set: std::collections::HashSet<u32> = pids.iter().copied().collect();
    pids.into_iter()
        .filter_map(proc_times)
        .map(|(ppid, own, reaped)| own + if set.contains(&ppid) { 0.0 } else { reaped })
        .sum()
}

/// CPU seconds of the seeds' stack (bench/peer/run: uvicorn and its worker processes, all
/// running the peer's venv's Python).
fn peer_cpu() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("peer-venv") {
            total += cpu_seconds(pid);
        }
    }
    total
}

/// CPU seconds of each server group, to attribute where a phase's time went. On FerretDB's
/// PostgreSQL backend its storage work runs in PostgreSQL's processes and is counted there.
fn server_cpu() -> BTreeMap<&'static str, f64> {
    BTreeMap::from([
        ("MongoDB server", group_cpu("ferretdb") + group_cpu("mongod")),
        ("PostgreSQL", group_cpu("postgres")),
        ("NATS", group_cpu("nats-server")),
    ])
}

// ---------------------------------------------------------------------------------------------
// Phase `store`.

async fn store(
    label: &str,
    size: Size,
    peer: Option<&str>,
    peer_db: &str,
    workers: &[usize],
    drains_only: bool,
) -> anyhow::Result<()> {
    let raw = raw_events(size.learners);
    let events = bench::normalised::events(PROJECT, &raw)?;
    let n = events.len();
    println!("### Store: {label}\n");
    println!(
        "Workload: {} events of {} learners over 30 days (bench::Workload, seed 7), normalised by ingest's decoder; {} run(s) each, medians.\n",
        rate(n as f64),
        size.learners,
        size.runs
    );

    // The ceiling: bare insert_many of the same documents into a fresh, identically indexed
    // `events` collection.
    let documents: Vec<RawDocumentBuf> = events
        .iter()
        .map(workers::store::to_raw_document)
        .collect::<anyhow::Result<_>>()?;
    let mut ceilings = BTreeMap::new();
    println!("| bare `insert_many` (the ceiling) | docs/s | MongoDB server process CPU µs/doc | PostgreSQL CPU µs/doc |\n| --- | --- | --- | --- |");
    for (per_call, clients) in [(100usize, 1usize), (100, 4), (1_000, 1), (1_000, 4)] {
        let (mut rates, mut store_cpu, mut postgres_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..size.runs {
            let bare = bare_insert(&documents, per_call, clients).await?;
            rates.push(bare.rate);
            store_cpu.push(bare.store_cpu_us);
            postgres_cpu.push(bare.postgres_cpu_us);
        }
        let r = median(rates);
        ceilings.insert((per_call, clients), r);
        println!(
            "| {per_call} per call, {clients} client(s) | {} | {:.0} | {:.0} |",
            rate(r),
            median(store_cpu),
            median(postgres_cpu)
        );
    }
    let ceiling = ceilings.values().copied().fold(0.0, f64::max);
    println!("\nThe ceiling below is the best of these: {} docs/s.\n", rate(ceiling));

    // Workers draining a preloaded stream.
    println!("| workers | stored and counted events/s | vs ceiling | workers' CPU µs/event | MongoDB server process CPU µs/event | PostgreSQL CPU µs/event (rollups; and FerretDB's storage on its PostgreSQL backend) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut one_worker = f64::NAN;
    let mut one_worker_stages = BTreeMap::new();
    let mut one_worker_cpu = f64::NAN;
    for &count in workers {
        let mut runs = Vec::new();
        for _ in 0..size.runs {
            runs.push(drain(&events, count).await?);
        }
        let pick = |f: fn(&Drained) -> f64| median(runs.iter().map(f).collect());
        let r = pick(|d| d.rate);
        if count == 1 {
            one_worker = r;
            one_worker_cpu = pick(|d| d.worker_cpu_us);
            one_worker_stages = runs[runs.len() / 2].stages.clone();
        }
        println!(
            "| {count} | {} | {:.2}x | {:.1} | {:.0} | {:.0} |",
            rate(r),
            r / ceiling,
            pick(|d| d.worker_cpu_us),
            pick(|d| d.store_cpu_us),
            pick(|d| d.postgres_cpu_us),
        );
    }
    if !one_worker_stages.is_empty() {
        let stages: Vec<String> = one_worker_stages
            .iter()
            .map(|(stage, busy)| format!("{stage} {busy:.2}"))
            .collect();
        println!(
            "\nWhere one worker's time went (its own `workers_stage_duration_seconds`, busy seconds per second of the drain; decode runs beside the pipeline, prepare is part of rollup): {}.",
            stages.join(", ")
        );
    }
    if drains_only {
        return Ok(());
    }
    // The same with 3% of the events sent again by their clients inside later messages: the
    // duplicates are claimed as resends, neither counted nor stored again.
    let resent = with_resends(&events, 0.03);
    let mut runs = Vec::new();
    for _ in 0..size.runs {
        runs.push(drain_expecting(&resent, events.len(), 1).await?);
    }
    let pick = |f: fn(&Drained) -> f64| median(runs.iter().map(f).collect());
    let r = pick(|d| d.rate);
    println!(
        "| 1, with 3% client resends ({} messages' events) | {} | {:.2}x | {:.1} | {:.0} | {:.0} |",
        rate((resent.len() - events.len()) as f64),
        rate(r),
        r / ceiling,
        pick(|d| d.worker_cpu_us),
        pick(|d| d.store_cpu_us),
        pick(|d| d.postgres_cpu_us),
    );
    println!(
        "\nRates are distinct events stored in MongoDB and counted in PostgreSQL per second of wall time, from the moment the workers are ready and the workload is published (JetStream takes it far faster than it is stored) until every message is acknowledged and every learning path the events touched is written; CPU is per distinct event over the same window.\n"
    );

    // Lag at 80% of one worker's rate.
    let offered = one_worker * 0.8;
    let lag = paced_lag(&events, offered, Duration::from_secs_f64(size.seconds * 3.0)).await?;
    println!(
        "End-to-end lag (ingest's receive time to the rollup commit) with 1 worker at 80% of its rate ({} events/s offered for {:.0} s): p50 ≤ {} s, p99 ≤ {} s (the workers' histogram buckets); {}.\n",
        rate(offered),
        size.seconds * 3.0,
        lag.p50,
        lag.p99,
        if lag.caught_up { "the stream was drained 2 s after the last publish" } else { "**the stream was not drained 2 s after the last publish**" }
    );

    if let Some(url) = peer {
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        let mongo_uri = std::env::var("MONGO_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
        let mongo = mongodb::Client::with_uri_str(&mongo_uri).await?;
        for run in 0..size.runs {
            // Dropped and re-indexed as the peer's startup does (bench/peer/app.py INDEXES):
            // deleting every document is one SQL statement with a variable per document on
            // FerretDB's SQLite backend, which refuses it past its variable limit.
            let events = mongo.database(peer_db).collection::<Document>("events");
            events.drop().await?;
            for keys in [
                mongodb::bson::doc! {"ts": 1},
                mongodb::bson::doc! {"user_id": 1, "ts": 1},
                mongodb::bson::doc! {"event": 1, "ts": 1},
            ] {
                events
                    .create_index(mongodb::IndexModel::builder().keys(keys).build())
                    .await?;
            }
            let before = peer_cpu();
            rates.push(peer_rate(url, &raw, run).await?);
            cpus.push((peer_cpu() - before) * 1e6 / raw.len() as f64);
        }
        let r = median(rates);
        let cpu = median(cpus);
        println!(
            "The seeds' stack (FastAPI + PyMongo, one `insert_many` per request of 100 events, 32 clients): {} events/s stored, {:.2}x the ceiling; our 1 worker stores {:.2}x what it does.\n",
            rate(r),
            r / ceiling,
            one_worker / r
        );
        println!(
            "Its own CPU (the uvicorn processes, the MongoDB server excluded): {cpu:.0} µs per event, against {one_worker_cpu:.1} µs for our workers (ingest's own is in the ingest section): with a MongoDB server that is not the limit, each core stores {:.1}x as many events through our workers as through the seeds' stack.\n",
            cpu / one_worker_cpu
        );
    }
    Ok(())
}

/// A bare insert's rate and what it cost the servers per document.
struct Bare {
    rate: f64,
    store_cpu_us: f64,
    postgres_cpu_us: f64,
}

async fn bare_insert(documents: &[RawDocumentBuf], per_call: usize, clients: usize) -> anyhow::Result<Bare> {
    let env = bench_env().await;
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await?;
    let db = mongo.database(&env.mongo_db);
    let store = workers::store::EventStore::new(&db, "1", false);
    store.create_indexes().await?;
    let collection = db.collection::<RawDocumentBuf>("events");
    let share = documents.len().div_ceil(clients);
    let servers_before = server_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = documents
        .chunks(share)
        .map(|part| {
            let (collection, part) = (collection.clone(), part.to_vec());
            tokio::spawn(async move {
                for chunk in part.chunks(per_call) {
                    collection.insert_many(chunk).ordered(false).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = documents.len() as f64 / started.elapsed().as_secs_f64();
    let servers_after = server_cpu();
    let per_doc = |server: &str| (servers_after[server] - servers_before[server]) * 1e6 / documents.len() as f64;
    let bare = Bare {
        rate,
        store_cpu_us: per_doc("MongoDB server"),
        postgres_cpu_us: per_doc("PostgreSQL"),
    };
    db.drop().await.ok();
    env.cleanup().await;
    Ok(bare)
}

struct Drained {
    /// Busy seconds per second of the drain, by stage (the workers' own timings).
    stages: BTreeMap<String, f64>,
    rate: f64,
    worker_cpu_us: f64,
    store_cpu_us: f64,
    postgres_cpu_us: f64,
}

/// The environment of a worker the suite starts: the test environment's servers, plus every
/// `WORKERS_*` setting of the suite's own environment (to measure another configuration).
fn worker_env(env: &TestEnv, admin: SocketAddr) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env.service_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("WORKERS_") && k != "WORKERS_ADMIN_ADDR"));
    vars.push(("WORKERS_ADMIN_ADDR".to_owned(), admin.to_string()));
    vars
}

async fn jetstream_of(env: &TestEnv) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(&env.nats.url).await?;
    let js = jetstream::new(client);
    common::stream::ensure_events_stream(&js, &env.nats).await?;
    Ok(js)
}

/// Publishes `events` as messages of `per_message` events, as ingest would, acks pipelined.
async fn publish(
    js: &jetstream::Context,
    env: &TestEnv,
    events: &[Event],
    per_message: usize,
    tag: &str,
) -> anyhow::Result<()> {
    let subject = Subjects::new(&env.nats.subject_prefix).events(PROJECT);
    let messages: Vec<Vec<u8>> = events
        .chunks(per_message)
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let acks: Vec<anyhow::Result<()>> = stream::iter(messages.into_iter().enumerate())
        .map(|(n, payload)| {
            let (js, subject) = (js.clone(), subject.clone());
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{tag}-{n}").as_str());
                js.publish_with_headers(subject, headers, payload.into()).await?.await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    acks.into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .context("publishing")?;
    Ok(())
}

/// Waits until no learning path is left marked for rewriting (workers/src/paths.rs).
async fn wait_paths_written(env: &TestEnv, deadline: Duration) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    let until = Instant::now() + deadline;
    loop {
        let marked: i64 = sqlx::query_scalar("select count(*) from learning_path_dirty")
            .fetch_one(&pool)
            .await?;
        if marked == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "{marked} learning paths still unwritten after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    Ok(())
}

/// Events counted in the rollups (the sum of the daily event counts).
async fn counted(env: &TestEnv) -> anyhow::Result<i64> {
    let pool = sqlx::PgPool::connect(&env.database_url).await?;
    let n: Option<i64> = sqlx::query_scalar("select sum(events)::bigint from daily_event_counts")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n.unwrap_or(0))
}

/// `events` with a `fraction` of them sent again, each copy a few messages after its original
/// (a client retrying after a timeout), as ingest would have published them.
fn with_resends(events: &[Event], fraction: f64) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = Vec::with_capacity(events.len() + (events.len() as f64 * fraction) as usize + 1);
    let mut later: Vec<(usize, Event)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        out.push(event.clone());
        if rng.f64() < fraction {
            later.push((i + rng.usize(200..2_000), event.clone()));
        }
        while let Some(pos) = later.iter().position(|(at, _)| *at <= i) {
            out.push(later.swap_remove(pos).1);
        }
    }
    out.extend(later.into_iter().map(|(_, e)| e));
    out
}

/// Events stored in MongoDB `events` (a full count: FerretDB scans, but only once per run).
async fn stored(env: &TestEnv) -> anyhow::Result<u64> {
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await?;
    Ok(mongo
        .database(&env.mongo_db)
        .collection::<Document>("events")
        .count_documents(mongodb::bson::doc! {})
        .await?)
}

async fn drain(events: &[Event], count: usize) -> anyhow::Result<Drained> {
    drain_expecting(events, events.len(), count).await
}

/// Drains `events` (of which `distinct` are distinct) with `count` worker processes.
async fn drain_expecting(events: &[Event], distinct: usize, count: usize) -> anyhow::Result<Drained> {
    let env = bench_env().await;
    let js = jetstream_of(&env).await?;
    // The workers start on an empty stream and the clock starts once every one is ready
    // (connected, migrated, indexed): a sustained rate, not a process start. The whole workload
    // is then published at once (raw JetStream takes it far faster than it is stored), and the
    // clock stops when every message is acknowledged and every learning path the events touched
    // is written, so the projection's cost is inside the window measured.
    let admins: Vec<SocketAddr> = (0..count).map(|_| free_addr()).collect();
    let processes: Vec<Service> = admins
        .iter()
        .map(|admin| Service::start("workers", &worker_env(&env, *admin)))
        .collect();
    for admin in &admins {
        wait_http(&format!("http://{admin}/readyz")).await?;
    }
    let servers_before = server_cpu();
    let workers_before: f64 = processes.iter().map(|p| cpu_seconds(p.pid())).sum();
    let started = Instant::now();
    publish(&js, &env, events, 100, "drain").await?;
    env.drained(Duration::from_secs(1_800)).await?;
    wait_paths_written(&env, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    // Where the workers' time went: busy seconds per stage, summed over the processes.
    let mut stages: BTreeMap<String, f64> = BTreeMap::new();
    for admin in &admins {
        let text = reqwest::get(format!("http://{admin}/metrics")).await?.text().await?;
        for (stage, seconds) in stage_seconds(&text) {
            *stages.entry(stage).or_default() += seconds;
        }
    }
    let worker_cpu: f64 = processes.iter().map(|p| cpu_seconds(p.pid())).sum::<f64>() - workers_before;
    let servers_after = server_cpu();
    for process in processes {
        process.stop();
    }
    let total = counted(&env).await?;
    anyhow::ensure!(total == distinct as i64, "counted {total} of {distinct} events");
    let stored = stored(&env).await?;
    anyhow::ensure!(stored == distinct as u64, "stored {stored} of {distinct} events");
    let per_event = |s: f64| s * 1e6 / distinct as f64;
    let server = |name| per_event(servers_after[name] - servers_before[name]);
    let drained = Drained {
        stages: stages.into_iter().map(|(k, v)| (k, v / elapsed)).collect(),
        rate: distinct as f64 / elapsed,
        worker_cpu_us: per_event(worker_cpu),
        store_cpu_us: server("MongoDB server"),
        postgres_cpu_us: server("PostgreSQL"),
    };
    env.cleanup().await;
    Ok(drained)
}

struct Lag {
    p50: String,
    p99: String,
    caught_up: bool,
}

/// Publishes at `offered` events/s for `duration` with one worker running, then reads the
/// worker's end-to-end lag histogram.
async fn paced_lag(events: &[Event], offered: f64, duration: Duration) -> anyhow::Result<Lag> {
    let env = bench_env().await;
    let js = jetstream_of(&env).await?;
    let admin = free_addr();
    let worker = Service::start("workers", &worker_env(&env, admin));
    let per_message = 100usize;
    let interval = Duration::from_secs_f64(per_message as f64 / offered.max(1.0));
    let mut tick = tokio::time::interval(interval);
    let started = Instant::now();
    let subject = Subjects::new(&env.nats.subject_prefix).events(PROJECT);
    let mut n = 0usize;
    let mut acks = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        let start = (n * per_message) % events.len().max(1);
        let mut chunk: Vec<Event> = events[start..(start + per_message).min(events.len())].to_vec();
        let now = chrono::Utc::now();
        for (i, event) in chunk.iter_mut().enumerate() {
            event.received_at = now;
            // Fresh identities: every published event is a new one.
            event.message_id = format!("lag-{n}-{i}");
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("lag-{n}").as_str());
        acks.push(
            js.publish_with_headers(subject.clone(), headers, serde_json::to_vec(&chunk)?.into())
                .await?,
        );
        n += 1;
    }
    for ack in acks {
        ack.await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let caught_up = env.outstanding().await == Some(0);
    env.drained(Duration::from_secs(600)).await?;
    wait_paths_written(&env, Duration::from_secs(600)).await?;
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await?.text().await?;
    worker.stop();
    env.cleanup().await;
    let buckets = histogram(&metrics, "workers_end_to_end_lag_seconds");
    Ok(Lag {
        p50: bucket_quantile(&buckets, 0.5),
        p99: bucket_quantile(&buckets, 0.99),
        caught_up,
    })
}

/// The `_sum` of `workers_stage_duration_seconds` by stage.
fn stage_seconds(text: &str) -> Vec<(String, f64)> {
    let prefix = "workers_stage_duration_seconds_sum{stage=\"";
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (stage, rest) = l.split_once('"')?;
            Some((stage.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The cumulative buckets (upper bound, count) of a Prometheus histogram.
fn histogram(text: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let count = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((le, count))
        })
        .collect()
}

/// The smallest bucket bound holding the `q` quantile.
fn bucket_quantile(buckets: &[(String, f64)], q: f64) -> String {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= total * q)
        .map_or_else(|| "?".to_owned(), |(le, _)| le.clone())
}

/// The seeds' stack storing the raw events, 100 per request, 32 clients; events/s acknowledged
/// (it answers after its insert_many).
async fn peer_rate(url: &str, raw: &[Value], run: usize) -> anyhow::Result<f64> {
    let bodies: Vec<Vec<u8>> = raw
        .chunks(100)
        .map(|chunk| serde_json::to_vec(&serde_json::json!({"batch": chunk, "writeKey": format!("peer-{run}")})))
        .collect::<Result<_, _>>()?;
    let http = reqwest::Client::new();
    let endpoint = format!("{}/v1/batch", url.trim_end_matches('/'));
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(bodies)
        .map(|body| {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            async move {
                let response = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .basic_auth(WRITE_KEY, Some(""))
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the peer answered {}",
                    response.status()
                );
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(raw.len() as f64 / started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// HTTP load.

async fn wait_http(url: &str) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < until, "{url} did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Phase `ingest`.

/// A test environment whose stream holds what a timed load publishes: TestEnv's 256 MiB fills in
/// seconds at JetStream's raw rate, and a full stream refuses publishes (discard new). Unbounded
/// (-1) rather than a large bound: JetStream reserves a stream's `max_bytes` up front, so a fixed
/// 16 GiB was refused ("insufficient storage") on a disk with less free, or beside another
/// stream's reservation; the server's own storage limit still bounds it.
async fn bench_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    env.nats.stream_max_bytes = -1;
    env
}

fn ingest_env(env: &TestEnv, addr: SocketAddr, admin: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", env.nats.url.clone()),
        ("NATS_STREAM", env.nats.stream.clone()),
        ("NATS_STREAM_MAX_BYTES", env.nats.stream_max_bytes.to_string()),
        ("NATS_SUBJECT_PREFIX", env.nats.subject_prefix.clone()),
        ("DATABASE_URL", env.database_url.clone()),
        ("INGEST_ADDR", addr.to_string()),
        ("INGEST_ADMIN_ADDR", admin.to_string()),
        ("INGEST_WRITE_KEY", WRITE_KEY.to_owned()),
        ("INGEST_PROJECT", PROJECT.to_owned()),
        // The bench measures the pipeline, not the rate limiter.
        ("INGEST_RATE_LIMIT_EVENTS_PER_SECOND", "0".to_owned()),
    ]
}

/// Request bodies of `per_request` events, with fresh message ids per body so none is a resend.
fn bodies(raw: &[Value], per_request: usize, count: usize) -> Vec<bytes::Bytes> {
    (0..count)
        .map(|b| {
            let batch: Vec<Value> = (0..per_request)
                .map(|i| {
                    let mut event = raw[(b * per_request + i) % raw.len()].clone();
                    event["messageId"] = Value::String(format!("b{b}-{i}"));
                    event
                })
                .collect();
            bytes::Bytes::from(serde_json::to_vec(&serde_json::json!({"batch": batch})).unwrap_or_default())
        })
        .collect()
}

async fn ingest(size: Size) -> anyhow::Result<()> {
    let raw = raw_events(size.learners.min(500));
    println!(
        "Each request is a Segment `/v1/batch` body of generated events; every 2xx waited for JetStream's PubAck. {} run(s) of {:.0} s each, medians.\n",
        size.runs, size.seconds
    );
    // Ceiling 1: raw JetStream publishing of 100-event bodies, acks pipelined.
    let mut js_rates = Vec::new();
    for _ in 0..size.runs {
        js_rates.push(raw_jetstream(&raw, size.seconds).await?);
    }
    let js_rate = median(js_rates);
    // Ceiling 2: a no-op hyper server (reads the body, answers 202), single events and 100 events.
    let addr = free_addr();
    let mut noop = std::process::Command::new(workspace_binary("suite"))
        .args(["noop", "--addr", &addr.to_string()])
        .spawn()
        .context("cannot start the no-op server")?;
    wait_http(&format!("http://{addr}/")).await?;
    let mut noop_rates = BTreeMap::new();
    for per_request in [1usize, 100] {
        let payloads = Arc::new(bodies(&raw, per_request, 1_000));
        let url = format!("http://{addr}/v1/batch");
        let mut runs = Vec::new();
        for _ in 0..size.runs {
            let (payloads, url) = (payloads.clone(), url.clone());
            let clients = if per_request == 1 { 64 } else { 32 };
            let l = bench::load::run(clients, size.seconds, move |http, n| {
                http.post(&url)
                    .header("content-type", "application/json")
                    .body(payloads[n % payloads.len()].clone())
            })
            .await;
            runs.push(l.per_second * per_request as f64);
        }
        noop_rates.insert(per_request, median(runs));
    }
    noop.kill().ok();
    noop.wait().ok();

    println!("| per request | clients | ingest events/s | p50 | p99 | vs raw JetStream ({} ev/s) | vs no-op hyper | errors | ingest CPU µs/event | NATS CPU µs/event |", rate(js_rate));
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut peak_rss = 0.0f64;
    for per_request in [1usize, 10, 100, 500] {
        let clients = match per_request {
            1 => 64,
            10 => 64,
            _ => 32,
        };
        let (mut runs, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..size.runs {
            let env = bench_env().await;
            jetstream_of(&env).await?;
            let (addr, admin) = (free_addr(), free_addr());
            let service = Service::start("ingest", &ingest_env(&env, addr, admin));
            wait_http(&format!("http://{admin}/readyz")).await?;
            let payloads = Arc::new(bodies(&raw, per_request, (20_000 / per_request).max(50)));
            let url = format!("http://{addr}/v1/batch");
            let (ingest_before, nats_before) = (cpu_seconds(service.pid()), group_cpu("nats-server"));
            let l = bench::load::run(clients, size.seconds, move |http, n| {
                http.post(&url)
                    .header("content-type", "application/json")
                    .basic_auth(WRITE_KEY, Some(""))
                    .body(payloads[n % payloads.len()].clone())
            })
            .await;
            let events = l.per_second * size.seconds * per_request as f64;
            cpus.push((
                (cpu_seconds(service.pid()) - ingest_before) * 1e6 / events,
                (group_cpu("nats-server") - nats_before) * 1e6 / events,
            ));
            peak_rss = peak_rss.max(peak_rss_mb(service.pid()));
            service.stop();
            env.cleanup().await;
            runs.push(l);
        }
        let events = median(runs.iter().map(|l| l.per_second * per_request as f64).collect());
        let p50 = median(runs.iter().map(|l| l.p50_ms).collect());
        let p99 = median(runs.iter().map(|l| l.p99_ms).collect());
        let errors: usize = runs.iter().map(|l| l.errors).sum();
        let vs_noop = noop_rates
            .get(&per_request)
            .map_or_else(|| "".to_owned(), |r| format!("{:.2}x", events / r));
        let ingest_cpu = median(cpus.iter().map(|c| c.0).collect());
        let nats_cpu = median(cpus.iter().map(|c| c.1).collect());
        println!(
            "| {per_request} | {clients} | {} | {p50:.1} ms | {p99:.1} ms | {:.2}x | {vs_noop} | {errors} | {ingest_cpu:.1} | {nats_cpu:.1} |",
            rate(events),
            events / js_rate
        );
    }
    println!(
        "\nCeilings, same run: raw JetStream {} events/s (100-event bodies, 256 acks in flight); no-op hyper server {} events/s with single events, {} with 100 per request.\n",
        rate(js_rate),
        rate(noop_rates[&1]),
        rate(noop_rates[&100])
    );
    println!("Peak RSS of ingest across these runs (each up to 64 clients as fast as they can): {peak_rss:.0} MB.\n");
    Ok(())
}

async fn raw_jetstream(raw: &[Value], seconds: f64) -> anyhow::Result<f64> {
    let env = bench_env().await;
    let js = jetstream_of(&env).await?;
    let subject = Subjects::new(&env.nats.subject_prefix).events(PROJECT);
    let payloads = bodies(raw, 100, 200);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut published = 0usize;
    while Instant::now() < deadline {
        while in_flight.len() < 256 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("raw-{published}").as_str());
            let ack = js
                .publish_with_headers(subject.clone(), headers, payloads[published % payloads.len()].clone())
                .await?;
            in_flight.push(std::future::IntoFuture::into_future(ack));
            published += 1;
        }
        if let Some(ack) = in_flight.next().await {
            ack?;
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    let r = published as f64 * 100.0 / started.elapsed().as_secs_f64();
    env.cleanup().await;
    Ok(r)
}

/// The no-op hyper server: reads the whole body and answers 202.
async fn noop(addr: SocketAddr) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                let _ = request.into_body().collect().await;
                let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")));
                *response.status_mut() = hyper::StatusCode::ACCEPTED;
                Ok::<_, std::convert::Infallible>(response)
            });
            let io = hyper_util::rt::TokioIo::new(socket);
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
                .ok();
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Phase `api`.

async fn api(size: Size) -> anyhow::Result<()> {
    let raw = raw_events(size.learners);
    let events = bench::normalised::events(PROJECT, &raw)?;
    let env = bench_env().await;
    let js = jetstream_of(&env).await?;
    publish(&js, &env, &events, 100, "api").await?;
    let worker = Service::start("workers", &worker_env(&env, free_addr()));
    env.drained(Duration::from_secs(1_800)).await?;
    worker.stop();

    let end = workload(size.learners).end;
    let from = end - chrono::Duration::days(29);
    // A learner and a course they have lesson progress in (so their learning path exists).
    let (user, course) = raw
        .iter()
        .find_map(|e| {
            let lesson = e["event"].as_str().is_some_and(|n| n.starts_with("Lesson"));
            match (lesson, e["userId"].as_str(), e["properties"]["course_id"].as_str()) {
                (true, Some(user), Some(course)) => Some((user.to_owned(), course.to_owned())),
                _ => None,
            }
        })
        .unwrap_or_default();
    let range = format!("from={from}&to={end}");
    let gets = [
        ("active-users, 30 days", format!("/v1/metrics/active-users?{range}")),
        (
            "active-users by week",
            format!("/v1/metrics/active-users?{range}&interval=week"),
        ),
        ("top events", format!("/v1/metrics/events/top?{range}")),
        ("top pages", format!("/v1/metrics/pages/top?{range}")),
        ("retention (D1/D7/D30)", format!("/v1/retention?{range}")),
        ("retention, 30-day matrix", format!("/v1/retention?{range}&matrix=30")),
        ("courses", "/v1/courses".to_owned()),
        (
            "course analytics, 30 days",
            format!("/v1/courses/{course}/analytics?{range}"),
        ),
        ("course learners", format!("/v1/courses/{course}/learners")),
        ("user stats", format!("/v1/users/{user}/stats")),
        ("user progress", format!("/v1/users/{user}/progress")),
        ("learning path", format!("/v1/users/{user}/learning-paths/{course}")),
    ];
    let funnel = serde_json::json!({
        "steps": ["product_view", "add_to_cart", "purchase"],
        "from": from, "to": end, "window": "7d"
    })
    .to_string();

    println!(
        "{} events of {} learners drained into the rollups; 16 keep-alive clients (and 1, for a lone request's latency), {:.0} s per endpoint, {} run(s), medians. Uncached: `API_CACHE_CAPACITY=0` (every request computed).\n",
        rate(events.len() as f64),
        size.learners,
        size.seconds,
        size.runs
    );
    println!(
        "| endpoint | cached req/s | cached p99 | uncached req/s | uncached p99 | uncached p99, 1 client |\n| --- | --- | --- | --- | --- | --- |"
    );
    // (endpoint, mode) → (req/s, p99 ms); modes: 0 cached, 1 uncached, 2 uncached with 1 client.
    let mut results: BTreeMap<(usize, usize), (f64, f64)> = BTreeMap::new();
    let mut peak = 0.0f64;
    for (mode, cached, clients) in [(0, true, 16), (1, false, 16), (2, false, 1)] {
        let (service, addr) = start_api(&env, if cached { 10_000 } else { 0 }).await?;
        let targets: Vec<(String, Option<String>)> = gets
            .iter()
            .map(|(_, path)| (path.clone(), None))
            .chain([("/v1/funnels".to_owned(), Some(funnel.clone()))])
            .collect();
        for (i, (path, body)) in targets.into_iter().enumerate() {
            let url = format!("http://{addr}{path}");
            let mut runs = Vec::new();
            for _ in 0..size.runs {
                let (url, body) = (url.clone(), body.clone());
                runs.push(
                    bench::load::run(clients, size.seconds, move |http, _| match &body {
                        Some(body) => http
                            .post(&url)
                            .bearer_auth(READ_KEY)
                            .header("content-type", "application/json")
                            .body(body.clone()),
                        None => http.get(&url).bearer_auth(READ_KEY),
                    })
                    .await,
                );
            }
            anyhow::ensure!(
                runs.iter().all(|l| l.errors == 0 && l.per_second > 0.0),
                "{path} failed under load"
            );
            results.insert(
                (i, mode),
                (
                    median(runs.iter().map(|l| l.per_second).collect()),
                    median(runs.iter().map(|l| l.p99_ms).collect()),
                ),
            );
        }
        peak = peak.max(peak_rss_mb(service.pid()));
        service.stop();
    }
    let names: Vec<&str> = gets
        .iter()
        .map(|(name, _)| *name)
        .chain(["funnel, 3 steps, 30 days"])
        .collect();
    for (i, name) in names.iter().enumerate() {
        let (c, u, lone) = (results[&(i, 0)], results[&(i, 1)], results[&(i, 2)]);
        println!(
            "| {name} | {} | {:.1} ms | {} | {:.1} ms | {:.1} ms |",
            rate(c.0),
            c.1,
            rate(u.0),
            u.1,
            lone.1
        );
    }
    println!("\nPeak RSS of the api across these runs: {peak:.0} MB.\n");

    // The dashboard as a browser loads it after a restart: its panels' requests at once, from a
    // new api process (an empty cache), until the last answers.
    let panels: Vec<(String, Option<String>)> = [
        format!("/v1/metrics/active-users?{range}&interval=day"),
        format!("/v1/metrics/events/top?{range}&limit=10"),
        format!("/v1/metrics/pages/top?{range}&limit=10"),
        "/v1/courses?limit=100".to_owned(),
        format!("/v1/retention?{range}"),
    ]
    .into_iter()
    .map(|path| (path, None))
    .chain([("/v1/funnels".to_owned(), Some(funnel.clone()))])
    .collect();
    let mut loads = Vec::new();
    for _ in 0..size.runs.max(3) {
        let (service, addr) = start_api(&env, 10_000).await?;
        let http = reqwest::Client::new();
        let started = Instant::now();
        let answers = futures::future::join_all(panels.iter().map(|(path, body)| {
            let url = format!("http://{addr}{path}");
            let request = match body {
                Some(body) => http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.clone()),
                None => http.get(url),
            };
            async move { request.bearer_auth(READ_KEY).send().await.map(|r| r.status()) }
        }))
        .await;
        loads.push(started.elapsed().as_secs_f64() * 1e3);
        service.stop();
        for (answer, (path, _)) in answers.into_iter().zip(&panels) {
            let status = answer.with_context(|| format!("{path} from an empty cache"))?;
            anyhow::ensure!(status.is_success(), "{path} from an empty cache: {status}");
        }
    }
    println!(
        "The dashboard's {} panel requests at once from a just-started api (empty cache), until the last answers: median {:.0} ms of {} restarts (the target: every panel within 2 s).\n",
        panels.len(),
        median(loads.clone()),
        loads.len()
    );
    env.cleanup().await;
    Ok(())
}

/// Starts an api on the bench's database with `cache_capacity` entries (0: every request
/// computed) and waits until it is ready.
async fn start_api(env: &TestEnv, cache_capacity: u64) -> anyhow::Result<(Service, SocketAddr)> {
    let (addr, admin) = (free_addr(), free_addr());
    let service = Service::start(
        "api",
        &[
            ("NATS_URL", env.nats.url.clone()),
            ("NATS_SUBJECT_PREFIX", env.nats.subject_prefix.clone()),
            ("DATABASE_URL", env.database_url.clone()),
            ("API_ADDR", addr.to_string()),
            ("API_ADMIN_ADDR", admin.to_string()),
            ("API_READ_KEY", READ_KEY.to_owned()),
            ("API_PROJECT", PROJECT.to_owned()),
            ("API_CACHE_CAPACITY", cache_capacity.to_string()),
        ],
    );
    wait_http(&format!("http://{admin}/readyz")).await?;
    Ok((service, addr))
}
