//! Every api setting, from flags or environment variables (`api --help` lists them).

use std::{net::SocketAddr, time::Duration};

use common::config::{parse_duration, NatsConfig, PostgresConfig};

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "api", version, about = "Read API and dashboard over the activity rollups.")]
pub struct Config {
    /// Public address of the read API.
    #[arg(long = "addr", env = "API_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,
    /// Admin address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long = "admin-addr", env = "API_ADMIN_ADDR", default_value = "127.0.0.1:9103")]
    pub admin_addr: SocketAddr,
    #[command(flatten)]
    pub postgres: PostgresConfig,
    /// NATS, for the workers' change notifications (cache invalidation and live progress).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// A bootstrap read key clients present as `Authorization: Bearer <key>` (admin of `--project`);
    /// read keys created with `api keys create --scope read` work alongside it. Empty: none.
    #[arg(long = "read-key", env = "API_READ_KEY", hide_env_values = true, default_value = "")]
    pub read_key: String,
    /// The project (tenant) the bootstrap read key reads.
    #[arg(long = "project", env = "API_PROJECT", default_value = "default")]
    pub project: common::project::ProjectId,
    /// HS256 secret of the JWT bearer tokens the api accepts. Empty: JWTs are refused.
    #[arg(
        long = "jwt-secret",
        env = "API_JWT_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    pub jwt_secret: String,
    /// Longest lifetime a JWT may claim (`exp` after `iat`, or after now without `iat`); longer
    /// ones are refused with 401, so a leaked token cannot be one that never expires.
    #[arg(long = "jwt-max-lifetime", env = "API_JWT_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub jwt_max_lifetime: Duration,
    /// Longest date range one request may ask for, in days (422 beyond).
    #[arg(long = "max-range-days", env = "API_MAX_RANGE_DAYS", default_value_t = 400)]
    pub max_range_days: i64,
    /// Responses kept in the cache at most (bounded memory); 0 turns the cache off (every request
    /// is computed, concurrent identical ones too).
    #[arg(long = "cache-capacity", env = "API_CACHE_CAPACITY", default_value_t = 10_000)]
    pub cache_capacity: u64,
    /// Time to live of a cached response: the backstop when a change notification is lost.
    #[arg(long = "cache-ttl", env = "API_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub cache_ttl: Duration,
    /// Events of its steps one funnel may read from the ledger (`event_chunks`) at most (422 beyond: narrow the
    /// range); bounds the memory of one funnel.
    #[arg(
        long = "funnel-max-events",
        env = "API_FUNNEL_MAX_EVENTS",
        default_value_t = 2_000_000
    )]
    pub funnel_max_events: usize,
    /// Longest a single PostgreSQL statement of a request may run (PostgreSQL's
    /// `statement_timeout`); past it the request answers 503 with the reason.
    #[arg(long = "statement-timeout", env = "API_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub statement_timeout: Duration,
    /// Longest a client may take to send a request's headers, and to send the next request on an
    /// idle keep-alive connection; the connection is closed past it.
    #[arg(long = "header-read-timeout", env = "API_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Live progress streams (server-sent events) open at once, in all (503 beyond).
    #[arg(long = "max-streams", env = "API_MAX_STREAMS", default_value_t = 1_000)]
    pub max_streams: usize,
    /// Live progress streams one credential (a read key, or a JWT's subject) may hold open at
    /// once (429 beyond).
    #[arg(long = "max-streams-per-key", env = "API_MAX_STREAMS_PER_KEY", default_value_t = 10)]
    pub max_streams_per_key: usize,
    /// Longest a request may wait for PostgreSQL in all (connecting included); past it the request
    /// answers 503. The statement timeout is enforced by the server, so it cannot end a wait for
    /// an answer that never comes (a partition, a frozen host); this bound is the api's own.
    #[arg(long = "request-timeout", env = "API_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_well_formed_flag() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
