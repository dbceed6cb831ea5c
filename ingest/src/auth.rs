//! Which project a write key sends events for. Keys live hashed in PostgreSQL (`common::keys`);
//! every lookup, found or not, is cached for a short time to live in a moka cache keyed by the key's
//! hash, so the database sees at most one query per key and TTL however hot the key, and a revoked
//! key stops working within the TTL. An optional static key from the configuration (the bootstrap
//! key of demos and first set-up) is checked first, in constant time, without the database.
//! With the key comes its project's browser origin allow-list (`common::origins`), cached alike.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use http::{header, HeaderMap};

use common::{
    keys::{self, Scope},
    origins,
    project::ProjectId,
};
use sqlx::PgPool;

use crate::error::IngestError;

/// Keys cached at most; beyond it the least recently used entries go.
const CACHE_CAPACITY: u64 = 100_000;

/// An authenticated sender: the project its events belong to and an identity for its rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub project: ProjectId,
    /// Stable per key and never the key itself (the stored key's id, or `static`).
    pub key_id: Arc<str>,
    /// The browser origins the project accepts events from; empty: every origin.
    pub origins: Arc<[String]>,
}

impl Sender {
    /// Refuses a browser request from an origin outside the project's allow-list (403); requests
    /// without `Origin` (servers, mobile apps) are not browser requests and pass.
    pub fn admit(self, origin: Option<&http::HeaderValue>) -> Result<Self, IngestError> {
        match origin {
            Some(origin) if !origins::is_allowed(&self.origins, origin.as_bytes()) => {
                Err(IngestError::OriginNotAllowed(format!(
                    "origin {} may not send events of project {}: add it with `api origins set`",
                    String::from_utf8_lossy(origin.as_bytes()),
                    self.project
                )))
            }
            _ => Ok(self),
        }
    }
}

#[derive(Clone)]
pub struct WriteKeys {
    /// The configured bootstrap key and its sender, if any.
    static_key: Option<(String, Sender)>,
    pool: PgPool,
    /// Key hash → the sender, or `None` for an unknown or revoked key (negative entries keep
    /// a client retrying a bad key from querying the database each time).
    cache: moka::future::Cache<String, Option<Sender>>,
}

impl WriteKeys {
    /// `static_key`: the configured key, its project and that project's allowed origins.
    pub fn new(static_key: Option<(String, ProjectId, Vec<String>)>, pool: PgPool, ttl: Duration) -> Self {
        Self {
            static_key: static_key.map(|(key, project, origins)| {
                let sender = Sender {
                    project,
                    key_id: "static".into(),
                    origins: origins.into(),
                };
                (key, sender)
            }),
            pool,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Whether a static key is configured (then ingest can serve without PostgreSQL).
    pub fn has_static_key(&self) -> bool {
        self.static_key.is_some()
    }

    /// The sender of `key`: 401 when it is unknown, revoked or not a write key; 503 when the
    /// database cannot say.
    pub async fn authenticate(&self, key: &str) -> Result<Sender, IngestError> {
        if let Some((static_key, sender)) = &self.static_key {
            if keys::constant_time_eq(key.as_bytes(), static_key.as_bytes()) {
                return Ok(sender.clone());
            }
        }
        let pool = &self.pool;
        let found = self
            .cache
            .try_get_with(keys::hash(key), async move {
                let Some(found) = keys::lookup(pool, key).await?.filter(|k| k.scope == Scope::Write) else {
                    return Ok(None);
                };
                let project = ProjectId::parse(&found.project).map_err(|e| sqlx::Error::Decode(e.into()))?;
                let allowed = origins::allowed(pool, &project).await?;
                Ok::<_, sqlx::Error>(Some(Sender {
                    project,
                    key_id: found.id.to_string().into(),
                    origins: allowed.into(),
                }))
            })
            .await
            .map_err(|error| {
                tracing::warn!(%error, "cannot look up a write key in PostgreSQL");
                IngestError::Unavailable("the write key cannot be verified right now".into())
            })?;
        found.ok_or(IngestError::Unauthorized)
    }
}

/// The write key from `Authorization: Basic base64(key:)` or `Authorization: Bearer key`.
pub fn key_from_headers(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let key = decoded.split_once(':').map_or(decoded.as_str(), |(user, _)| user);
        Some(key.to_owned()).filter(|k| !k.is_empty())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(credentials.to_owned()).filter(|k| !k.is_empty())
    } else {
        None
    }
}

/// The write key from `?writeKey=` (`sendBeacon` cannot set headers).
pub fn key_from_query(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "writeKey" && !value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_are_read_from_basic_and_bearer_headers_and_the_query() {
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("wk_123:");
        headers.insert(header::AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert_eq!(key_from_headers(&headers).as_deref(), Some("wk_123"));
        headers.insert(header::AUTHORIZATION, "Bearer wk_456".parse().unwrap());
        assert_eq!(key_from_headers(&headers).as_deref(), Some("wk_456"));
        headers.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(key_from_headers(&headers), None);
        assert_eq!(key_from_query(Some("a=1&writeKey=wk_789")).as_deref(), Some("wk_789"));
        assert_eq!(key_from_query(Some("writeKey=")), None);
    }
}
