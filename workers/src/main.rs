//! `workers`: telemetry, then config, then build, then consume until SIGINT/SIGTERM. Or one of the
//! operator commands, which do their job and exit: `workers reconcile …` (check, and with `--fix`
//! repair, the rollups against the raw events) and `workers dlq list|replay|drop` (the
//! dead-letter stream).

use anyhow::Context as _;
use clap::Parser as _;

/// jemalloc, not glibc's malloc: a worker allocates and frees every event's strings and maps
/// once per batch, and a drain's profile put glibc's malloc, free and consolidation at a quarter
/// of the workers' CPU; with jemalloc the workers spend about 1.3 µs less per event
/// (bench/RESULTS.md). (mimalloc, tried before, moved the cost into page clearing.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("reconcile") => return reconcile(workers::ReconcileConfig::parse_from(std::env::args().skip(1))).await,
        Some("dlq") => return dlq(workers::DlqConfig::parse_from(std::env::args().skip(1))).await,
        _ => {}
    }
    // First: a SIGTERM from here on is a clean stop, even while still connecting.
    let shutdown = common::shutdown::shutdown_token();
    let config = workers::Config::parse();
    common::telemetry::init_tracing();
    let metrics = common::telemetry::install_metrics_recorder()?;
    workers::instruments::describe();
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let worker = workers::Worker::build(config).await?;
    tokio::spawn(common::admin::serve(
        admin_listener,
        worker.admin_state(Some(metrics)),
        shutdown.clone(),
    ));
    worker.run(shutdown).await
}

#[allow(clippy::print_stdout)] // The report is the command's output.
async fn reconcile(config: workers::ReconcileConfig) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&config.postgres.url).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}",
            common::config::redact(&config.postgres.url)
        )
    })?;
    let mongo = mongodb::Client::with_uri_str(&config.mongo.uri)
        .await
        .context("invalid MongoDB URI")?;
    let store = workers::store::EventStore::new(&mongo.database(&config.mongo.db), "1", false);
    let range = workers::reconcile::Range {
        project: config.project.clone(),
        from: config.from,
        to: config.to,
    };
    let mut differences = workers::reconcile(&pool, &store, &range).await?;
    for difference in &differences {
        println!("{difference}");
    }
    // What an operator (and scripts/chaos) compares with what clients sent.
    let stored = store.count_in_days(&range.project, range.from, range.to).await?;
    let counted: i64 = sqlx::query_scalar(
        "select coalesce(sum(cardinality(ids)), 0)::int8 from event_chunks where project = $1 and day between $2 and $3",
    )
    .bind(&range.project)
    .bind(range.from)
    .bind(range.to)
    .fetch_one(&pool)
    .await
    .context("cannot count the ledger's events")?;
    println!("{stored} event(s) stored in MongoDB and {counted} counted in the ledger in the range");
    println!(
        "{} difference(s) in project {} from {} to {}",
        differences.len(),
        config.project,
        config.from,
        config.to
    );
    if config.fix && !differences.is_empty() {
        let fixed = workers::reconcile::fix(&pool, &store, &range).await?;
        println!("rewrote {fixed} row(s) from the raw events; checking again");
        differences = workers::reconcile(&pool, &store, &range).await?;
        for difference in &differences {
            println!("{difference}");
        }
        println!("{} difference(s) left", differences.len());
    }
    if !differences.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // The listing is the command's output.
async fn dlq(config: workers::DlqConfig) -> anyhow::Result<()> {
    let nats = async_nats::connect(config.nats.servers())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
    let js = async_nats::jetstream::new(nats);
    let stream = format!("{}_DLQ", config.nats.stream);
    let records = workers::dead_letter::list(&js, &stream).await?;
    let selected = |select: &workers::DlqSelect| -> Vec<&workers::dead_letter::Record> {
        records
            .iter()
            .filter(|r| {
                select.all
                    || select.seq.contains(&r.sequence)
                    || select.reason.as_deref().is_some_and(|reason| r.reason == reason)
            })
            .collect()
    };
    match &config.command {
        workers::DlqCommand::List { reason } => {
            println!("sequence\ttime\treason\tsubject\tevents\tdetail");
            let shown: Vec<_> = records
                .iter()
                .filter(|r| reason.as_deref().is_none_or(|reason| r.reason == reason))
                .collect();
            for record in &shown {
                println!("{record}");
            }
            println!("{} dead letter(s) in {stream}", shown.len());
        }
        workers::DlqCommand::Replay { select } => {
            let chosen = selected(select);
            for record in &chosen {
                workers::dead_letter::replay(&js, &stream, record).await?;
                println!(
                    "replayed {} ({} event(s)) to {}",
                    record.sequence, record.events, record.subject
                );
            }
            println!("{} dead letter(s) replayed", chosen.len());
        }
        workers::DlqCommand::Drop { select } => {
            let chosen = selected(select);
            for record in &chosen {
                workers::dead_letter::drop_one(&js, &stream, record.sequence).await?;
            }
            println!("{} dead letter(s) dropped", chosen.len());
        }
    }
    Ok(())
}
