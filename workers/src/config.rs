//! Every workers setting, from flags or environment variables (`workers --help` lists them).

use std::{net::SocketAddr, time::Duration};

use chrono::NaiveDate;
use common::config::{parse_duration, MongoConfig, NatsConfig, PostgresConfig};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers",
    version,
    about = "Stores and rolls up the event stream: JetStream in, PostgreSQL and MongoDB out.",
    after_help = "Subcommands: `workers reconcile --help`, `workers dlq --help`."
)]
pub struct Config {
    /// Admin address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long = "admin-addr", env = "WORKERS_ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// Durable consumer name; every worker process with the same name shares the work.
    #[arg(long = "consumer", env = "WORKERS_CONSUMER", default_value = "workers")]
    pub consumer: String,
    /// Events per rollup transaction and MongoDB bulk insert: messages are gathered until they
    /// hold this many events (or the linger passes).
    #[arg(long = "batch-events", env = "WORKERS_BATCH_EVENTS", default_value_t = 5_000)]
    pub batch_events: usize,
    /// Longest a batch waits for more messages once it has one.
    #[arg(long = "batch-linger", env = "WORKERS_BATCH_LINGER", default_value = "50ms", value_parser = parse_duration)]
    pub batch_linger: Duration,
    /// Messages each pull request asks JetStream for.
    #[arg(long = "fetch-messages", env = "WORKERS_FETCH_MESSAGES", default_value_t = 64)]
    pub fetch_messages: usize,
    /// Messages delivered to all workers and not yet acknowledged, at most (JetStream's
    /// `max_ack_pending` of the durable consumer): bounds the work in flight.
    #[arg(long = "max-ack-pending", env = "WORKERS_MAX_ACK_PENDING", default_value_t = 2_048)]
    pub max_ack_pending: i64,
    /// Batches rolled up and waiting for their MongoDB insert, at most (how far the PostgreSQL
    /// stage may run ahead of the MongoDB stage), and batches being stored at once.
    #[arg(long = "pipeline-depth", env = "WORKERS_PIPELINE_DEPTH", default_value_t = 2)]
    pub pipeline_depth: usize,
    /// Documents per MongoDB `insert_many` call.
    #[arg(long = "insert-chunk", env = "WORKERS_INSERT_CHUNK", default_value_t = 1_000)]
    pub insert_chunk: usize,
    /// MongoDB `insert_many` calls in flight at once for one batch being stored.
    #[arg(long = "insert-concurrency", env = "WORKERS_INSERT_CONCURRENCY", default_value_t = 2)]
    pub insert_concurrency: usize,
    /// How long JetStream waits for an acknowledgement before redelivering a message (messages
    /// in the pipeline get an in-progress acknowledgement every third of it).
    #[arg(long = "ack-wait", env = "WORKERS_ACK_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Deliveries of one message after which it is moved to the dead-letter stream unprocessed
    /// (a message that keeps killing workers). JetStream's own delivery limit is off, so it can
    /// never drop a message first.
    #[arg(long = "max-deliveries", env = "WORKERS_MAX_DELIVERIES", default_value_t = 10)]
    pub max_deliveries: i64,
    /// First pause before retrying a batch after a transient failure (a store unreachable); it
    /// doubles up to `retry-max`.
    #[arg(long = "retry-initial", env = "WORKERS_RETRY_INITIAL", default_value = "250ms", value_parser = parse_duration)]
    pub retry_initial: Duration,
    /// Longest pause between two retries of a batch.
    #[arg(long = "retry-max", env = "WORKERS_RETRY_MAX", default_value = "10s", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// How often the `student_learning_paths` documents marked out of date are rewritten: each
    /// (student, course) at most once per interval, however many events touched it.
    #[arg(long = "paths-flush-interval", env = "WORKERS_PATHS_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub paths_flush_interval: Duration,
    /// Learning paths rewritten per flush at most (the rest wait for the next one).
    #[arg(long = "paths-flush-max", env = "WORKERS_PATHS_FLUSH_MAX", default_value_t = 5_000)]
    pub paths_flush_max: i64,
    /// How long the per-event ledger (`event_ids`, and the `event_chunks` funnels read) keeps an event,
    /// by event time: a client's resend of an event older than this is counted again. At least
    /// the api's longest funnel range.
    #[arg(long = "event-log-retention", env = "WORKERS_EVENT_LOG_RETENTION", default_value = "400d", value_parser = parse_duration)]
    pub event_log_retention: Duration,
    /// How long raw events stay in MongoDB `events`, by event time (0: for ever). Checked every
    /// hour; what is older is deleted, late arrivals included. `workers reconcile` can only check
    /// ranges still inside it. Keep it at most `WORKERS_EVENT_LOG_RETENTION`'s, so a resend of a
    /// deleted event is still recognised.
    #[arg(long = "raw-event-retention", env = "WORKERS_RAW_EVENT_RETENTION", default_value = "0s", value_parser = parse_duration)]
    pub raw_event_retention: Duration,
    /// User ordinals kept in memory (each saves a PostgreSQL lookup per batch).
    #[arg(long = "ordinal-cache", env = "WORKERS_ORDINAL_CACHE", default_value_t = 500_000)]
    pub ordinal_cache: u64,
    /// MongoDB write concern for raw events: `majority` (production) or a node count such as `1`.
    #[arg(
        long = "mongo-write-concern",
        env = "WORKERS_MONGO_WRITE_CONCERN",
        default_value = "majority"
    )]
    pub mongo_write_concern: String,
    /// Whether MongoDB must journal raw events before acknowledging them.
    #[arg(long = "mongo-journal", env = "WORKERS_MONGO_JOURNAL", default_value_t = true, action = clap::ArgAction::Set)]
    pub mongo_journal: bool,
    /// With FerretDB on its PostgreSQL backend: the PostgreSQL database it stores in, so that the
    /// workers index the `_id` lookups FerretDB would otherwise answer by scanning (ferretdb.rs).
    /// Unset (mongod, FerretDB on SQLite): nothing to do.
    #[arg(long = "ferretdb-postgresql-url", env = "WORKERS_FERRETDB_POSTGRESQL_URL")]
    pub ferretdb_postgresql_url: Option<String>,
    /// Fault testing only: abort the process at this point of the first batch that has events,
    /// as a kill -9 at that instruction would.
    #[arg(long = "failpoint", env = "WORKERS_FAILPOINT", hide = true, value_enum)]
    pub failpoint: Option<Failpoint>,
}

