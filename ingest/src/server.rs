//! The hyper server: its lifecycle (build, serve, graceful shutdown) and one request's way through
//! ingest: route, authenticate, admit the origin, read and decode the body within its budgets,
//! validate, rate-limit, publish and answer. The pieces it calls live beside it: `routes`,
//! `auth`, `body`, `decode`, `publisher` and `response`; xAPI statements take the same steps in
//! `xapi`. [`App::serve`] takes its listener and shutdown token from the caller, so tests bind
//! port 0 and stop it at will.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use common::{
    admin::AdminState,
    stream::{ensure_events_stream, Subjects},
    telemetry::PrometheusHandle,
};
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, SemaphorePermit},
};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{key_from_headers, key_from_query, Sender, WriteKeys},
    body::{check_json_body, decoding_permits, Encoding, DEFLATE_MAX_RATIO},
    config::Config,
    decode::{body_write_key, decode_batch, EncodedEvents, Endpoint, Normalisation, RejectedEvent},
    error::IngestError,
    limiter::RateLimiter,
    publisher::Publisher,
    response::{cors, empty_response, error_response, json_response, preflight_response},
    routes::Route,
    xapi,
};

/// After the shutdown grace, how long requests told 503 get to have that answer written.
const FINAL_WRITE_GRACE: Duration = Duration::from_secs(1);

/// The running service's shared state: cheap handles, cloned per connection.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    nats: async_nats::Client,
    publisher: Publisher,
    /// One permit per event waiting for its JetStream acknowledgement; bounds ingest's memory.
    in_flight: Arc<Semaphore>,
    /// One permit per KiB of `Limits::max_decoding_bytes`: bodies being decoded and parsed.
    decoding: Arc<Semaphore>,
    pub(crate) keys: WriteKeys,
    /// The stored write keys, readiness when there is no static key (the stored keys are then the
    /// only ones), and the xAPI statement ids (`xapi::store`).
    pub(crate) pool: sqlx::PgPool,
    limiter: RateLimiter,
    /// Cancelled when the shutdown grace is over: requests still waiting for JetStream answer 503.
    give_up: CancellationToken,
}

/// What a request is answered with when it succeeds.
pub(crate) enum Reply {
    /// A CORS preflight, allowing the route's methods.
    Preflight(&'static str),
    Json(StatusCode, serde_json::Value),
    Empty(StatusCode),
}

/// A request body read within its size and time limits and decoded, holding its share of the
/// decoding budget until dropped (the caller drops it once the events are validated).
pub(crate) struct Body<'a> {
    pub(crate) bytes: Vec<u8>,
    pub(crate) content_type: Option<HeaderValue>,
    _decoding: SemaphorePermit<'a>,
}

/// The header every xAPI answer carries (xAPI 1.0.3, "Communication" 3.3).
pub(crate) const XAPI_VERSION_HEADER: HeaderName = HeaderName::from_static("x-experience-api-version");

