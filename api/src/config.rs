//! Every api setting, from flags or environment variables (`api --help` lists them).

use std::net::SocketAddr;

use common::config::PostgresConfig;

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
    /// The read key clients present as `Authorization: Bearer <key>`.
    #[arg(long = "read-key", env = "API_READ_KEY", hide_env_values = true)]
    pub read_key: String,
    /// The project (tenant) the read key reads.
    #[arg(long = "project", env = "API_PROJECT", default_value = "default")]
    pub project: String,
    /// Longest date range one request may ask for, in days (422 beyond).
    #[arg(long = "max-range-days", env = "API_MAX_RANGE_DAYS", default_value_t = 400)]
    pub max_range_days: i64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_well_formed_flag() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
