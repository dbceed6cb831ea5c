//! The worker: a pipeline from the durable JetStream consumer to PostgreSQL and MongoDB.
//!
//! ```text
//! fetch ──deliveries──▶ batch + roll up (PostgreSQL) ──rolled up──▶ store (MongoDB) + ack
//!   ▲ in-progress acks every ack_wait/3 for everything in the pipeline ▲
//! ```
//!
//! - **fetch** pulls messages and decodes each into a [`Delivery`]; a message that is not a JSON
//!   array of events, or was delivered more than `max_deliveries` times, goes to the dead-letter
//!   stream at once.
//! - **roll up** gathers deliveries into a [`Batch`] of about `batch_events` events, builds every
//!   event's MongoDB document (an event whose document cannot be built is poison before anything
//!   is counted), and runs one PostgreSQL transaction: the ledger claim (ledger.rs explains why
//!   that counts each event exactly once) and every rollup of the events it claimed.
//! - **store** inserts the documents of the events the batch owns into MongoDB in large unordered
//!   bulk inserts, then acknowledges every message of the batch.
//!
//! The two stages run at once on different batches (at most `pipeline_depth` rolled-up batches
//! wait for MongoDB), so neither store waits idle for the other; order between batches does not
//! matter to the ledger. Every failure is settled in one place, [`Worker::roll_up_isolating`] and
//! [`Worker::store`], by its [`WorkerError`] kind: transient failures retry the same batch in
//! place with backoff (no redelivery, no delivery counted); poison splits the batch in halves
//! until the events a store refuses stand alone, dead-letters each with its reason and counts the
//! rest, so one bad event costs the other events of its batch, of every project, one extra
//! transaction or two rather than a retry interval.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    AckKind,
};
use bytes::Bytes;
use chrono::{SubsecRound as _, Utc};
use common::{
    admin::AdminState,
    event::{Event, EventType},
    stream::{ensure_dead_letter_stream, ensure_events_stream, Subjects},
    telemetry::PrometheusHandle,
};
use futures::{stream, StreamExt as _};
use mongodb::bson::RawDocumentBuf;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    changes,
    config::{Config, Failpoint},
    dead_letter::{DeadLetters, Reason, MESSAGE_KEY_HEADER},
    error::WorkerError,
    identity,
    ledger::{self, Claim, Entry},
    ordinals::OrdinalCache,
    paths,
    rollup::{self, Delta},
    store::{self, EventStore},
};

/// How long a stopping worker goes on writing marked learning paths.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// One JetStream message and the events it carries.
pub struct Delivery {
    message: jetstream::Message,
    /// Identifies the message across redeliveries and replays (ledger.rs): the
    /// `Analytics-Message-Key` of a replayed dead letter, else the `Nats-Msg-Id` ingest gave it,
    /// else its stream position.
    key: String,
    /// `ledger::owner_of(key)`.
    owner: i64,
    /// Its stream sequence: the key of the in-progress registry.
    sequence: u64,
    events: Vec<Event>,
}

/// Messages rolled up and stored together.
#[derive(Default)]
pub struct Batch {
    deliveries: Vec<Delivery>,
    events: usize,
}

/// An event of a batch: which delivery, which of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Unit {
    delivery: usize,
    event: usize,
}

/// A batch whose rollups committed: what is left is storing its events and acknowledging.
struct RolledUp {
    batch: Batch,
    /// The events this batch stores, with their documents.
    documents: Vec<(Unit, RawDocumentBuf)>,
}

/// Why a retry loop stopped without success.
#[derive(Debug)]
struct ShuttingDown;

/// Messages in the pipeline, kept alive with in-progress acknowledgements, and since when the
/// pipeline has been empty (the learning-path flusher writes as soon as the stream goes quiet).
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<Pipeline>>);

#[derive(Default)]
struct Pipeline {
    messages: HashMap<u64, jetstream::Message>,
    /// Set when the last message left; None while any is in the pipeline (or none ever came).
    empty_since: Option<Instant>,
}

impl InFlight {
    fn add(&self, sequence: u64, message: &jetstream::Message) {
        let mut pipeline = self.lock();
        pipeline.messages.insert(sequence, message.clone());
        pipeline.empty_since = None;
    }

    fn remove(&self, sequence: u64) {
        let mut pipeline = self.lock();
        if pipeline.messages.remove(&sequence).is_some() && pipeline.messages.is_empty() {
            pipeline.empty_since = Some(Instant::now());
        }
    }

    fn snapshot(&self) -> Vec<jetstream::Message> {
        self.lock().messages.values().cloned().collect()
    }

