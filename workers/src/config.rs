//! Every workers setting, from flags or environment variables (`workers --help` lists them).

use std::{net::SocketAddr, time::Duration};

use chrono::NaiveDate;
use common::config::{parse_duration, MongoConfig, NatsConfig, PostgresConfig};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers",
    version,
    about = "Stores and rolls up the event stream: JetStream in, MongoDB and PostgreSQL out."
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
    /// Most JetStream messages fetched and committed together (each holds up to a few hundred
    /// events, as ingest coalesces them).
    #[arg(long = "batch-size", env = "WORKERS_BATCH_SIZE", default_value_t = 64)]
    pub batch_size: usize,
    /// Longest a fetch waits to fill a batch before processing what it has.
    #[arg(long = "max-wait", env = "WORKERS_MAX_WAIT", default_value = "200ms", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// How long JetStream waits for an acknowledgement before redelivering a message.
    #[arg(long = "ack-wait", env = "WORKERS_ACK_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// Deliveries of one message before it is given up on.
    #[arg(long = "max-deliveries", env = "WORKERS_MAX_DELIVERIES", default_value_t = 10)]
    pub max_deliveries: i64,
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
    /// Fault testing only: abort the process at this point of the first batch that has events,
    /// as a kill -9 at that instruction would.
    #[arg(long = "failpoint", env = "WORKERS_FAILPOINT", hide = true, value_enum)]
    pub failpoint: Option<Failpoint>,
}

/// Where `--failpoint` aborts the process.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// After the MongoDB insert, before the PostgreSQL transaction.
    AfterStore,
    /// After the PostgreSQL commit, before the learning paths and the acks.
    AfterCommit,
    /// After acknowledging the first message of the batch, before the others.
    BetweenAcks,
}

/// `workers reconcile`: recompute the rollups of a project from MongoDB and compare.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers reconcile",
    about = "Recompute every rollup from the raw MongoDB events and print each difference; exits 1 if there is one."
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_well_formed_flag() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
        <super::ReconcileConfig as clap::CommandFactory>::command().debug_assert();
    }
}
