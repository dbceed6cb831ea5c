//! `drain`: how fast workers empty a stream. Publishes a generated workload (normalised by ingest's
//! own decoder) into a fresh stream, starts N `workers` processes (the release binary beside this
//! one) and times them until the durable consumer has nothing pending or unacknowledged. The
//! baseline, measured in the same run, is a bare MongoDB bulk insert of the same documents: the
//! floor that the storage sets, which the workers' ratio is reported against.

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bench::Workload;
use clap::Parser;
use common::{event::Event, stream::Subjects};
use futures::{stream, StreamExt as _};
use mongodb::bson::RawDocumentBuf;
use test_support::TestEnv;

#[derive(Parser, Debug)]
#[command(
    name = "drain",
    about = "Measure workers' sustained events/s against the local servers."
)]
struct Args {
    /// Learners in the generated workload (about 50 events each over 30 days).
    #[arg(long, default_value_t = 1_000)]
    learners: usize,
    /// Worker process counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Events per JetStream message (what ingest's coalescing produces under load).
    #[arg(long, default_value_t = 100)]
    per_message: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = normalised_workload(args.learners)?;
    println!("workload: {} events from {} learners", events.len(), args.learners);

    let baseline = {
        let env = TestEnv::new().await;
        let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await?;
        let collection = mongo.database(&env.mongo_db).collection::<RawDocumentBuf>("baseline");
        let documents: Vec<RawDocumentBuf> = events
            .iter()
            .map(workers::store::to_raw_document)
            .collect::<anyhow::Result<_>>()?;
        let started = Instant::now();
        for chunk in documents.chunks(args.per_message) {
            collection.insert_many(chunk).ordered(false).await?;
        }
        events.len() as f64 / started.elapsed().as_secs_f64()
    };
    println!(
        "baseline: bare MongoDB insert_many of {} events: {baseline:.0} events/s",
        args.per_message
    );

    for count in &args.workers {
        let env = TestEnv::new().await;
        publish(&env, &events, args.per_message).await?;
        let started = Instant::now();
        let processes: Vec<test_support::Service> = (0..*count)
            .map(|_| test_support::Service::start("workers", &env.worker_env()))
            .collect();
        env.drained(Duration::from_secs(1_800)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        for process in processes {
            process.stop();
        }
        let rate = events.len() as f64 / elapsed;
        println!(
            "{count} worker(s): {} events in {elapsed:.1} s = {rate:.0} events/s ({:.2}x the bare insert baseline)",
            events.len(),
            rate / baseline
        );
    }
    Ok(())
}

/// The workload as ingest would have normalised it, for project `bench`.
fn normalised_workload(learners: usize) -> anyhow::Result<Vec<Event>> {
    let end = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let workload = Workload {
        learners,
        courses: 20,
        days: 30,
        lessons: 12,
        seed: 7,
        end,
    };
    bench::normalised::events("bench", &workload.generate().events)
}

async fn publish(env: &TestEnv, events: &[Event], per_message: usize) -> anyhow::Result<()> {
    let client = async_nats::connect(&env.nats.url).await?;
    let js = jetstream::new(client);
    common::stream::ensure_events_stream(&js, &env.nats).await?;
    let subject = Subjects::new(&env.nats.subject_prefix).events("bench");
    let messages: Vec<Vec<u8>> = events
        .chunks(per_message)
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let acks: Vec<anyhow::Result<()>> = stream::iter(messages.into_iter().enumerate())
        .map(|(n, payload)| {
            let (js, subject) = (js.clone(), subject.clone());
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("bench-{n}").as_str());
                js.publish_with_headers(subject, headers, payload.into()).await?.await?;
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    acks.into_iter()
        .collect::<anyhow::Result<Vec<()>>>()
        .context("publishing the workload")?;
    Ok(())
}