impl App {
    /// Connects to NATS and makes sure the events stream exists.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.write_key.as_ref().is_none_or(|key| !key.is_empty()),
            "the static write key must not be empty (leave INGEST_WRITE_KEY unset for none)"
        );
        let nats = async_nats::ConnectOptions::new()
            .name("ingest")
            .retry_on_initial_connect()
            .connect(config.nats.servers())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", config.nats.url))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .build(nats.clone());
        ensure_events_stream(&js, &config.nats).await?;
        let max_payload = nats.server_info().max_payload;
        let publisher = Publisher::start(
            js,
            Subjects::new(&config.nats.subject_prefix),
            max_payload,
            config.publish_timeout,
            &config.coalescing,
        );
        let in_flight = Arc::new(Semaphore::new(config.limits.max_in_flight_events));
        let decoding = Arc::new(Semaphore::new(decoding_permits(config.limits.max_decoding_bytes)));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(config.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&config.postgres.url)
            .context("invalid DATABASE_URL")?;
        let keys = WriteKeys::new(
            config
                .write_key
                .clone()
                .map(|key| (key, config.project.clone(), config.allowed_origins.clone())),
            pool.clone(),
            config.key_cache_ttl,
        );
        let limiter = RateLimiter::new(&config.rate_limit);
        tracing::info!(
            addr = %config.addr,
            stream = %config.nats.stream,
            static_key_project = config.write_key.as_ref().map(|_| config.project.as_str()),
            "ingest ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                nats,
                publisher,
                in_flight,
                decoding,
                keys,
                pool,
                limiter,
                give_up: CancellationToken::new(),
            }),
        })
    }

    /// What the admin endpoints need: ready while the NATS connection is up and some key can be
    /// accepted: the static key, or else the stored keys, which need PostgreSQL to answer.
    pub fn admin_state(&self, metrics: Option<PrometheusHandle>) -> AdminState {
        let nats = self.inner.nats.clone();
        let pool = (!self.inner.keys.has_static_key()).then(|| self.inner.pool.clone());
        AdminState {
            metrics,
            readiness: Arc::new(move || {
                let state = nats.connection_state();
                let pool = pool.clone();
                Box::pin(async move {
                    match state {
                        async_nats::connection::State::Connected => {}
                        other => return Err(format!("NATS connection is {other}")),
                    }
                    if let Some(pool) = pool {
                        sqlx::query("select 1")
                            .execute(&pool)
                            .await
                            .map_err(|e| format!("PostgreSQL (write keys) does not answer: {e}"))?;
                    }
                    Ok(())
                })
            }),
        }
    }

    /// Events accepted and waiting for their JetStream acknowledgement right now.
    pub fn events_in_flight(&self) -> usize {
        self.inner.config.limits.max_in_flight_events - self.inner.in_flight.available_permits()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish
    /// (their events acknowledged, or the client told 503) for up to the shutdown grace, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let app = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let graceful =
            common::serve::accept_until(listener, service, self.inner.config.limits.request_timeout, shutdown).await;
        let grace = self.inner.config.shutdown_grace;
        tracing::info!(?grace, "draining connections");
        let give_up = self.inner.give_up.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            give_up.cancel();
        });
        if tokio::time::timeout(grace + FINAL_WRITE_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "connections still open after the shutdown grace; closing them");
        }
        timer.abort();
        self.inner.nats.flush().await.ok();
        Ok(())
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let route = Route::of(request.uri().path());
        let origin = request.headers().get(header::ORIGIN).cloned();
        let request_headers = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        let method = request.method().clone();
        let result = match route {
            None => Err(IngestError::NotFound),
            Some(route) if method == Method::OPTIONS => Ok(Reply::Preflight(route.methods())),
            Some(Route::XapiAbout) if method == Method::GET => Ok(xapi::about()),
            Some(Route::XapiStatements) if method == Method::POST || method == Method::PUT => {
                self.xapi_statements(request, origin.as_ref()).await
            }
            Some(route) => match route.endpoint() {
                Some(endpoint) if method == Method::POST => {
                    let body = self.ingest(request, endpoint, origin.as_ref()).await;
                    match route {
                        Route::Beacon => body.map(|_| Reply::Empty(StatusCode::NO_CONTENT)),
                        _ => body.map(|body| Reply::Json(StatusCode::OK, body)),
                    }
                }
                _ => Err(IngestError::MethodNotAllowed(route.methods())),
            },
        };
        // A refused origin is not told anything it could read.
        let origin = origin.filter(|_| !matches!(result, Err(IngestError::OriginNotAllowed(_))));
        let mut response = match result {
            Ok(Reply::Preflight(methods)) => preflight_response(methods),
            Ok(Reply::Empty(status)) => empty_response(status),
            Ok(Reply::Json(status, body)) => json_response(status, body),
            Err(error) => {
                metrics::counter!("ingest_requests_failed_total", "reason" => error.code()).increment(1);
                error_response(&error)
            }
        };
        cors(&mut response, origin, &request_headers);
        if route.is_some_and(Route::is_xapi) {
            xapi::version_headers(&mut response);
        }
        metrics::histogram!(
            "ingest_http_request_duration_seconds",
            "route" => route.map_or("unknown", Route::label),
            "status" => response.status().as_str().to_owned(),
        )
        .record(started.elapsed().as_secs_f64());
        response
    }

    async fn ingest(
        &self,
        request: Request<Incoming>,
        endpoint: Endpoint,
        origin: Option<&HeaderValue>,
    ) -> Result<serde_json::Value, IngestError> {
        let config = &self.inner.config;
        let received_at = Utc::now();
        let header_key = key_from_headers(request.headers()).or_else(|| key_from_query(request.uri().query()));
        let mut sender = None;
        if let Some(key) = &header_key {
            sender = Some(self.inner.keys.authenticate(key).await?.admit(origin)?);
        }
        // Held until the events are validated: the decoded body and its parsed tree.
        let Body {
            bytes: mut body,
            content_type,
            _decoding,
        } = self.read_body(request).await?;
        check_json_body(content_type.as_ref(), &body)?;
        let sender = match sender {
            Some(sender) => sender,
            None => match body_write_key(&body)? {
                Some(key) => self.inner.keys.authenticate(&key).await?.admit(origin)?,
                None => return Err(IngestError::Unauthorized),
            },
        };
        let envelope = decode_batch(&mut body, endpoint, &config.limits)?;
        metrics::counter!("ingest_events_received_total").increment(envelope.len() as u64);
        let decoded = envelope.encode(&Normalisation {
            project: &sender.project,
            received_at,
            max_clock_skew: config.max_clock_skew,
            historical_horizon: config.historical_horizon,
            limits: &config.limits,
        });
        count_rejections(&decoded.rejected);
        if decoded.duplicates > 0 {
            metrics::counter!("ingest_events_duplicate_total").increment(decoded.duplicates as u64);
        }
        let accepted = decoded.accepted.len();
        if accepted > 0 {
            let _permit = self.admit(&sender, accepted)?;
            self.publish(&sender, decoded.accepted).await?;
        }
        Ok(serde_json::json!({
            "success": true,
            "accepted": accepted,
            "duplicates": decoded.duplicates,
            "rejected": decoded.rejected,
        }))
    }
}

