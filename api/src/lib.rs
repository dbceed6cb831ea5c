//! The api service: a small JSON read API over the rollups in PostgreSQL (CONTRACT.md §7).

mod config;
mod error;
pub mod instruments;
mod routes;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use common::{admin::AdminState, telemetry::PrometheusHandle};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ApiError;

/// The running service's shared state: cheap handles.
#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    pool: sqlx::PgPool,
}

impl App {
    /// Connects to PostgreSQL (lazily: the api starts, and reports not ready, before it is up).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.read_key.is_empty(), "the read key must not be empty");
        let pool = PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&config.postgres.url)
            .context("invalid DATABASE_URL")?;
        tracing::info!(addr = %config.addr, project = %config.project, "api ready");
        Ok(Self {
            config: Arc::new(config),
            pool,
        })
    }

    /// Ready while PostgreSQL answers.
    pub fn admin_state(&self, metrics: Option<PrometheusHandle>) -> AdminState {
        let pool = self.pool.clone();
        AdminState {
            metrics,
            readiness: Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    sqlx::query("select 1")
                        .execute(&pool)
                        .await
                        .map(drop)
                        .map_err(|e| format!("PostgreSQL does not answer: {e}"))
                })
            }),
        }
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let router = routes::router(self);
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("api server failed")
    }
}