    /// How long the pipeline has been empty, if it is.
    fn quiet_for(&self) -> Option<Duration> {
        self.lock().empty_since.map(|since| since.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pipeline> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The worker's shared state: cheap handles.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    nats: async_nats::Client,
    consumer: PullConsumer,
    pool: sqlx::PgPool,
    mongo: mongodb::Database,
    store: EventStore,
    ordinals: OrdinalCache,
    /// Identifications known committed (identity.rs).
    identified: identity::Known,
    dead_letters: DeadLetters,
    changes_subject: String,
    in_flight: InFlight,
}

impl Worker {
    /// Connects to the three servers, applies the migrations, creates the indexes, the streams and
    /// the durable consumer (or brings an existing consumer's settings up to date).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&config.postgres.url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL at {}",
                    common::config::redact(&config.postgres.url)
                )
            })?;
        common::schema::migrate(&pool).await?;

        let mongo_client = mongodb::Client::with_uri_str(&config.mongo.uri)
            .await
            .with_context(|| format!("invalid MongoDB URI {}", common::config::redact(&config.mongo.uri)))?;
        let mongo = mongo_client.database(&config.mongo.db);
        let store = EventStore::new(&mongo, &config.mongo_write_concern, config.mongo_journal);
        store.create_indexes().await?;
        if let Some(url) = &config.ferretdb_postgresql_url {
            // An optimisation: without it the workers are slower, not wrong.
            if let Err(error) = crate::ferretdb::index_id_lookups(url, &mongo, crate::ferretdb::LOOKED_UP_BY_ID).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot index FerretDB's _id lookups; learning-path upserts will scan"
                );
            }
        }

        let nats = async_nats::ConnectOptions::new()
            .name("workers")
            .retry_on_initial_connect()
            .connect(config.nats.servers())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
        let js = jetstream::new(nats.clone());
        let stream = ensure_events_stream(&js, &config.nats).await?;
        let consumer_config = pull::Config {
            durable_name: Some(config.consumer.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // Never dropped by JetStream: the workers dead-letter a message that keeps failing
            // themselves, so no message can vanish without a copy.
            max_deliver: -1,
            max_ack_pending: config.max_ack_pending,
            ..Default::default()
        };
        // Creating a durable consumer that exists updates its editable settings.
        let consumer = stream
            .create_consumer(consumer_config)
            .await
            .with_context(|| format!("cannot create or update the durable consumer {}", config.consumer))?;
        let subjects = Subjects::new(&config.nats.subject_prefix);
        ensure_dead_letter_stream(&js, &config.nats).await?;
        tracing::info!(stream = %config.nats.stream, consumer = %config.consumer, mongo_db = %config.mongo.db, "workers ready");
        Ok(Self {
            inner: Arc::new(Inner {
                ordinals: OrdinalCache::new(config.ordinal_cache),
                identified: identity::Known::new(config.ordinal_cache),
                dead_letters: DeadLetters::new(js.clone(), &subjects),
                changes_subject: subjects.changes(),
                config,
                nats,
                consumer,
                pool,
                mongo,
                store,
                in_flight: InFlight::default(),
            }),
        })
    }

    /// Ready while NATS is connected and MongoDB and PostgreSQL answer.
    pub fn admin_state(&self, metrics: Option<PrometheusHandle>) -> AdminState {
        let worker = self.clone();
        AdminState {
            metrics,
            readiness: Arc::new(move || {
                let inner = worker.inner.clone();
                Box::pin(async move {
                    if inner.nats.connection_state() != async_nats::connection::State::Connected {
                        return Err("NATS is not connected".to_owned());
                    }
                    inner
                        .mongo
                        .run_command(mongodb::bson::doc! {"ping": 1})
                        .await
                        .map_err(|e| format!("MongoDB does not answer: {e}"))?;
                    sqlx::query("select 1")
                        .execute(&inner.pool)
                        .await
                        .map_err(|e| format!("PostgreSQL does not answer: {e}"))?;
                    Ok(())
                })
            }),
        }
    }

    /// Consumes until `shutdown` is cancelled, then finishes what is in the pipeline.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let config = &self.inner.config;
        let background = CancellationToken::new();
        let tasks = [
            tokio::spawn(keep_alive(
                self.inner.in_flight.clone(),
                config.ack_wait,
                background.clone(),
            )),
            tokio::spawn(report_pending(self.inner.consumer.clone(), background.clone())),
            tokio::spawn(prune_ledger(
                self.inner.pool.clone(),
                config.event_log_retention,
                background.clone(),
            )),
            tokio::spawn(prune_raw_events(
                self.inner.pool.clone(),
                self.inner.store.clone(),
                config.raw_event_retention,
                background.clone(),
            )),
            tokio::spawn({
                let in_flight = self.inner.in_flight.clone();
                paths::run(
                    self.inner.pool.clone(),
                    self.inner.mongo.clone(),
                    paths::Schedule {
                        interval: config.paths_flush_interval,
                        max: config.paths_flush_max,
                        quiet: move || in_flight.quiet_for(),
                    },
                    background.clone(),
                )
            }),
        ];
        let (deliveries, receive_deliveries) = mpsc::channel(config.fetch_messages.max(1) * 2);
        let (rolled_up, receive_rolled_up) = mpsc::channel(config.pipeline_depth.max(1));
        let fetcher = tokio::spawn(self.clone().fetch(deliveries, shutdown.clone()));
        let roller = tokio::spawn(
            self.clone()
                .roll_up_loop(receive_deliveries, rolled_up, shutdown.clone()),
        );
        let storer = tokio::spawn(self.clone().store_loop(receive_rolled_up, shutdown.clone()));
        for stage in [fetcher, roller, storer] {
            stage.await.context("a pipeline stage panicked")?;
        }
        // The periodic flush may be part-way through marks read before the last commit: let it
        // finish, then flush until nothing this worker marked is left, so a clean stop leaves no
        // learning path out of date (0 also means another worker holds the lock and will do it).
        // Bounded: marks left after SHUTDOWN_FLUSH stay in PostgreSQL for the next worker's
        // flush, so a slow MongoDB server cannot hold a stop for long.
        background.cancel();
        for task in tasks {
            task.await.ok();
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            if Instant::now() >= deadline {
                tracing::warn!("learning paths still marked at shutdown; the next worker's flush writes them");
                break;
            }
            match paths::flush(&self.inner.pool, &self.inner.mongo, config.paths_flush_max).await {
                Ok(rewritten) if rewritten > 0 => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot flush the learning paths at shutdown"
                    );
                    break;
                }
            }
        }
        self.inner.nats.flush().await.ok();
        tracing::info!("workers stopped");
        Ok(())
    }

    /// Pulls messages until shutdown, decoding each into a [`Delivery`].
    async fn fetch(self, deliveries: mpsc::Sender<Delivery>, shutdown: CancellationToken) {
        let config = &self.inner.config;
        while !shutdown.is_cancelled() {
            let batch = self
                .inner
                .consumer
                .batch()
                .max_messages(config.fetch_messages.max(1))
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "cannot pull from JetStream; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => None,
                    next = batch.next() => next,
                };
                let message = match next {
                    None => break,
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "pull request ended");
                        break;
                    }
                };
                if let Some(delivery) = self.receive(message).await {
                    if deliveries.send(delivery).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Decodes one message; what can never be processed is dead-lettered here.
    async fn receive(&self, message: jetstream::Message) -> Option<Delivery> {
        let (sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(error) => {
                tracing::warn!(%error, subject = %message.subject, "a message without JetStream metadata; ignoring it");
                return None;
            }
        };
        self.inner.in_flight.add(sequence, &message);
        if delivered > 1 {
            metrics::counter!("workers_redeliveries_total").increment(1);
        }
        let key = message_key(&message, &self.inner.config.nats.stream, sequence);
        if delivered > self.inner.config.max_deliveries {
            let detail = format!(
                "delivered {delivered} times without being acknowledged (WORKERS_MAX_DELIVERIES is {})",
                self.inner.config.max_deliveries
            );
            self.dead_letter_message(&message, sequence, &key, Reason::MaxDeliveries, &detail, None)
                .await;
            return None;
        }
        let decoding = Instant::now();
        let decoded = decode(&message.payload);
        metrics::histogram!("workers_stage_duration_seconds", "stage" => "decode")
            .record(decoding.elapsed().as_secs_f64());
        let (events, undecodable) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                let detail = format!("not a JSON array of events: {error}");
                self.dead_letter_message(&message, sequence, &key, Reason::Undecodable, &detail, None)
                    .await;
                return None;
            }
        };
        if !undecodable.is_empty() {
            // The other events of the message go on; each undecodable one is set aside alone.
            for (raw, error) in &undecodable {
                let detail = format!("not a valid event: {error}");
                let published = self
                    .inner
                    .dead_letters
                    .publish(
                        Reason::Undecodable,
                        &detail,
                        &message.subject,
                        &key,
                        1,
                        Bytes::from(format!("[{raw}]")),
                    )
                    .await;
                if let Err(error) = published {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot dead-letter an undecodable event; the message will be redelivered"
                    );
                    message
                        .ack_with(AckKind::Nak(Some(self.inner.config.retry_initial)))
                        .await
                        .ok();
                    self.inner.in_flight.remove(sequence);
                    return None;
                }
            }
        }
        Some(Delivery {
            owner: ledger::owner_of(&key),
            key,
            sequence,
            events,
            message,
        })
    }

    /// Gathers batches and rolls each up, handing it to the store stage.
    async fn roll_up_loop(
        self,
        mut deliveries: mpsc::Receiver<Delivery>,
        rolled_up: mpsc::Sender<RolledUp>,
        shutdown: CancellationToken,
    ) {
        let config = &self.inner.config;
        loop {
            let Some(first) = deliveries.recv().await else { return };
            let mut batch = Batch::default();
            batch.push(first);
            let deadline = tokio::time::Instant::now() + config.batch_linger;
            while batch.events < config.batch_events {
                match tokio::time::timeout_at(deadline, deliveries.recv()).await {
                    Ok(Some(delivery)) => batch.push(delivery),
                    Ok(None) | Err(_) => break,
                }
            }
            let started = Instant::now();
            match self.roll_up_batch(batch, &shutdown).await {
                Ok(done) => {
                    metrics::histogram!("workers_stage_duration_seconds", "stage" => "rollup")
                        .record(started.elapsed().as_secs_f64());
                    if rolled_up.send(done).await.is_err() {
                        return;
                    }
                }
                Err((batch, ShuttingDown)) => self.give_back(batch).await,
            }
        }
    }

    /// Builds the documents, rolls the batch up (isolating poison), and dead-letters what a store
    /// refused.
    async fn roll_up_batch(
        &self,
        batch: Batch,
        shutdown: &CancellationToken,
    ) -> Result<RolledUp, (Batch, ShuttingDown)> {
        metrics::histogram!("workers_batch_events_size").record(batch.events as f64);
        let preparing = Instant::now();
        let Prepared {
            batch,
            units,
            copies,
            mut documents,
            mut poisoned,
        } = prepare(batch).await;
        metrics::histogram!("workers_stage_duration_seconds", "stage" => "prepare")
            .record(preparing.elapsed().as_secs_f64());
        let (claims, isolated) = match self.roll_up_isolating(&batch, &copies, units, shutdown).await {
            Ok(done) => done,
            Err(ShuttingDown) => return Err((batch, ShuttingDown)),
        };
        poisoned.extend(isolated);
        for (unit, reason) in &poisoned {
            if let Err(ShuttingDown) = self
                .dead_letter_event(&batch, *unit, Reason::PoisonEvent, reason, shutdown)
                .await
            {
                return Err((batch, ShuttingDown));
            }
        }
        // The copy stored is the one whose message claimed the event (ledger.rs).
        let documents = claims
            .into_iter()
            .filter_map(|(unit, claim)| match claim {
                Claim::New | Claim::Mine { copy: 0 } => Some(unit),
                Claim::Mine { copy } => copies.get(&unit).and_then(|c| c.get(copy - 1)).copied(),
                Claim::Theirs => None,
            })
            .filter_map(|unit| documents.remove(&unit).map(|d| (unit, d)))
            .collect();
        Ok(RolledUp { batch, documents })
    }

    /// Rolls `units` up, splitting on poison until the refused events stand alone; returns the
    /// claim of every event rolled up and the refused ones with their reasons.
    async fn roll_up_isolating(
        &self,
        batch: &Batch,
        copies: &HashMap<Unit, Vec<Unit>>,
        units: Vec<Unit>,
        shutdown: &CancellationToken,
    ) -> Result<(Vec<(Unit, Claim)>, Vec<(Unit, String)>), ShuttingDown> {
        let mut claims = Vec::with_capacity(units.len());
        let mut poisoned = Vec::new();
        let mut pending = vec![units];
        while let Some(part) = pending.pop() {
            if part.is_empty() {
                continue;
            }
            match self
                .retrying(shutdown, "rollup", || self.roll_up(batch, copies, &part))
                .await?
            {
                Ok(part_claims) => claims.extend(part.into_iter().zip(part_claims)),
                Err(reason) if part.len() == 1 => {
                    tracing::warn!(reason, "an event is refused by PostgreSQL; dead-lettering it alone");
                    poisoned.push((part[0], reason));
                }
                Err(reason) => {
                    tracing::info!(
                        events = part.len(),
                        reason,
                        "a store refused part of a batch; isolating the events it refuses"
                    );
                    let (left, right) = part.split_at(part.len() / 2);
                    pending.push(right.to_vec());
                    pending.push(left.to_vec());
                }
            }
        }
        Ok((claims, poisoned))
    }

    /// One rollup transaction over `units`: ordinals, ledger claim, every rollup of the events
    /// claimed, commit, change notifications.
    async fn roll_up(
        &self,
        batch: &Batch,
        copies: &HashMap<Unit, Vec<Unit>>,
        units: &[Unit],
    ) -> Result<Vec<Claim>, WorkerError> {
        let inner = &self.inner;
        // Every user, and the other id of every link, so that each id of a person has an ordinal.
        let users: BTreeSet<(&str, &str)> = units
            .iter()
            .map(|u| batch.event(*u))
            .flat_map(|e| {
                let linked = match e.kind {
                    EventType::Identify => e.anonymous_id.as_deref(),
                    EventType::Alias => e.previous_id.as_deref(),
                    _ => None,
                };
                std::iter::once((e.project.as_str(), e.user_key()))
                    .chain(linked.filter(|_| e.user_id.is_some()).map(|l| (e.project.as_str(), l)))
            })
            .collect();
        let ords = inner.ordinals.resolve(&inner.pool, users).await?;
        let started = Instant::now();
        let mut tx = inner
            .pool
            .begin()
            .await
            .map_err(|e| WorkerError::postgres(e, "beginning the rollup transaction"))?;
        let projects: BTreeSet<&str> = units.iter().map(|u| batch.event(*u).project.as_str()).collect();
        for project in &projects {
            // Shared: many workers at once; `workers reconcile --fix` takes it exclusively.
            sqlx::query("select pg_advisory_xact_lock_shared(hashtextextended($1, 0))")
                .bind(project)
                .execute(&mut *tx)
                .await
                .map_err(|e| WorkerError::postgres(e, "taking the project's rollup lock"))?;
        }
        let owner = |u: &Unit| batch.deliveries[u.delivery].owner;
        // Empty vectors do not allocate: only events with copies in other messages cost anything.
        let others: Vec<Vec<i64>> = units
            .iter()
            .map(|u| copies.get(u).map(|c| c.iter().map(owner).collect()).unwrap_or_default())
            .collect();
        // Looked up by borrowed keys: one entry per user, not two string copies per event.
        let ord_of: HashMap<(&str, &str), i32> =
            ords.iter().map(|((p, u), o)| ((p.as_str(), u.as_str()), *o)).collect();
        let entries: Vec<Entry<'_>> = units
            .iter()
            .zip(&others)
            .map(|(u, others)| {
                let event = batch.event(*u);
                Entry {
                    event,
                    owner: owner(u),
                    others,
                    user_ord: ord_of
                        .get(&(event.project.as_str(), event.user_key()))
                        .copied()
                        .unwrap_or_default(),
                }
            })
            .collect();
        let claims = ledger::claim(&mut tx, &entries).await?;
        self.failpoint(Failpoint::BeforeCommit);
        let counted: Vec<&Event> = entries
            .iter()
            .zip(&claims)
            .filter(|(_, claim)| **claim == Claim::New)
            .map(|(entry, _)| entry.event)
            .collect();
        let delta = Delta::from_events(counted.iter().copied());
        rollup::apply_known(&mut tx, &delta, &ords, Some(&inner.identified))
            .await
            .map_err(|e| WorkerError::postgres(e, "applying the rollups"))?;
        tx.commit()
            .await
            .map_err(|e| WorkerError::postgres(e, "committing the rollups"))?;
        inner.identified.committed(&delta);
        self.failpoint(Failpoint::AfterCommit);
        metrics::histogram!("workers_rollup_commit_duration_seconds").record(started.elapsed().as_secs_f64());
        let count = |wanted: fn(&Claim) -> bool| claims.iter().filter(|c| wanted(c)).count() as u64;
        metrics::counter!("workers_events_counted_total").increment(count(|c| *c == Claim::New));
        metrics::counter!("workers_events_redelivered_total").increment(count(|c| matches!(c, Claim::Mine { .. })));
        metrics::counter!("workers_events_resent_total").increment(count(|c| *c == Claim::Theirs));
        let now = Utc::now();
        let lag = metrics::histogram!("workers_end_to_end_lag_seconds");
        for event in &counted {
            lag.record((now - event.received_at).num_milliseconds().max(0) as f64 / 1_000.0);
        }
        changes::publish(&inner.nats, &inner.changes_subject, &delta.touched()).await;
        Ok(claims)
    }

    /// Stores each rolled-up batch and acknowledges its messages, up to `pipeline_depth` batches
    /// at once: the MongoDB server takes concurrent bulk inserts far faster than one at a time,
    /// and the order in which batches are acknowledged does not matter (ledger.rs).
    async fn store_loop(self, rolled_up: mpsc::Receiver<RolledUp>, shutdown: CancellationToken) {
        let batches = stream::unfold(
            rolled_up,
            |mut rx| async move { rx.recv().await.map(|done| (done, rx)) },
        );
        batches
            .map(|done| {
                let (worker, shutdown) = (self.clone(), shutdown.clone());
                async move {
                    let started = Instant::now();
                    match worker.store(done, &shutdown).await {
                        Ok(batch) => {
                            metrics::histogram!("workers_stage_duration_seconds", "stage" => "store")
                                .record(started.elapsed().as_secs_f64());
                            worker.acknowledge(batch).await;
                        }
                        Err((batch, ShuttingDown)) => worker.give_back(batch).await,
                    }
                }
            })
            .buffer_unordered(self.inner.config.pipeline_depth.max(1))
            .for_each(|()| async {})
            .await;
    }

    /// Inserts the batch's documents, retrying transient failures; a document MongoDB refuses is
    /// dead-lettered (its event is already counted: loudly).
    async fn store(&self, done: RolledUp, shutdown: &CancellationToken) -> Result<Batch, (Batch, ShuttingDown)> {
        let RolledUp { batch, documents } = done;
        let (units, documents): (Vec<Unit>, Vec<RawDocumentBuf>) = documents.into_iter().unzip();
        let config = &self.inner.config;
        let outcome = self
            .retrying(shutdown, "store", || async {
                self.inner
                    .store
                    .insert(&documents, config.insert_chunk, config.insert_concurrency)
                    .await
                    .map_err(|e| {
                        WorkerError::Transient(anyhow::Error::new(e).context("bulk insert into MongoDB `events`"))
                    })
            })
            .await;
        let inserted = match outcome {
            Ok(Ok(inserted)) => inserted,
            // `insert` reports refusals per document, never as poison.
            Ok(Err(_)) => store::Inserted::default(),
            Err(ShuttingDown) => return Err((batch, ShuttingDown)),
        };
        metrics::counter!("workers_events_stored_total").increment(inserted.stored as u64);
        metrics::counter!("workers_events_duplicate_total").increment(inserted.duplicates as u64);
        for (position, reason) in &inserted.rejected {
            let Some(unit) = units.get(*position) else { continue };
            tracing::error!(
                reason,
                "MongoDB refused an event that the rollups already counted; dead-lettering it"
            );
            if self
                .dead_letter_event(&batch, *unit, Reason::Unstorable, reason, shutdown)
                .await
                .is_err()
            {
                return Err((batch, ShuttingDown));
            }
        }
        self.failpoint(Failpoint::AfterStore);
        Ok(batch)
    }

    /// Acknowledges every message of a finished batch.
    async fn acknowledge(&self, batch: Batch) {
        for (n, delivery) in batch.deliveries.iter().enumerate() {
            if n == 1 {
                self.failpoint(Failpoint::BetweenAcks);
            }
            if let Err(error) = delivery.message.ack().await {
                // The work is durable and idempotent: a redelivery only costs time.
                tracing::warn!(%error, "ack failed; the message will be redelivered");
            }
            self.inner.in_flight.remove(delivery.sequence);
        }
        metrics::counter!("workers_messages_processed_total").increment(batch.deliveries.len() as u64);
    }

    /// Hands a batch back to JetStream unfinished (shutting down while a store is unreachable):
    /// redelivered later, to this worker or another.
    async fn give_back(&self, batch: Batch) {
        for delivery in &batch.deliveries {
            delivery.message.ack_with(AckKind::Nak(None)).await.ok();
            self.inner.in_flight.remove(delivery.sequence);
        }
    }

    /// Runs `step` until it succeeds or fails for what the data holds, retrying transient
    /// failures with backoff; stops when shutting down.
    async fn retrying<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        stage: &'static str,
        step: F,
    ) -> Result<Result<T, String>, ShuttingDown>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, WorkerError>>,
    {
        let config = &self.inner.config;
        let mut pause = config.retry_initial;
        loop {
            match step().await {
                Ok(value) => return Ok(Ok(value)),
                Err(WorkerError::Poison(reason)) => return Ok(Err(reason)),
                Err(WorkerError::Transient(error)) => {
                    metrics::counter!("workers_transient_failures_total", "stage" => stage).increment(1);
                    tracing::warn!(stage, error = format!("{error:#}"), retry_in = ?pause, "a batch failed; retrying it");
                    if shutdown.is_cancelled() {
                        return Err(ShuttingDown);
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(ShuttingDown),
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(config.retry_max);
                }
            }
        }
    }

    /// Dead-letters one event of a batch, retrying until the dead-letter stream has it.
    async fn dead_letter_event(
        &self,
        batch: &Batch,
        unit: Unit,
        reason: Reason,
        detail: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), ShuttingDown> {
        let delivery = &batch.deliveries[unit.delivery];
        let event = &delivery.events[unit.event];
        let payload: Bytes = serde_json::to_vec(&[event]).unwrap_or_default().into();
        self.retrying(shutdown, "dead_letter", || async {
            self.inner
                .dead_letters
                .publish(
                    reason,
                    detail,
                    &delivery.message.subject,
                    &delivery.key,
                    1,
                    payload.clone(),
                )
                .await
                .map_err(WorkerError::Transient)
        })
        .await
        .map(drop)
    }

    /// Dead-letters a whole message and terminates it; if the copy fails, the message is left to
    /// be redelivered and tried again.
    async fn dead_letter_message(
        &self,
        message: &jetstream::Message,
        sequence: u64,
        key: &str,
        reason: Reason,
        detail: &str,
        events: Option<usize>,
    ) {
        tracing::error!(reason = reason.code(), detail, subject = %message.subject, "giving up on a message; moving it to the dead-letter stream");
        let published = self
            .inner
            .dead_letters
            .publish(
                reason,
                detail,
                &message.subject,
                key,
                events.unwrap_or(0),
                message.payload.clone(),
            )
            .await;
        match published {
            Ok(()) => {
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "cannot terminate a dead-lettered message; it will be redelivered and dead-lettered again (the copy is deduplicated)");
                }
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot copy a message to the dead-letter stream; it will be redelivered"
            ),
        }
        self.inner.in_flight.remove(sequence);
    }

    /// Aborts the process here if `--failpoint` names this point (fault tests only).
    fn failpoint(&self, here: Failpoint) {
        if self.inner.config.failpoint == Some(here) {
            tracing::error!(failpoint = ?here, "failpoint reached; aborting");
            std::process::abort();
        }
    }
}

