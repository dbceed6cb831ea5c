//! `ingest`: telemetry, then config, then build, then run until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;

/// jemalloc, as the workers: with glibc's malloc, 100-event requests spent about 5% of ingest's
/// CPU in page faults and `madvise` (each request's body, tape and message buffers of tens of
/// KB returned to the kernel and faulted back in); with jemalloc 1.5-1.7 → 1.4 µs per event
/// and about 8% more events/s, A/B alternating the two builds (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // First: a SIGTERM from here on is a clean stop, even while still connecting.
    let shutdown = common::shutdown::shutdown_token();
    let config = ingest::Config::parse();
    common::telemetry::init_tracing();
    let metrics = common::telemetry::install_metrics_recorder()?;
    ingest::instruments::describe();
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let app = ingest::App::build(config).await?;
    tokio::spawn(common::admin::serve(
        admin_listener,
        app.admin_state(Some(metrics)),
        shutdown.clone(),
    ));
    app.serve(listener, shutdown).await
}
