//! Faults with real processes and real servers: workers killed at every point of a batch and at
//! random under load, NATS restarted under load, PostgreSQL and MongoDB unreachable under load.
//! Each ends with every distinct event stored once, counted once, nothing dead-lettered and
//! reconcile finding no difference.

mod support;

use std::{net::SocketAddr, time::Duration};

use support::{assert_exactly_once, drained, events, stored, worker_env, Publisher};
use test_support::{eventually, PrivateNats, Proxy, Service, TestEnv};

const EVENTS: usize = 400;

/// A worker aborts at `failpoint` on its first batch; a fresh one finishes the work.
async fn crash_at(failpoint: &str) {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    publisher.publish_all(&events(EVENTS), 10, 5).await;
    let mut crashing = Service::start(
        "workers",
        &[worker_env(&env), vec![("WORKERS_FAILPOINT", failpoint.to_owned())]].concat(),
    );
    let status = crashing.wait(Duration::from_secs(60));
    assert!(
        !status.success(),
        "the worker was meant to abort at {failpoint}, it exited with {status}"
    );
    let worker = Service::start("workers", &worker_env(&env));
    drained(&env, Duration::from_secs(90)).await;
    worker.stop();
    assert_exactly_once(&env, EVENTS).await;
}

#[tokio::test]
async fn a_worker_killed_inside_the_rollup_transaction_loses_and_doubles_nothing() {
    crash_at("before-commit").await;
}

#[tokio::test]
async fn a_worker_killed_after_the_mongo_insert_loses_and_doubles_nothing() {
    crash_at("after-store").await;
}

#[tokio::test]
async fn a_worker_killed_after_the_postgres_commit_before_the_mongo_insert_loses_and_doubles_nothing() {
    crash_at("after-commit").await;
}

#[tokio::test]
async fn a_worker_killed_between_two_acks_loses_and_doubles_nothing() {
    crash_at("between-acks").await;
}

#[tokio::test]
async fn a_worker_killed_with_sigkill_under_load_loses_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let all = events(EVENTS);
    let first = Service::start("workers", &worker_env(&env));
    publisher.publish_all(&all[..EVENTS / 2], 10, 4).await;
    eventually("the first worker to store some events", Duration::from_secs(30), || {
        let env = &env;
        async move { (stored(env).await > 0).then_some(()) }
    })
    .await;
    first.signal("KILL");
    let second = Service::start("workers", &worker_env(&env));
    for (n, chunk) in all[EVENTS / 2..].chunks(10).enumerate() {
        publisher.publish(&format!("late{n}"), chunk).await;
    }
    drained(&env, Duration::from_secs(90)).await;
    second.stop();
    assert_exactly_once(&env, EVENTS).await;
}

#[tokio::test]
async fn nats_restarted_under_load_loses_and_doubles_nothing() {
    let mut nats = PrivateNats::start().await;
    let mut env = TestEnv::new().await;
    env.nats.url = nats.url.clone();
    let publisher = Publisher::new(&env).await;
    let all = events(EVENTS);
    let worker = Service::start("workers", &worker_env(&env));
    publisher.publish_all(&all[..EVENTS / 2], 10, 4).await;
    nats.restart().await;
    for (n, chunk) in all[EVENTS / 2..].chunks(10).enumerate() {
        publisher.publish(&format!("after{n}"), chunk).await;
    }
    drained(&env, Duration::from_secs(90)).await;
    worker.stop();
    assert_exactly_once(&env, EVENTS).await;
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let credentials = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{}{credentials}{addr}{}", &url[..scheme_end], &url[authority_end..])
}

fn target(url: &str) -> SocketAddr {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("a host:port address")
}

/// A dependency behind a proxy becomes unreachable for a while under load, then comes back.
async fn outage(database: bool) {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let all = events(EVENTS);
    let url = if database {
        env.database_url.clone()
    } else {
        env.mongo_uri.clone()
    };
    let proxy = Proxy::start(target(&url)).await;
    let mut process_env = worker_env(&env);
    for (key, value) in &mut process_env {
        if database && *key == "DATABASE_URL" {
            *value = through(&url, proxy.addr);
        }
        if !database && *key == "MONGO_URI" {
            *value = format!(
                "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=2000",
                proxy.addr
            );
        }
    }
    let worker = Service::start("workers", &process_env);
    publisher.publish_all(&all[..EVENTS / 2], 10, 4).await;
    eventually("some events to be stored", Duration::from_secs(30), || {
        let env = &env;
        async move { (stored(env).await > 0).then_some(()) }
    })
    .await;
    proxy.cut();
    for (n, chunk) in all[EVENTS / 2..].chunks(10).enumerate() {
        publisher.publish(&format!("during{n}"), chunk).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // The outage lasts a while: that is the fault.
    proxy.restore();
    drained(&env, Duration::from_secs(120)).await;
    worker.stop();
    assert_exactly_once(&env, EVENTS).await;
}

// The proxy runs on the test's runtime while `stop` blocks a thread waiting for the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_under_load_loses_and_doubles_nothing() {
    outage(true).await;
}

// The proxy runs on the test's runtime while `stop` blocks a thread waiting for the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_unreachable_under_load_loses_and_doubles_nothing() {
    outage(false).await;
}

#[test]
fn urls_are_rerouted_through_the_proxy() {
    let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    assert_eq!(
        through("postgres://postgres@127.0.0.1:5432/test_1", addr),
        "postgres://postgres@127.0.0.1:4000/test_1"
    );
    assert_eq!(
        target("postgres://u:p@127.0.0.1:5432/db?x=1"),
        "127.0.0.1:5432".parse().unwrap()
    );
    assert_eq!(target("mongodb://127.0.0.1:27017"), "127.0.0.1:27017".parse().unwrap());
}

#[tokio::test]
async fn two_worker_processes_racing_on_one_stream_with_resends_count_every_event_once() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let first = Service::start("workers", &worker_env(&env));
    let second = Service::start("workers", &worker_env(&env));
    publisher.publish_all(&events(EVENTS), 10, 3).await;
    drained(&env, Duration::from_secs(90)).await;
    first.stop();
    second.stop();
    assert_exactly_once(&env, EVENTS).await;
}
