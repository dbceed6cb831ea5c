//! Configuration pieces shared by several binaries. Every setting is a clap argument with an
//! environment variable, so `--help` lists it and containers can set it; values are parsed here, at
//! the edge, into real types.

use std::time::Duration;

/// Where the NATS server is and which JetStream stream carries accepted events.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsConfig {
    /// NATS server URL (JetStream must be enabled on it); for a cluster, several separated by
    /// commas, so a process (re)starting while one node is down connects to another.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// JetStream stream that holds accepted events until workers have stored them.
    #[arg(long = "nats-stream", env = "NATS_STREAM", default_value = "EVENTS")]
    pub stream: String,
    /// Prefix of every subject the pipeline uses (`<prefix>.events.<project>`, `<prefix>.changes`),
    /// so several pipelines (or tests) can share one NATS server.
    #[arg(
        long = "nats-subject-prefix",
        env = "NATS_SUBJECT_PREFIX",
        default_value = "analytics"
    )]
    pub subject_prefix: String,
    /// How long the stream keeps events after they were written (bounds disk use; workers must
    /// catch up within it). Units: ms, s, m, h, d.
    #[arg(long = "nats-stream-max-age", env = "NATS_STREAM_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub stream_max_age: Duration,
    /// Upper bound on the stream's size on disk, in bytes; beyond it ingest is refused (503)
    /// rather than old events dropped.
    #[arg(long = "nats-stream-max-bytes", env = "NATS_STREAM_MAX_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub stream_max_bytes: i64,
    /// Stream replicas: 1 for a single server, 3 on a NATS cluster.
    #[arg(long = "nats-stream-replicas", env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
}

impl NatsConfig {
    /// The servers of `url`, one per comma-separated entry, for `async_nats` to connect to (it then
    /// learns the rest of a cluster from the servers themselves).
    pub fn servers(&self) -> Vec<&str> {
        servers(&self.url)
    }
}

/// The servers of a comma-separated list of NATS URLs (empty entries skipped).
pub fn servers(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty()).collect()
}

/// Where PostgreSQL is.
#[derive(clap::Args, Debug, Clone)]
pub struct PostgresConfig {
    /// PostgreSQL URL of the analytics database (rollups, catalog, keys).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/analytics"
    )]
    pub url: String,
    /// Connections in this process's pool.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
}

/// Where MongoDB is.
#[derive(clap::Args, Debug, Clone)]
pub struct MongoConfig {
    /// MongoDB connection string (MongoDB or FerretDB).
    #[arg(
        id = "mongo_uri",
        long = "mongo-uri",
        env = "MONGO_URI",
        hide_env_values = true,
        default_value = "mongodb://127.0.0.1:27017"
    )]
    pub uri: String,
    /// Database holding the `events` and `student_learning_paths` collections.
    #[arg(id = "mongo_db", long = "mongo-db", env = "MONGO_DB", default_value = "analytics")]
    pub db: String,
}

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h` or `7d` (a bare number means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 30s, 5m, 2h or 7d"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h or d)"
            ))
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

/// A URL without its password, for logs and error messages: `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn nats_url_lists_split_on_commas() {
        assert_eq!(servers("nats://a:1"), ["nats://a:1"]);
        assert_eq!(
            servers("nats://a:1, nats://b:2,,nats://c:3"),
            ["nats://a:1", "nats://b:2", "nats://c:3"]
        );
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
        assert!(parse_duration("5 weeks").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