impl Batch {
    fn push(&mut self, delivery: Delivery) {
        self.events += delivery.events.len();
        self.deliveries.push(delivery);
    }

    fn event(&self, unit: Unit) -> &Event {
        &self.deliveries[unit.delivery].events[unit.event]
    }
}

/// A batch ready to roll up: its distinct events, their later copies, the MongoDB documents of
/// all of them, and the events whose document cannot be built (poison).
struct Prepared {
    batch: Batch,
    /// The first copy of each distinct event.
    units: Vec<Unit>,
    /// The later copies of an event carried by other messages (ledger::group_copies), by its
    /// first copy; only events with such copies are present.
    copies: HashMap<Unit, Vec<Unit>>,
    documents: HashMap<Unit, RawDocumentBuf>,
    poisoned: Vec<(Unit, String)>,
}

/// Groups the batch's events (ledger::group_copies) and builds their MongoDB documents, off the
/// async threads.
async fn prepare(batch: Batch) -> Prepared {
    let built = tokio::task::spawn_blocking(move || {
        let all: Vec<Unit> = batch
            .deliveries
            .iter()
            .enumerate()
            .flat_map(|(d, delivery)| (0..delivery.events.len()).map(move |e| Unit { delivery: d, event: e }))
            .collect();
        let ids: Vec<Uuid> = all
            .iter()
            .map(|u| {
                let event = batch.event(*u);
                ledger::event_key(&event.project, &event.message_id)
            })
            .collect();
        let owners: Vec<i64> = all.iter().map(|u| batch.deliveries[u.delivery].owner).collect();
        let mut prepared = Prepared {
            units: Vec::with_capacity(all.len()),
            copies: HashMap::new(),
            documents: HashMap::with_capacity(all.len()),
            poisoned: Vec::new(),
            batch: Batch::default(),
        };
        for group in ledger::group_copies(&ids, &owners) {
            let unit = all[group.first];
            match store::to_raw_document(batch.event(unit)) {
                Ok(document) => {
                    prepared.units.push(unit);
                    prepared.documents.insert(unit, document);
                }
                Err(error) => {
                    // Its copies are the same event: as unbuildable.
                    prepared
                        .poisoned
                        .push((unit, format!("its MongoDB document cannot be built: {error:#}")));
                    continue;
                }
            }
            let mut copies = Vec::new();
            for other in group.others.into_iter().map(|i| all[i]) {
                if let Ok(document) = store::to_raw_document(batch.event(other)) {
                    prepared.documents.insert(other, document);
                    copies.push(other);
                }
            }
            if !copies.is_empty() {
                prepared.copies.insert(unit, copies);
            }
        }
        prepared.batch = batch;
        prepared
    })
    .await;
    match built {
        Ok(built) => built,
        // Building documents does not panic; if it did, the process is in no state to go on.
        Err(error) => {
            tracing::error!(%error, "preparing a batch panicked");
            std::process::abort();
        }
    }
}

