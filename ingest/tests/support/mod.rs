//! What the ingest tests share: an ingest started on port 0 against the real servers in the test's
//! own stream and database, and a reader of what reached the stream.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream::{self, consumer::pull};
use common::event::Event;
use futures::StreamExt as _;
use ingest::{App, Coalescing, Config, Limits, RateLimit};
use serde_json::Value;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

/// The static (bootstrap) key every test app accepts, for project [`PROJECT`].
pub const KEY: &str = "wk_test";
pub const PROJECT: &str = "proj-a";

pub fn config(env: &TestEnv) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        nats: env.nats.clone(),
        postgres: common::config::PostgresConfig {
            url: env.database_url.clone(),
            max_connections: 2,
        },
        write_key: Some(KEY.to_owned()),
        project: PROJECT.parse().unwrap(),
        allowed_origins: Vec::new(),
        key_cache_ttl: Duration::from_secs(30),
        rate_limit: RateLimit::default(),
        coalescing: Coalescing::default(),
        limits: Limits::default(),
        publish_timeout: Duration::from_secs(5),
        max_clock_skew: Duration::from_secs(60),
        historical_horizon: Duration::from_secs(30 * 86_400),
        shutdown_grace: Duration::from_secs(5),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub env: TestEnv,
    pub app: App,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts ingest in this test's own stream and database, with `adjust` applied to the config.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let env = TestEnv::new().await;
    spawn_in(env, adjust).await
}

pub async fn spawn_in(env: TestEnv, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = config(&env);
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::build(config).await.expect("ingest starts against the real NATS");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(app.clone().serve(listener, shutdown.clone()));
    TestApp {
        addr,
        env,
        app,
        http: reqwest::Client::new(),
        shutdown,
        served,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_as(KEY, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The first `expected` events in the stream, in order, with the subject of each.
    pub async fn stored(&self, expected: usize) -> Vec<Event> {
        stored_with_subjects(&self.env, expected)
            .await
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Applies the migrations to this test's database (what workers and `api keys` do), with
    /// the workspace's one migrator (`common::schema`, whose build script notices new files).
    pub async fn migrate(&self) -> sqlx::PgPool {
        let pool = sqlx::PgPool::connect(&self.env.database_url).await.unwrap();
        common::schema::migrate(&pool).await.unwrap();
        pool
    }
}

/// The first `expected` events of `env`'s stream with the subject each came on.
pub async fn stored_with_subjects(env: &TestEnv, expected: usize) -> Vec<(String, Event)> {
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(&env.nats.stream).await.unwrap();
    let consumer = stream.create_consumer(pull::Config::default()).await.unwrap();
    let mut events = Vec::new();
    let mut messages = consumer.messages().await.unwrap();
    while events.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the events reach the stream")
            .unwrap()
            .unwrap();
        let subject = message.subject.to_string();
        events.extend(
            serde_json::from_slice::<Vec<Event>>(&message.payload)
                .unwrap()
                .into_iter()
                .map(|e| (subject.clone(), e)),
        );
    }
    events
}

/// Messages in `env`'s stream right now.
pub async fn stream_messages(env: &TestEnv) -> u64 {
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&env.nats.stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn track(id: &str, user: &str, name: &str) -> Value {
    serde_json::json!({"type": "track", "event": name, "userId": user, "messageId": id, "properties": {"course_id": "c1"}})
}

/// Where ./scripts/test installs the real clients (venv, node_modules): outside the clone.
pub fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"))
        .join("analytics-pipeline")
}
