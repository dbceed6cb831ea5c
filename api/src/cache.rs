//! The response cache: moka, keyed by (project, generation, normalised request), bounded in size,
//! with a TTL as a backstop. Each project has a generation number that the workers' change
//! notifications (and the api's own catalog writes) bump; a bumped generation makes every older
//! entry of that project unreachable at once, and it cannot be undone by a slow request that
//! started before the change and stores its (stale) answer afterwards: that answer is stored under
//! the old generation, which nobody asks for any more.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::ApiError;

/// One cached response body and its validator.
#[derive(Debug)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
    /// The body gzip-compressed, made once on the first request that accepts it (cached
    /// responses are then served compressed without compressing again).
    gzip: std::sync::OnceLock<Bytes>,
}

/// Bodies shorter than this are sent as they are.
const GZIP_MIN_BYTES: usize = 1024;

impl Cached {
    pub fn new(body: Bytes) -> Self {
        Self {
            etag: etag(&body),
            body,
            gzip: std::sync::OnceLock::new(),
        }
    }

    fn gzipped(&self) -> &Bytes {
        self.gzip.get_or_init(|| {
            use std::io::Write as _;
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&self.body).ok();
            Bytes::from(encoder.finish().unwrap_or_default())
        })
    }
}

/// What the workers announce after each commit (workers/src/changes.rs).
pub use common::change::Change;

/// Live change notifications buffered for slow SSE clients at most.
const CHANGE_CHANNEL: usize = 1024;

#[derive(Clone)]
pub struct ResponseCache {
    entries: moka::future::Cache<(String, u64, String), Arc<Cached>>,
    generations: Arc<Mutex<HashMap<String, u64>>>,
    /// Bumped for every project when notifications may have been missed (NATS reconnects).
    epoch: Arc<std::sync::atomic::AtomicU64>,
    changes: broadcast::Sender<Arc<Change>>,
    /// False when configured with no capacity: every request is computed (for measurements).
    enabled: bool,
}

impl ResponseCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            generations: Arc::default(),
            epoch: Arc::default(),
            changes: broadcast::channel(CHANGE_CHANNEL).0,
            enabled: capacity > 0,
        }
    }

    fn generation(&self, project: &str) -> u64 {
        let own = self
            .generations
            .lock()
            .map(|g| g.get(project).copied().unwrap_or(0))
            .unwrap_or(0);
        own.wrapping_add(self.epoch.load(std::sync::atomic::Ordering::SeqCst) << 32)
    }

    /// Forgets every cached response of `project`.
    pub fn invalidate(&self, project: &str) {
        if let Ok(mut generations) = self.generations.lock() {
            *generations.entry(project.to_owned()).or_insert(0) += 1;
        }
    }

    fn invalidate_all(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Live changes, for the progress streams.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Applies one change notification.
    pub fn changed(&self, change: Change) {
        self.invalidate(&change.project);
        self.changes.send(Arc::new(change)).ok();
    }

    /// The cached response for `key` of `project`, or computes, stores and returns it. Answers 304
    /// when the client's `If-None-Match` names the current body.
    pub async fn respond<F, Fut>(&self, project: &str, key: String, headers: &HeaderMap, compute: F) -> Response
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
    {
        if !self.enabled {
            metrics::counter!("api_cache_misses_total").increment(1);
            return match compute().await {
                Ok(value) => match serde_json::to_vec(&value) {
                    Ok(body) => respond_with(&Cached::new(body.into()), headers, "off"),
                    Err(error) => ApiError::Internal(error.into()).response(),
                },
                Err(error) => error.response(),
            };
        }
        let full_key = (project.to_owned(), self.generation(project), key);
        let mut missed = false;
        let result = self
            .entries
            .try_get_with(full_key, async {
                missed = true;
                let value = compute().await?;
                let body = Bytes::from(serde_json::to_vec(&value).map_err(anyhow::Error::from)?);
                Ok::<_, ApiError>(Arc::new(Cached::new(body)))
            })
            .await;
        let cached = match result {
            Ok(cached) => cached,
            Err(error) => return error.response(),
        };
        if missed {
            metrics::counter!("api_cache_misses_total").increment(1);
        } else {
            metrics::counter!("api_cache_hits_total").increment(1);
        }
        respond_with(&cached, headers, if missed { "miss" } else { "hit" })
    }
}

