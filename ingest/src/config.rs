//! Every ingest setting, from flags or environment variables (`ingest --help` lists them).

use std::{net::SocketAddr, time::Duration};

use common::{
    config::{parse_duration, NatsConfig, PostgresConfig},
    project::ProjectId,
};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "ingest",
    version,
    about = "Segment-compatible event ingest: HTTP in, JetStream out."
)]
pub struct Config {
    /// Public address for the event endpoints (`/v1/batch`, ...).
    #[arg(long = "addr", env = "INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Admin address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long = "admin-addr", env = "INGEST_ADMIN_ADDR", default_value = "127.0.0.1:9101")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Where the write keys are (`api_keys`, created by `api keys create --project P --scope write`).
    /// Connected lazily: with a static key configured, ingest starts, serves that key and is ready
    /// without PostgreSQL; without one, `/readyz` also needs PostgreSQL to answer.
    #[command(flatten)]
    pub postgres: PostgresConfig,
    /// Optional static (bootstrap) write key, accepted besides the keys stored in PostgreSQL, for
    /// demos and first set-up. Clients present keys as Basic auth, Bearer, `writeKey` in the body
    /// or `?writeKey=`.
    #[arg(long = "write-key", env = "INGEST_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,
    /// The project (tenant) whose events the static write key sends.
    #[arg(long = "project", env = "INGEST_PROJECT", default_value = "default")]
    pub project: ProjectId,
    /// Browser origins allowed to send with the static write key, comma-separated
    /// (`https://learn.example.com`); unset: every origin. Keys from PostgreSQL follow their
    /// project's list (`api origins set`).
    #[arg(long = "allowed-origins", env = "INGEST_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = common::origins::normalise)]
    pub allowed_origins: Vec<String>,
    /// How long a key lookup (found or not) is cached: a revoked key stops working, and a new one
    /// starts working, within this time.
    #[arg(long = "key-cache-ttl", env = "INGEST_KEY_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub key_cache_ttl: Duration,
    #[command(flatten)]
    pub rate_limit: RateLimit,
    #[command(flatten)]
    pub coalescing: Coalescing,
    #[command(flatten)]
    pub limits: Limits,
    /// Longest ingest waits for JetStream to acknowledge a request's events before answering 503.
    #[arg(long = "publish-timeout", env = "INGEST_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_timeout: Duration,
    /// Client clock skew (|receivedAt − sentAt|) beyond which event times are corrected by it.
    #[arg(long = "max-clock-skew", env = "INGEST_MAX_CLOCK_SKEW", default_value = "60s", value_parser = parse_duration)]
    pub max_clock_skew: Duration,
    /// Events older than this (by corrected time) are stored but flagged `historical`.
    #[arg(long = "historical-horizon", env = "INGEST_HISTORICAL_HORIZON", default_value = "30d", value_parser = parse_duration)]
    pub historical_horizon: Duration,
    /// On shutdown, how long in-flight requests may take to finish before connections are closed.
    #[arg(long = "shutdown-grace", env = "INGEST_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The per-key token bucket: each event takes a token; an empty bucket answers 429 with the
/// seconds until enough tokens are back in `Retry-After`.
#[derive(clap::Args, Debug, Clone)]
pub struct RateLimit {
    /// Events per second one key may send, sustained (0 turns the limit off).
    #[arg(
        long = "rate-limit-events-per-second",
        env = "INGEST_RATE_LIMIT_EVENTS_PER_SECOND",
        default_value_t = 50_000
    )]
    pub events_per_second: u32,
    /// Events one key may send in a burst above the sustained rate (the bucket's size).
    #[arg(
        long = "rate-limit-burst",
        env = "INGEST_RATE_LIMIT_BURST",
        default_value_t = 500_000
    )]
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            events_per_second: 50_000,
            burst: 500_000,
        }
    }
}