/// Counts rejected events by reason: one metrics call per reason in the request, not per event.
fn count_rejections(rejected: &[RejectedEvent]) {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for rejection in rejected {
        let code = rejection.reason.code();
        match counts.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => counts.push((code, 1)),
        }
    }
    for (code, n) in counts {
        metrics::counter!("ingest_events_rejected_total", "reason" => code).increment(n);
    }
}

impl App {
    /// Reads the body within `max_body_bytes` and the request timeout, reserves its decoding
    /// budget and decodes its `Content-Encoding` within `max_decoded_bytes`.
    pub(crate) async fn read_body(&self, request: Request<Incoming>) -> Result<Body<'_>, IngestError> {
        let limits = &self.inner.config.limits;
        let encoding = Encoding::of(request.headers())?;
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        // Read straight into one buffer sized by Content-Length (within the limit): collecting
        // hyper's chunks into `Bytes` and then into the `Vec` simd-json parses in place copied
        // every body twice (bench/RESULTS.md, "Ingest CPU per event").
        let hint = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            // At most 256 KiB up front, so a Content-Length alone cannot make every open
            // connection hold a whole `max_body_bytes`; larger bodies grow as they arrive.
            .map_or(0, |n| n.min(limits.max_body_bytes).min(256 * 1024));
        let read = async {
            let mut body = Limited::new(request.into_body(), limits.max_body_bytes);
            let mut bytes = Vec::with_capacity(hint);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(bytes)
        };
        let body = tokio::time::timeout(limits.request_timeout, read)
            .await
            .map_err(|_| IngestError::RequestTimeout(limits.request_timeout))?
            .map_err(|error| {
                if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    IngestError::PayloadTooLarge(format!("the body is larger than {} bytes", limits.max_body_bytes))
                } else {
                    IngestError::BadRequest(format!("cannot read the body: {error}"))
                }
            })?;
        let decoding = self.reserve_decoding(encoding, body.len()).await?;
        let bytes = encoding.decode(body, limits.max_decoded_bytes)?;
        Ok(Body {
            bytes,
            content_type,
            _decoding: decoding,
        })
    }

    /// Admits `events` accepted events of `sender`: its rate limit (429), then ingest's bound on
    /// events awaiting an acknowledgement (503); the permit is held until they are acknowledged.
    pub(crate) fn admit(&self, sender: &Sender, events: usize) -> Result<SemaphorePermit<'_>, IngestError> {
        self.inner.limiter.check(&sender.key_id, events)?;
        let permits = u32::try_from(events).map_err(|_| IngestError::Overloaded)?;
        self.inner
            .in_flight
            .try_acquire_many(permits)
            .map_err(|_| IngestError::Overloaded)
    }

    /// Publishes admitted events and returns once JetStream acknowledged every one (503 if it did
    /// not in time, or when the shutdown grace ends first).
    pub(crate) async fn publish(&self, sender: &Sender, events: EncodedEvents) -> Result<(), IngestError> {
        let accepted = events.len();
        tokio::select! {
            published = self.inner.publisher.publish(&sender.project, events) => published?,
            () = self.inner.give_up.cancelled() => {
                return Err(IngestError::Unavailable("ingest is shutting down before the events were confirmed".into()));
            }
        }
        metrics::counter!("ingest_events_accepted_total").increment(accepted as u64);
        Ok(())
    }

    /// Reserves the memory a body of `wire_len` bytes may take while it is decoded and parsed
    /// (`Limits::max_decoding_bytes`), waiting for it up to the request timeout.
    async fn reserve_decoding(
        &self,
        encoding: Encoding,
        wire_len: usize,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, IngestError> {
        let limits = &self.inner.config.limits;
        let bound = match encoding {
            Encoding::Identity => wire_len,
            Encoding::Gzip => wire_len.saturating_mul(DEFLATE_MAX_RATIO).min(limits.max_decoded_bytes),
            Encoding::Zstd => limits.max_decoded_bytes,
        };
        // Twice: the decoded copy grows by doubling, and the parse keeps it alongside its tree.
        let permits = decoding_permits(bound.saturating_mul(2)).min(decoding_permits(limits.max_decoding_bytes));
        let permits = u32::try_from(permits).unwrap_or(u32::MAX);
        match tokio::time::timeout(limits.request_timeout, self.inner.decoding.acquire_many(permits)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(IngestError::Unavailable("ingest is shutting down".into())),
            Err(_) => {
                metrics::counter!("ingest_decoding_budget_exhausted_total").increment(1);
                Err(IngestError::Overloaded)
            }
        }
    }
}