/// Elements of a payload that are not events: (the element, why).
pub type Undecodable = Vec<(String, String)>;

/// The events of a message payload (a JSON array), and the elements that are not events, with
/// why. Fails only when the payload is not a JSON array at all.
pub fn decode(payload: &[u8]) -> Result<(Vec<Event>, Undecodable), String> {
    let mut bytes = payload.to_vec();
    if let Ok(mut events) = simd_json::serde::from_slice::<Vec<Event>>(&mut bytes) {
        events.iter_mut().for_each(to_millis);
        return Ok((events, Vec::new()));
    }
    // Slow path, only for a message with something wrong in it: one element at a time.
    let raw: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(raw.len());
    let mut bad = Vec::new();
    for element in raw {
        match serde_json::from_str::<Event>(element.get()) {
            Ok(mut event) => {
                to_millis(&mut event);
                events.push(event);
            }
            Err(error) => bad.push((element.get().to_owned(), error.to_string())),
        }
    }
    Ok((events, bad))
}

/// The key of a message (see [`Delivery::key`]).
fn message_key(message: &jetstream::Message, stream: &str, sequence: u64) -> String {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    if let Some(key) = header(MESSAGE_KEY_HEADER).filter(|k| !k.is_empty()) {
        return key;
    }
    if let Some(id) = header("Nats-Msg-Id").filter(|k| !k.is_empty()) {
        return format!("id:{id}");
    }
    format!("seq:{stream}:{sequence}")
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

/// Tells JetStream every third of the ack wait that the messages in the pipeline are still being
/// worked on, so a slow batch (a loaded store, a long retry) is not redelivered meanwhile.
async fn keep_alive(in_flight: InFlight, ack_wait: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval((ack_wait / 3).max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for message in in_flight.snapshot() {
            message.ack_with(AckKind::Progress).await.ok();
        }
    }
}

/// Publishes the consumer's pending counts as gauges every few seconds.
async fn report_pending(mut consumer: PullConsumer, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(info) = consumer.info().await {
            metrics::gauge!("workers_consumer_pending_messages").set(info.num_pending as f64);
            metrics::gauge!("workers_consumer_ack_pending_messages").set(info.num_ack_pending as f64);
        }
    }
}