/// How the publisher coalesces the events of concurrent requests into JetStream messages (see
/// `publisher.rs`).
#[derive(clap::Args, Debug, Clone)]
pub struct Coalescing {
    /// Most events in one JetStream message (fewer when the server's payload limit is reached first).
    #[arg(
        long = "publish-max-events",
        env = "INGEST_PUBLISH_MAX_EVENTS",
        default_value_t = 1_000
    )]
    pub max_events: usize,
    /// Longest a message waits for more requests' events before it is published; 0 publishes what
    /// is queued at once.
    #[arg(long = "publish-linger", env = "INGEST_PUBLISH_LINGER", default_value = "1ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Messages published and not yet acknowledged, at most; beyond it requests queue.
    #[arg(
        long = "publish-max-unacked",
        env = "INGEST_PUBLISH_MAX_UNACKED",
        default_value_t = 64
    )]
    pub max_unacked: usize,
    /// Requests queued for the publisher, at most; beyond it, 503.
    #[arg(long = "publish-queue", env = "INGEST_PUBLISH_QUEUE", default_value_t = 10_000)]
    pub queue: usize,
}

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            max_events: 1_000,
            linger: Duration::from_millis(1),
            max_unacked: 64,
            queue: 10_000,
        }
    }
}

/// Bounds on what one request may carry and on the work in flight.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Largest request body on the wire, in bytes (413 beyond).
    #[arg(long = "max-body-bytes", env = "INGEST_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest request body after decompression, in bytes (413 beyond).
    #[arg(long = "max-decoded-bytes", env = "INGEST_MAX_DECODED_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_decoded_bytes: usize,
    /// Memory reserved, over all requests at once, for bodies being decompressed and parsed:
    /// each request reserves twice its bound (the wire length uncompressed; for gzip at most
    /// 1,032 times it, deflate's largest ratio; for zstd `max_decoded_bytes`) before it decodes,
    /// and waits its turn (503 after `request_timeout`) when the budget is spent. This is what
    /// bounds ingest's memory before a body `writeKey` is checked.
    #[arg(long = "max-decoding-bytes", env = "INGEST_MAX_DECODING_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_decoding_bytes: usize,
    /// Most events in one batch (413 beyond).
    #[arg(long = "max-batch-events", env = "INGEST_MAX_BATCH_EVENTS", default_value_t = 1_000)]
    pub max_batch_events: usize,
    /// Largest single event once normalised, in bytes of JSON (that event is rejected).
    #[arg(long = "max-event-bytes", env = "INGEST_MAX_EVENT_BYTES", default_value_t = 64 * 1024)]
    pub max_event_bytes: usize,
    /// Deepest nesting of objects and arrays inside properties, context and traits.
    #[arg(long = "max-property-depth", env = "INGEST_MAX_PROPERTY_DEPTH", default_value_t = 16)]
    pub max_property_depth: usize,
    /// Events waiting for a JetStream acknowledgement across all requests; beyond it, 503.
    #[arg(
        long = "max-in-flight-events",
        env = "INGEST_MAX_IN_FLIGHT_EVENTS",
        default_value_t = 200_000
    )]
    pub max_in_flight_events: usize,
    /// Longest a client may take to send its request headers and body (408 beyond).
    #[arg(long = "request-timeout", env = "INGEST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Earliest accepted event time (UTC day, after clock-skew correction); earlier events are
    /// rejected one by one with the reason (a client clock at 0000-01-01 or 1970 is a bug, not
    /// history). Backfills of older data lower it.
    #[arg(long = "time-floor", env = "INGEST_TIME_FLOOR", default_value = "2000-01-01")]
    pub time_floor: chrono::NaiveDate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_decoded_bytes: 8 * 1024 * 1024,
            max_decoding_bytes: 64 * 1024 * 1024,
            max_batch_events: 1_000,
            max_event_bytes: 64 * 1024,
            max_property_depth: 16,
            max_in_flight_events: 200_000,
            request_timeout: Duration::from_secs(10),
            time_floor: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_well_formed_flag() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_static_keys_project_is_checked_at_the_command_line() {
        use clap::Parser as _;
        let error = super::Config::try_parse_from(["ingest", "--project", "a>b"]).unwrap_err();
        assert!(error.to_string().contains("1 to 64 letters"), "{error}");
        let config = super::Config::try_parse_from(["ingest", "--project", "acme"]).unwrap();
        assert_eq!(config.project.as_str(), "acme");
    }
}
