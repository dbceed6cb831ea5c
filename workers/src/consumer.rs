//! The consume loop. Each round fetches up to `batch_size` messages from the durable pull consumer,
//! decodes them, stores the raw events in MongoDB, applies the rollups in one PostgreSQL transaction
//! and only then acknowledges the messages, so a crash anywhere before the ack means redelivery and
//! every step is idempotent. A message that cannot be decoded is terminated (it would never succeed);
//! a batch whose stores fail is negatively acknowledged with a delay and retried.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    AckKind,
};
use chrono::{SubsecRound as _, Utc};
use common::{
    admin::AdminState,
    event::Event,
    stream::{ensure_dead_letter_stream, ensure_events_stream, Subjects},
    telemetry::PrometheusHandle,
};
use futures::StreamExt as _;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::{
    changes,
    config::{Config, Failpoint},
    paths,
    rollup::{self, Delta},
    store::EventStore,
};

/// Delay before a failed batch is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct App {
    config: Arc<Config>,
    nats: async_nats::Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    store: EventStore,
    /// Where poison messages are copied, in the dead-letter stream.
    dead_letter_subject: String,
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
        let subjects = Subjects::new(&config.nats.subject_prefix);
        ensure_dead_letter_stream(&js, &config.nats).await?;
        let changes_subject = subjects.changes();
        let dead_letter_subject = subjects.dead_letter();
        tracing::info!(stream = %config.nats.stream, consumer = %config.consumer, mongo_db = %config.mongo.db, "workers ready");
        Ok(Self {
            config: Arc::new(config),
            nats,
            js,
            consumer,
            store,
            dead_letter_subject,
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
        let prune = tokio::spawn(prune_ledger(
            self.pool.clone(),
            self.config.nats.stream_max_age,
            shutdown.clone(),
        ));
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
        prune.abort();
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
        let mut batch: Vec<(jetstream::Message, String, Vec<Event>)> = Vec::with_capacity(messages.len());
        for message in messages {
            let info = message
                .info()
                .ok()
                .map(|info| (info.stream.to_owned(), info.stream_sequence, info.delivered));
            if info.as_ref().is_some_and(|(_, _, delivered)| *delivered > 1) {
                metrics::counter!("workers_redeliveries_total").increment(1);
            }
            let key = message_key(&message, info.as_ref().map(|(stream, seq, _)| (stream.as_str(), *seq)));
            let mut payload = message.payload.to_vec();
            match simd_json::serde::from_slice::<Vec<Event>>(&mut payload) {
                Ok(mut events) => {
                    events.iter_mut().for_each(to_millis);
                    batch.push((message, key, events));
                }
                Err(error) => self.dead_letter(&message, "undecodable", &error.to_string()).await,
            }
        }
        let events = batch.iter().map(|(_, _, events)| events.len()).sum::<usize>();
        let heartbeat = self.keep_alive(&batch);
        let outcome = self.store_and_roll_up(&batch).await;
        heartbeat.abort();
        match outcome {
            Ok(touched) => {
                for (n, (message, _, _)) in batch.iter().enumerate() {
                    if n == 1 {
                        self.failpoint(Failpoint::BetweenAcks, events);
                    }
                    if let Err(error) = message.ack().await {
                        // The work is durable and idempotent: a redelivery only costs time.
                        tracing::warn!(%error, "ack failed; the message will be redelivered");
                    }
                }
                metrics::counter!("workers_messages_processed_total").increment(batch.len() as u64);
                let now = Utc::now();
                let lag = metrics::histogram!("workers_end_to_end_lag_seconds");
                for (_, _, events) in &batch {
                    for event in events {
                        lag.record((now - event.received_at).num_milliseconds().max(0) as f64 / 1_000.0);
                    }
                }
                changes::publish(&self.nats, &self.changes_subject, &touched).await;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    messages = batch.len(),
                    "batch failed; it will be redelivered"
                );
                metrics::counter!("workers_batch_failures_total").increment(1);
                for (message, _, _) in &batch {
                    let exhausted = message
                        .info()
                        .is_ok_and(|info| info.delivered >= self.config.max_deliveries);
                    if exhausted {
                        self.dead_letter(message, "max_deliveries", &format!("{error:#}")).await;
                    } else {
                        message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await.ok();
                    }
                }
            }
        }
        metrics::histogram!("workers_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("workers_batch_events_size").record(events as f64);
    }

    /// Stores every event, then in one transaction claims the messages not yet applied and rolls up
    /// the events they own; then refreshes the learning paths the batch touched.
    async fn store_and_roll_up(
        &self,
        batch: &[(jetstream::Message, String, Vec<Event>)],
    ) -> anyhow::Result<Vec<rollup::Touched>> {
        let flat: Vec<(&Event, &str)> = batch
            .iter()
            .flat_map(|(_, key, events)| events.iter().map(move |event| (event, key.as_str())))
            .collect();
        let inserted = self.store.insert(&flat).await?;
        self.failpoint(Failpoint::AfterStore, flat.len());
        metrics::counter!("workers_events_stored_total").increment(inserted.stored as u64);
        metrics::counter!("workers_events_duplicate_total").increment(inserted.duplicates as u64);

        let started = Instant::now();
        let keys: Vec<&str> = batch.iter().map(|(_, key, _)| key.as_str()).collect();
        let mut tx = self.pool.begin().await.context("cannot begin the rollup transaction")?;
        let claimed: HashSet<String> = sqlx::query_scalar(
            "insert into applied_messages (message_key) select unnest($1::text[])
             on conflict do nothing returning message_key",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .context("cannot claim the batch's messages")?
        .into_iter()
        .collect();
        let counted = flat
            .iter()
            .zip(&inserted.owners)
            .filter(|((_, key), owner)| owner.as_str() == *key && claimed.contains(*key))
            .map(|((event, _), _)| *event);
        let delta = Delta::from_events(counted);
        rollup::apply(&mut tx, &delta)
            .await
            .context("cannot apply the rollups")?;
        tx.commit().await.context("cannot commit the rollups")?;
        self.failpoint(Failpoint::AfterCommit, flat.len());
        metrics::histogram!("workers_rollup_commit_duration_seconds").record(started.elapsed().as_secs_f64());

        let lessons: BTreeSet<(String, String, String)> = flat
            .iter()
            .filter(|(event, _)| {
                matches!(
                    event.event.as_str(),
                    "lesson_started" | "lesson_completed" | "video_progress"
                )
            })
            .filter_map(|(event, _)| {
                let course = event
                    .properties
                    .get("course_id")
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))?;
                Some((event.project.clone(), event.user_key().to_owned(), course))
            })
            .collect();
        paths::refresh(&self.pool, &self.mongo, &lessons).await?;
        Ok(delta.touched())
    }

    /// While a batch is processed, tells JetStream every third of the ack wait that its messages
    /// are still in progress, so a slow batch (a loaded database) is not redelivered to another
    /// worker while this one is still on it.
    fn keep_alive(&self, batch: &[(jetstream::Message, String, Vec<Event>)]) -> tokio::task::JoinHandle<()> {
        let messages: Vec<jetstream::Message> = batch.iter().map(|(message, _, _)| message.clone()).collect();
        let every = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for message in &messages {
                    message.ack_with(AckKind::Progress).await.ok();
                }
            }
        })
    }

    /// Aborts the process here if `--failpoint` names this point and the batch has events.
    fn failpoint(&self, here: Failpoint, events: usize) {
        if self.config.failpoint == Some(here) && events > 0 {
            tracing::error!(failpoint = ?here, events, "failpoint reached; aborting");
            std::process::abort();
        }
    }

    /// Copies a message that will never succeed to the dead-letter stream with the reason, then
    /// terminates it so it no longer blocks anything.
    async fn dead_letter(&self, message: &jetstream::Message, reason: &'static str, detail: &str) {
        metrics::counter!("workers_poison_messages_total", "reason" => reason).increment(1);
        tracing::error!(reason, detail, subject = %message.subject, "giving up on a message; moving it to the dead-letter stream");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Dead-Letter-Reason", reason);
        headers.insert(
            "Dead-Letter-Detail",
            detail.chars().take(512).collect::<String>().as_str(),
        );
        headers.insert("Dead-Letter-Subject", message.subject.as_str());
        let published = match self
            .js
            .publish_with_headers(self.dead_letter_subject.clone(), headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = published {
            // Not terminated: it is redelivered and given up on again, until the copy succeeds.
            tracing::warn!(%error, "cannot copy a message to the dead-letter stream");
            return;
        }
        if let Err(error) = message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, "cannot terminate a message");
        }
    }
}