/// Waits for the next `tick` of a retention task, then gives the time before which data has
/// expired; `None` once `shutdown` is cancelled.
async fn next_cutoff(
    tick: &mut tokio::time::Interval,
    retention: Duration,
    shutdown: &CancellationToken,
) -> Option<chrono::DateTime<Utc>> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        _ = tick.tick() => Some(Utc::now() - chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX)),
    }
}

/// Deletes raw events older than `retention` (zero: never) from MongoDB, every hour, project by
/// project (every project with events has a `project_counters` row).
async fn prune_raw_events(pool: sqlx::PgPool, store: EventStore, retention: Duration, shutdown: CancellationToken) {
    if retention.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(3_600));
    while let Some(cutoff) = next_cutoff(&mut tick, retention, &shutdown).await {
        if let Err(error) = prune_raw_events_once(&pool, &store, cutoff, &shutdown).await {
            tracing::warn!(%error, "cannot prune raw events");
        }
    }
}

/// One pass of [`prune_raw_events`]: every project's events before `cutoff`; how many.
pub async fn prune_raw_events_once(
    pool: &sqlx::PgPool,
    store: &EventStore,
    cutoff: chrono::DateTime<Utc>,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let projects: Vec<String> = sqlx::query_scalar("select project from project_counters order by project")
        .fetch_all(pool)
        .await?;
    let mut total = 0;
    for project in projects {
        if shutdown.is_cancelled() {
            break;
        }
        let deleted = store.delete_before(&project, cutoff).await?;
        metrics::counter!("workers_raw_events_pruned_total").increment(deleted);
        total += deleted;
    }
    Ok(total)
}

/// Deletes ledger rows of events older than the retention, in bounded batches, every hour.
async fn prune_ledger(pool: sqlx::PgPool, retention: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3_600));
    while let Some(cutoff) = next_cutoff(&mut tick, retention, &shutdown).await {
        loop {
            match ledger::prune(&pool, cutoff, 100).await {
                Ok(0) => break,
                Ok(rows) => {
                    metrics::counter!("workers_ledger_pruned_total").increment(rows);
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot prune the event ledger");
                    break;
                }
            }
        }
    }
}
