//! Isolation for tests against the real servers: each [`TestEnv`] owns a fresh PostgreSQL database,
//! a fresh MongoDB database and its own JetStream stream and subject prefix, all named after one
//! random id, so tests run in parallel without seeing each other. Dropping it removes them.
//!
//! The servers themselves come from `./scripts/services up`; their base addresses from the usual
//! `DATABASE_URL`, `MONGO_URI` and `NATS_URL` variables (defaults as in CONTRACT.md §2).

use std::{str::FromStr as _, time::Duration};

use sqlx::{postgres::PgConnectOptions, ConnectOptions as _, Connection as _, Executor as _};

use crate::config::NatsConfig;

/// One test's private slice of the real servers.
pub struct TestEnv {
    /// Short random id every resource name is derived from.
    pub id: String,
    /// URL of this test's own PostgreSQL database.
    pub database_url: String,
    pub mongo_uri: String,
    /// This test's own MongoDB database.
    pub mongo_db: String,
    /// This test's own stream and subject prefix on the shared NATS server.
    pub nats: NatsConfig,
    admin_database_url: String,
    pg_database: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl TestEnv {
    /// Creates the database and names the stream (created by the services when they start).
    pub async fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let admin_database_url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/analytics");
        let pg_database = format!("test_{id}");
        let mut admin = PgConnectOptions::from_str(&admin_database_url)
            .expect("DATABASE_URL is a PostgreSQL URL")
            .connect()
            .await
            .expect("PostgreSQL is up (run ./scripts/services up)");
        admin
            .execute(format!(r#"create database "{pg_database}""#).as_str())
            .await
            .expect("can create a test database");
        admin.close().await.ok();
        let database_url = with_database(&admin_database_url, &pg_database);
        let nats = NatsConfig {
            url: env_or("NATS_URL", "nats://127.0.0.1:4222"),
            stream: format!("TEST_{id}"),
            subject_prefix: format!("test_{id}"),
            stream_max_age: Duration::from_secs(3_600),
            stream_max_bytes: 256 * 1024 * 1024,
            stream_replicas: 1,
        };
        Self {
            mongo_uri: env_or("MONGO_URI", "mongodb://127.0.0.1:27017"),
            mongo_db: format!("test_{id}"),
            id,
            database_url,
            nats,
            admin_database_url,
            pg_database,
        }
    }

    /// Removes the database, the Mongo database and the stream; called on drop.
    pub async fn cleanup(&self) {
        if let Ok(client) = async_nats::connect(&self.nats.url).await {
            let js = async_nats::jetstream::new(client);
            js.delete_stream(&self.nats.stream).await.ok();
            js.delete_stream(format!("{}_DLQ", self.nats.stream)).await.ok();
        }
        if let Ok(client) = mongodb::Client::with_uri_str(&self.mongo_uri).await {
            client.database(&self.mongo_db).drop().await.ok();
        }
        if let Ok(options) = PgConnectOptions::from_str(&self.admin_database_url) {
            if let Ok(mut admin) = options.connect().await {
                let drop = format!(r#"drop database if exists "{}" with (force)"#, self.pg_database);
                admin.execute(drop.as_str()).await.ok();
                admin.close().await.ok();
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.pg_database.is_empty() {
            return;
        }
        // Drop cannot be async and may run inside a runtime: clean up on a thread of our own.
        let env = TestEnv {
            id: self.id.clone(),
            database_url: self.database_url.clone(),
            mongo_uri: self.mongo_uri.clone(),
            mongo_db: self.mongo_db.clone(),
            nats: self.nats.clone(),
            admin_database_url: self.admin_database_url.clone(),
            pg_database: std::mem::take(&mut self.pg_database),
        };
        // The drivers' futures are large in debug builds: box them, on a thread with room.
        let cleanup = std::thread::Builder::new().stack_size(16 * 1024 * 1024).spawn(move || {
            let mut env = env;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(Box::pin(env.cleanup()));
            }
            // So that the copy's own drop does nothing.
            env.pg_database.clear();
        });
        if let Ok(cleanup) = cleanup {
            cleanup.join().ok();
        }
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Polls `condition` until it returns `Some`, or panics after `deadline` naming `what`: the way
/// tests wait for asynchronous effects without sleeping a fixed time.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/analytics", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(with_database("postgres://u@h:5432", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
