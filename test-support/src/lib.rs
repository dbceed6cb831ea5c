//! Isolation for tests against the real servers: each [`TestEnv`] owns a fresh PostgreSQL database,
//! a fresh MongoDB database and its own JetStream stream and subject prefix, all named after one
//! random id, so tests run in parallel without seeing each other. Dropping it removes them.
//!
//! The servers themselves come from `./scripts/services up`; their base addresses from the usual
//! `DATABASE_URL`, `MONGO_URI` and `NATS_URL` variables (defaults as in docs/contract.md §2).

use std::{str::FromStr as _, time::Duration};

use sqlx::{postgres::PgConnectOptions, ConnectOptions as _, Connection as _, Executor as _};

use common::config::NatsConfig;

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

/// Logs of in-process services go to the test's captured output (shown for failing tests), at the
/// level `RUST_LOG` sets (default `warn`). Safe to call from every test.
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

impl TestEnv {
    /// Creates the database and names the stream (created by the services when they start).
    pub async fn new() -> Self {
        capture_logs();
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

    /// The environment every service process of this test shares: its stream (with the test's
    /// own stream size, not the 10 GiB default: JetStream reserves `max_bytes` up front, and
    /// parallel tests or a demo's stream would exhaust the reservation) and its databases.
    pub fn service_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.nats.url.clone()),
            ("NATS_STREAM", self.nats.stream.clone()),
            ("NATS_STREAM_MAX_BYTES", self.nats.stream_max_bytes.to_string()),
            ("NATS_SUBJECT_PREFIX", self.nats.subject_prefix.clone()),
            ("DATABASE_URL", self.database_url.clone()),
            ("MONGO_URI", self.mongo_uri.clone()),
            ("MONGO_DB", self.mongo_db.clone()),
        ]
    }

    /// The environment of one `workers` process on this test's stream and databases, with an
    /// admin address of its own and otherwise the production defaults.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let mut vars = self.service_env();
        vars.push(("WORKERS_ADMIN_ADDR", free_addr().to_string()));
        vars
    }

    /// Messages of this test's stream that the workers' durable consumer has not finished (not yet
    /// delivered, or delivered and not acknowledged); `None` until the workers created it.
    pub async fn outstanding(&self) -> Option<u64> {
        let client = async_nats::connect(&self.nats.url).await.ok()?;
        outstanding_in(&async_nats::jetstream::new(client), &self.nats.stream).await
    }

    /// Waits until the workers have finished every message of this test's stream.
    pub async fn drained(&self, deadline: Duration) -> anyhow::Result<()> {
        let client = async_nats::connect(&self.nats.url).await?;
        let js = async_nats::jetstream::new(client);
        let until = std::time::Instant::now() + deadline;
        while outstanding_in(&js, &self.nats.stream).await != Some(0) {
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "the workers did not drain stream {} within {deadline:?}",
                self.nats.stream
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The command line of a `workers` process (or `workers::Config::parse_from`) on this test's
    /// stream and databases, writing MongoDB without waiting for a journal (test data), plus
    /// `extra` flags.
    pub fn worker_args(&self, extra: &[&str]) -> Vec<String> {
        // The test's own stream size, not the 10 GiB default: JetStream reserves max_bytes up
        // front, and parallel tests (or a demo's stream) would exhaust the reservation.
        let max_bytes = self.nats.stream_max_bytes.to_string();
        let mut args: Vec<String> = [
            "workers",
            "--nats-url",
            &self.nats.url,
            "--nats-stream",
            &self.nats.stream,
            "--nats-subject-prefix",
            &self.nats.subject_prefix,
            "--nats-stream-max-bytes",
            &max_bytes,
            "--database-url",
            &self.database_url,
            "--mongo-uri",
            &self.mongo_uri,
            "--mongo-db",
            &self.mongo_db,
            "--mongo-write-concern",
            "1",
            "--mongo-journal",
            "false",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Removes the database, the Mongo database and the stream; called on drop.
    pub async fn cleanup(&self) {
        // TEST_KEEP=1 keeps the stream and databases for inspection after a failure or a bench.
        if std::env::var_os("TEST_KEEP").is_some() {
            eprintln!(
                "TEST_KEEP: kept PostgreSQL {} and MongoDB {} (stream {})",
                self.database_url, self.mongo_db, self.nats.stream
            );
            return;
        }
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

/// A binary of this workspace: `cargo test --workspace` builds every binary next to the folder of
/// the test executable.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let mut path = std::env::current_exe().expect("test executable path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join(name)
}

/// A free loopback address (bound and released; good enough for tests).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A running process of one of this workspace's binaries, killed if the test ends without
/// stopping it.
pub struct Service {
    pub name: String,
    child: std::process::Child,
}

impl Service {
    /// Starts `name` with exactly `env` (plus `PATH`); warnings and errors go to the test's stderr.
    pub fn start<K: AsRef<str>>(name: &str, env: &[(K, String)]) -> Self {
        let mut command = std::process::Command::new(workspace_binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn");
        for (key, value) in env {
            command.env(key.as_ref(), value);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} at {}: {e}", workspace_binary(name).display()));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "cannot signal {}", self.name);
    }

    /// Waits up to `deadline` for the process to exit and returns how it did.
    pub fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "{} did not exit within {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and expects a clean exit within 10 s.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(10));
        assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A TCP proxy in front of a real server that a test can cut (every open connection is dropped
/// and new ones are closed at once, as when the server is down) and restore: outages of the
/// shared PostgreSQL or MongoDB server for one test, without stopping them for the others.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let addr = listener.local_addr().expect("the proxy's address");
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = watch.clone();
                if !*state.borrow() {
                    continue; // Refused: dropped at once.
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up, task }
    }

    /// The server becomes unreachable: open connections drop, new ones are closed.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Headless Chromium (Debian's package; ./scripts/test installs it) with a profile directory of its
/// own, and without the background connections that this machine's closed network refuses; the
/// caller adds its own flags and the URL.
pub fn chromium(profile: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// What the durable consumer `workers` of `stream` has not finished.
async fn outstanding_in(js: &async_nats::jetstream::Context, stream: &str) -> Option<u64> {
    let mut consumer = js
        .get_stream(stream)
        .await
        .ok()?
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("workers")
        .await
        .ok()?;
    let info = consumer.info().await.ok()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

/// A private `nats-server` with JetStream on a free port and its own store, for tests that stop,
/// kill, freeze and restart NATS itself. Killed, and its store removed, on drop.
pub struct PrivateNats {
    pub url: String,
    port: u16,
    store: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        let port = free_addr().port();
        let store = std::env::temp_dir().join(format!("nats-test-{}", uuid::Uuid::new_v4().simple()));
        let mut nats = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store,
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// Stops the server (SIGTERM, as an operator would; thawed first if frozen) and waits for it
    /// to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            for signal in ["-CONT", "-TERM"] {
                std::process::Command::new("kill")
                    .args([signal, &child.id().to_string()])
                    .status()
                    .ok();
            }
            child.wait().ok();
        }
    }

    /// Kills the server (SIGKILL): connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Sends `signal` (`-STOP` freezes it: connections stay open, nothing is answered; `-CONT`
    /// thaws it).
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("the private nats-server is running")
            .id()
            .to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port and store, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (./scripts/services up installs it)");
        self.child = Some(child);
        let url = self.url.clone();
        eventually("the private nats-server to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move { async_nats::connect(&url).await.ok().map(drop) }
        })
        .await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        std::fs::remove_dir_all(&self.store).ok();
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
