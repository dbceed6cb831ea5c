//! `workers`: telemetry, then config, then build, then consume until SIGINT/SIGTERM; or
//! `workers reconcile …`, which checks the rollups against the raw events and exits.

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("reconcile") {
        let config = workers::ReconcileConfig::parse_from(std::env::args().skip(1));
        return reconcile(config).await;
    }
    let config = workers::Config::parse();
    common::telemetry::init_tracing();
    let metrics = common::telemetry::install_metrics_recorder()?;
    workers::instruments::describe();
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let shutdown = common::shutdown::shutdown_token();
    let app = workers::App::build(config).await?;
    tokio::spawn(common::admin::serve(
        admin_listener,
        app.admin_state(Some(metrics)),
        shutdown.clone(),
    ));
    app.run(shutdown).await
}

#[allow(clippy::print_stdout)] // The report is the command's output.
async fn reconcile(config: workers::ReconcileConfig) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&config.postgres.url)
        .await
        .context("cannot connect to PostgreSQL")?;
    let mongo = mongodb::Client::with_uri_str(&config.mongo.uri)
        .await
        .context("invalid MongoDB URI")?;
    let store = workers::store::EventStore::new(&mongo.database(&config.mongo.db), "1", false);
    let differences = workers::reconcile(&pool, &store, &config.project, config.from, config.to).await?;
    for difference in &differences {
        println!("{difference}");
    }
    println!(
        "{} difference(s) in project {} from {} to {}",
        differences.len(),
        config.project,
        config.from,
        config.to
    );
    if !differences.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