/// Where `--failpoint` aborts the process.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Inside the rollup transaction, after the ledger claim, before the commit.
    BeforeCommit,
    /// After the PostgreSQL commit, before the MongoDB insert.
    AfterCommit,
    /// After the MongoDB insert, before the acknowledgements.
    AfterStore,
    /// After acknowledging the first message of a batch, before the others.
    BetweenAcks,
}

/// `workers reconcile`: recompute the rollups of a project from MongoDB and compare.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers reconcile",
    about = "Recompute every rollup from the raw MongoDB events and print each difference; exits 1 if there is one (after --fix, if one remains)."
)]
pub struct ReconcileConfig {
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// The project to check.
    #[arg(long)]
    pub project: String,
    /// First day of the range (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub from: NaiveDate,
    /// Last day of the range (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub to: NaiveDate,
    /// Rewrite every differing row from the raw events, in one transaction that holds the
    /// project's workers back while it runs.
    #[arg(long)]
    pub fix: bool,
}

/// `workers dlq`: the dead-letter stream.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers dlq",
    about = "Inspect, replay or drop dead-lettered messages (`<stream>_DLQ`)."
)]
pub struct DlqConfig {
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DlqCommand {
    /// One line per dead letter: sequence, time, reason, subject, events, detail.
    List {
        /// Only those whose reason is this (`undecodable`, `poison_event`, `max_deliveries`, `unstorable`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Publish dead letters back into the events stream (after a fix), then delete them from the
    /// dead-letter stream. Their events keep the identity of the message they came from, so
    /// nothing is counted or stored twice.
    Replay {
        #[command(flatten)]
        select: DlqSelect,
    },
    /// Delete dead letters for good.
    Drop {
        #[command(flatten)]
        select: DlqSelect,
    },
}

#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct DlqSelect {
    /// The dead letters with these sequence numbers (from `list`).
    #[arg(long, value_delimiter = ',')]
    pub seq: Vec<u64>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    /// Every dead letter with this reason.
    #[arg(long)]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_well_formed_flag() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
        <super::ReconcileConfig as clap::CommandFactory>::command().debug_assert();
        <super::DlqConfig as clap::CommandFactory>::command().debug_assert();
    }
}
