//! The api service: a JSON read API over what the workers keep in PostgreSQL (rollups, activity
//! bitmaps, the event-time ledger chunks funnels read, lesson progress), cached in memory and kept
//! fresh by the workers' change notifications, plus the dashboard page that reads it. No route
//! reads MongoDB: it is the raw store of record, which reconcile and replays read.

mod auth;
mod cache;
mod config;
mod error;
pub mod instruments;
pub mod openapi;
mod query;
mod routes;
mod streams;

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

/// The request parsers and validators, reachable for the fuzz targets (`fuzz/`); not an interface.
#[doc(hidden)]
pub mod parse {
    pub use crate::query::funnel::{parse_window, Step, StepRequest, MAX_STEPS, MAX_STEP_PROPERTIES, MAX_WINDOW_S};
    pub use crate::routes::extract::{bounded, date, path_id, Page, Range, RangeQuery};
    pub use crate::routes::funnel::FunnelRequest;
}

/// The running service's shared state: cheap handles.
#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    pool: sqlx::PgPool,
    /// Responses by (project, generation, normalised query).
    cache: cache::ResponseCache,
    /// Read keys looked up recently.
    keys: auth::KeyCache,
    /// Each project's persons (ids linked into one), until the workers change them.
    persons: query::persons::PersonsCache,
    jwt: Arc<auth::JwtKeys>,
    /// Live streams open, per credential and in all.
    streams: Arc<streams::StreamLimits>,
    /// Cancelled when the server shuts down, so that live streams end and the server can drain.
    shutdown: CancellationToken,
}

impl App {
    /// Connects to PostgreSQL (lazily: the api starts, and reports not ready, before it is up or
    /// before the workers have applied the schema it reads).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let statement_timeout_ms = config.statement_timeout.as_millis().max(1);
        let pool = PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    // Every `::date` of a timestamptz is a UTC day (docs/contract.md). The api's
                    // queries are small index lookups: JIT compilation would cost more than it saves.
                    let setup =
                        format!("set time zone 'UTC'; set jit = off; set statement_timeout = {statement_timeout_ms}");
                    sqlx::Executor::execute(connection, setup.as_str()).await.map(drop)
                })
            })
            .connect_lazy(&config.postgres.url)
            .context("invalid DATABASE_URL")?;
        tracing::info!(addr = %config.addr, project = %config.project, "api ready");
        Ok(Self {
            cache: cache::ResponseCache::new(config.cache_capacity, config.cache_ttl),
            keys: auth::key_cache(),
            persons: query::persons::PersonsCache::new(10_000),
            jwt: Arc::new(auth::JwtKeys::new(&config.jwt_secret, config.jwt_max_lifetime)),
            streams: streams::StreamLimits::new(config.max_streams, config.max_streams_per_key),
            config: Arc::new(config),
            pool,
            shutdown: CancellationToken::new(),
        })
    }

    /// The current persons of `project`, for the distinct counts (docs/contract.md §6).
    async fn persons(&self, project: &str) -> Result<Arc<query::persons::Persons>, ApiError> {
        self.persons.get(&self.pool, project).await
    }

    /// Ready while PostgreSQL answers with the schema this build reads.
    pub fn admin_state(&self, metrics: Option<PrometheusHandle>) -> AdminState {
        let pool = self.pool.clone();
        AdminState {
            metrics,
            readiness: Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    match common::schema::is_current(&pool).await {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            Err("the schema is older than this build: start the workers, which apply it".to_owned())
                        }
                        Err(e) => Err(format!("PostgreSQL does not answer: {e:#}")),
                    }
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
        let (header_read_timeout, drain) = (self.config.header_read_timeout, self.config.request_timeout);
        let service = hyper_util::service::TowerToHyperService::new(routes::router(self));
        let graceful = common::serve::accept_until(listener, service, header_read_timeout, shutdown).await;
        // Live streams end now; requests still running get up to the request timeout.
        own.cancel();
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!(
                ?drain,
                "requests still running after the drain; closing their connections"
            );
        }
        Ok(())
    }
}