/// The ledger key of a message: the `Nats-Msg-Id` ingest gave it (unique across streams, and the
/// same for a republished copy, which carries the same events), else its stream and sequence.
fn message_key(message: &jetstream::Message, position: Option<(&str, u64)>) -> String {
    if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
        return format!("id:{}", id.as_str());
    }
    match position {
        Some((stream, sequence)) => format!("seq:{stream}:{sequence}"),
        None => format!("seq:unknown:{}", uuid_like(&message.payload)),
    }
}

/// A stable fallback key from the payload bytes (FNV-1a), for a message without metadata.
fn uuid_like(payload: &[u8]) -> String {
    let hash = payload.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Times at the millisecond precision MongoDB keeps, so that rollups recomputed from the stored
/// events (reconcile) see exactly the times the incremental path saw.
fn to_millis(event: &mut Event) {
    let trim = |t: chrono::DateTime<Utc>| t.trunc_subsecs(3);
    event.ts = trim(event.ts);
    event.received_at = trim(event.received_at);
    event.timestamp = event.timestamp.map(trim);
    event.sent_at = event.sent_at.map(trim);
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

/// Deletes ledger rows of messages the stream can no longer redeliver (older than its max age,
/// plus a day), every ten minutes.
async fn prune_ledger(pool: sqlx::PgPool, max_age: Duration, shutdown: CancellationToken) {
    let keep = max_age + Duration::from_secs(86_400);
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    while !shutdown.is_cancelled() {
        tick.tick().await;
        let cutoff = Utc::now() - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        match sqlx::query("delete from applied_messages where applied_at < $1")
            .bind(cutoff)
            .execute(&pool)
            .await
        {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(rows = done.rows_affected(), "pruned the message ledger")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot prune the message ledger"),
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