/// A JSON body with its validators, or 304 when the client already has it.
pub fn respond_with(cached: &Cached, headers: &HeaderMap, cache_status: &'static str) -> Response {
    let gzip = cached.body.len() >= GZIP_MIN_BYTES
        && headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|e| e.trim() == "gzip" || e.trim().starts_with("gzip;"))
            });
    // Each representation has its own strong validator; either one matches.
    let gzip_etag = format!("{}-gz\"", cached.etag.trim_end_matches('"'));
    let etag = if gzip { &gzip_etag } else { &cached.etag };
    let etag_value = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == cached.etag || t == gzip_etag || t == "*")
        });
    let common = [
        (header::ETAG, etag_value),
        (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
        (header::VARY, HeaderValue::from_static("Authorization, Accept-Encoding")),
    ];
    let mut response = if matches {
        (StatusCode::NOT_MODIFIED, common).into_response()
    } else if gzip {
        (
            common,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
            ],
            Body::from(cached.gzipped().clone()),
        )
            .into_response()
    } else {
        (
            common,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            Body::from(cached.body.clone()),
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(cache_status));
    response
}

/// A strong validator: FNV-1a (64 bits) of the body, quoted.
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}-{}\"", body.len())
}

/// Listens to the workers' change notifications until `shutdown`, reconnecting as needed. Every
/// (re)connection forgets the whole cache: notifications may have been missed meanwhile.
pub async fn listen(cache: ResponseCache, url: String, subject: String, shutdown: CancellationToken) {
    let connect = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .event_callback({
            let cache = cache.clone();
            move |event| {
                let cache = cache.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        cache.invalidate_all();
                    }
                }
            }
        })
        .connect(common::config::servers(&url));
    let client = tokio::select! {
        client = connect => client,
        () = shutdown.cancelled() => return,
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, %url, "cannot connect to NATS; the cache relies on its TTL alone");
            return;
        }
    };
    let mut subscription = match client.subscribe(subject.clone()).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(%error, %subject, "cannot subscribe to change notifications");
            return;
        }
    };
    tracing::info!(%subject, "listening to the workers' change notifications");
    loop {
        let message = tokio::select! {
            message = subscription.next() => message,
            () = shutdown.cancelled() => break,
        };
        let Some(message) = message else { break };
        match serde_json::from_slice::<Change>(&message.payload) {
            Ok(change) => cache.changed(change),
            Err(error) => tracing::warn!(%error, "malformed change notification ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_makes_the_projects_entries_unreachable_and_only_those() {
        let cache = ResponseCache::new(100, Duration::from_secs(60));
        let headers = HeaderMap::new();
        let value = |n: i64| move || async move { Ok::<_, ApiError>(serde_json::json!({"n": n})) };
        let hit = |r: &Response| r.headers()["x-cache"].to_str().unwrap().to_owned();
        assert_eq!(hit(&cache.respond("p1", "q".into(), &headers, value(1)).await), "miss");
        assert_eq!(hit(&cache.respond("p1", "q".into(), &headers, value(2)).await), "hit");
        assert_eq!(hit(&cache.respond("p2", "q".into(), &headers, value(3)).await), "miss");
        cache.changed(Change {
            project: "p1".into(),
            ..Change::default()
        });
        assert_eq!(hit(&cache.respond("p1", "q".into(), &headers, value(4)).await), "miss");
        assert_eq!(hit(&cache.respond("p2", "q".into(), &headers, value(5)).await), "hit");
    }

    #[tokio::test]
    async fn a_matching_if_none_match_gets_304() {
        let cache = ResponseCache::new(100, Duration::from_secs(60));
        let first = cache
            .respond("p", "q".into(), &HeaderMap::new(), || async {
                Ok(serde_json::json!([1]))
            })
            .await;
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        let second = cache
            .respond("p", "q".into(), &headers, || async { Ok(serde_json::json!([1])) })
            .await;
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
    }
}
