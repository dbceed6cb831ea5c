//! The consume loop. Each round fetches up to `batch_size` messages from the durable pull consumer,
//! decodes them, stores the raw events in MongoDB, applies the rollups in one PostgreSQL transaction
//! and only then acknowledges the messages, so a crash anywhere before the ack means redelivery and
//! every step is idempotent. A message that cannot be decoded is terminated (it would never succeed);
//! a batch whose stores fail is negatively acknowledged with a delay and retried.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    AckKind,
};
use chrono::Utc;
use common::{
    admin::AdminState,
    event::Event,
    stream::{ensure_events_stream, Subjects},
    telemetry::PrometheusHandle,
};
use futures::StreamExt as _;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::{changes, config::Config, rollup, store::EventStore};

/// Delay before a failed batch is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    nats: async_nats::Client,
    consumer: PullConsumer,
    store: EventStore,
    mongo: mongodb::Database,
    pool: sqlx::PgPool,
    changes_subject: String,
}

impl App {
    /// Connects to the three servers, applies migrations, creates indexes, the stream and the
    /// durable consumer.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&config.postgres.url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&config.postgres.url)))?;
        crate::MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply the PostgreSQL migrations")?;

        let mongo_client = mongodb::Client::with_uri_str(&config.mongo.uri)
            .await
            .with_context(|| format!("invalid MongoDB URI {}", redact(&config.mongo.uri)))?;
        let mongo = mongo_client.database(&config.mongo.db);
        let store = EventStore::new(&mongo, &config.mongo_write_concern, config.mongo_journal);
        store.create_indexes().await?;

        let nats = async_nats::ConnectOptions::new()
            .name("workers")
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
        let js = jetstream::new(nats.clone());
        let stream = ensure_events_stream(&js, &config.nats).await?;
        let consumer = stream
            .get_or_create_consumer(
                &config.consumer,
                pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliveries,
                    max_ack_pending: i64::try_from(config.batch_size * 8).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("cannot create or open the durable consumer {}", config.consumer))?;
        let changes_subject = Subjects::new(&config.nats.subject_prefix).changes();
        tracing::info!(stream = %config.nats.stream, consumer = %config.consumer, mongo_db = %config.mongo.db, "workers ready");
        Ok(Self {
            config: Arc::new(config),
            nats,
            consumer,
            store,
            mongo,
            pool,
            changes_subject,
        })
    }

    /// Ready while NATS is connected and MongoDB and PostgreSQL answer.
    pub fn admin_state(&self, metrics: Option<PrometheusHandle>) -> AdminState {
        let app = self.clone();
        AdminState {
            metrics,
            readiness: Arc::new(move || {
                let app = app.clone();
                Box::pin(async move {
                    if app.nats.connection_state() != async_nats::connection::State::Connected {
                        return Err("NATS is not connected".to_owned());
                    }
                    app.mongo
                        .run_command(mongodb::bson::doc! {"ping": 1})
                        .await
                        .map_err(|e| format!("MongoDB does not answer: {e}"))?;
                    sqlx::query("select 1")
                        .execute(&app.pool)
                        .await
                        .map_err(|e| format!("PostgreSQL does not answer: {e}"))?;
                    Ok(())
                })
            }),
        }
    }

    /// Consumes until `shutdown` is cancelled; the batch in flight is finished first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let pending = tokio::spawn(report_pending(self.consumer.clone(), shutdown.clone()));
        while !shutdown.is_cancelled() {
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break,
                fetched = self.fetch() => fetched,
            };
            match fetched {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => self.process(messages).await,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "fetch from JetStream failed; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
        pending.abort();
        self.nats.flush().await.ok();
        tracing::info!("workers stopped");
        Ok(())
    }

    async fn fetch(&self) -> anyhow::Result<Vec<jetstream::Message>> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(self.config.batch_size)
            .expires(self.config.max_wait)
            .messages()
            .await
            .context("cannot request a batch")?;
        let mut messages = Vec::with_capacity(self.config.batch_size);
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => messages.push(message),
                Err(error) => {
                    if messages.is_empty() {
                        return Err(anyhow::anyhow!(error).context("batch failed"));
                    }
                    break;
                }
            }
        }
        Ok(messages)
    }

    async fn process(&self, messages: Vec<jetstream::Message>) {
        let started = Instant::now();
        let mut events: Vec<Event> = Vec::new();
        let mut good = Vec::with_capacity(messages.len());
        for message in messages {
            if message.info().is_ok_and(|info| info.delivered > 1) {
                metrics::counter!("workers_redeliveries_total").increment(1);
            }
            let mut payload = message.payload.to_vec();
            match simd_json::serde::from_slice::<Vec<Event>>(&mut payload) {
                Ok(decoded) => {
                    events.extend(decoded);
                    good.push(message);
                }
                Err(error) => {
                    metrics::counter!("workers_poison_messages_total", "reason" => "undecodable").increment(1);
                    tracing::error!(%error, subject = %message.subject, "undecodable message; terminating it");
                    if let Err(error) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%error, "cannot terminate a message");
                    }
                }
            }
        }
        match self.store_and_roll_up(&events).await {
            Ok(touched) => {
                for message in &good {
                    if let Err(error) = message.ack().await {
                        // The work is durable and idempotent: a redelivery only costs time.
                        tracing::warn!(%error, "ack failed; the message will be redelivered");
                    }
                }
                metrics::counter!("workers_messages_processed_total").increment(good.len() as u64);
                let now = Utc::now();
                let lag = metrics::histogram!("workers_end_to_end_lag_seconds");
                for event in &events {
                    lag.record((now - event.received_at).num_milliseconds().max(0) as f64 / 1_000.0);
                }
                changes::publish(&self.nats, &self.changes_subject, &touched).await;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    messages = good.len(),
                    "batch failed; it will be redelivered"
                );
                metrics::counter!("workers_batch_failures_total").increment(1);
                for message in &good {
                    message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await.ok();
                }
            }
        }
        metrics::histogram!("workers_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("workers_batch_events_size").record(events.len() as f64);
    }

    async fn store_and_roll_up(&self, events: &[Event]) -> anyhow::Result<Vec<rollup::Touched>> {
        let inserted = self.store.insert(events).await?;
        metrics::counter!("workers_events_stored_total").increment(inserted.stored as u64);
        metrics::counter!("workers_events_duplicate_total").increment(inserted.duplicates as u64);
        let started = Instant::now();
        let touched = rollup::apply(&self.pool, events)
            .await
            .context("rollup transaction failed")?;
        metrics::histogram!("workers_rollup_commit_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(touched)
    }
}

/// Publishes the consumer's pending count as a gauge every few seconds.
async fn report_pending(mut consumer: PullConsumer, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            metrics::gauge!("workers_consumer_pending_messages").set(info.num_pending as f64);
            metrics::gauge!("workers_consumer_ack_pending_messages").set(info.num_ack_pending as f64);
        }
    }
}

/// A URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
