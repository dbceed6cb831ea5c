//! The api service: a JSON read API over the rollups in PostgreSQL and the raw events and learning
//! paths in MongoDB (CONTRACT.md §7), cached in memory and kept fresh by the workers' change
//! notifications, plus the dashboard page that reads it.

mod auth;
mod cache;
mod config;
mod courses;
mod error;
pub mod instruments;
mod metrics_routes;
pub mod openapi;
mod routes;
mod users;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use common::{admin::AdminState, stream::Subjects, telemetry::PrometheusHandle};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{sign, Claims, Role};
pub use config::Config;
pub use error::ApiError;
pub use routes::ROUTES;

/// The running service's shared state: cheap handles.
#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    pool: sqlx::PgPool,
    /// MongoDB: raw `events` (funnels) and `student_learning_paths`.
    mongo: mongodb::Database,
    /// Responses by (project, generation, normalised query).
    cache: cache::ResponseCache,
    /// Read keys looked up recently.
    keys: auth::KeyCache,
    jwt: Arc<auth::JwtKeys>,
    /// Cancelled when the server shuts down, so that live streams end and the server can drain.
    shutdown: CancellationToken,
}

impl App {
    /// Connects to PostgreSQL and MongoDB (lazily: the api starts, and reports not ready, before
    /// they are up).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|connection, _| {
                Box::pin(async move {
                    // Every `::date` of a timestamptz is a UTC day (CONTRACT.md §6). The api's
                    // queries are small index lookups: JIT compilation would cost more than it saves.
                    sqlx::Executor::execute(connection, "set time zone 'UTC'; set jit = off")
                        .await
                        .map(drop)
                })
            })
            .connect_lazy(&config.postgres.url)
            .context("invalid DATABASE_URL")?;
        let mongo = mongodb::Client::with_uri_str(&config.mongo.uri)
            .await
            .context("invalid MONGO_URI")?
            .database(&config.mongo.db);
        tracing::info!(addr = %config.addr, project = %config.project, "api ready");
        Ok(Self {
            cache: cache::ResponseCache::new(config.cache_capacity, config.cache_ttl),
            keys: auth::key_cache(),
            jwt: Arc::new(auth::JwtKeys::new(&config.jwt_secret)),
            config: Arc::new(config),
            pool,
            mongo,
            shutdown: CancellationToken::new(),
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

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests (live streams end).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let subject = Subjects::new(&self.config.nats.subject_prefix).changes();
        tokio::spawn(cache::listen(
            self.cache.clone(),
            self.config.nats.url.clone(),
            subject,
            self.shutdown.clone(),
        ));
        let own = self.shutdown.clone();
        let router = routes::router(self);
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                own.cancel();
            })
            .await
            .context("api server failed")
    }
}
