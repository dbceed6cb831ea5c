//! `workers`: telemetry, then config, then build, then consume until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
