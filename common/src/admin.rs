//! The admin address every binary serves, apart from its public one so it can stay private:
//! `GET /metrics` (Prometheus text format), `GET /healthz` (the process is alive) and
//! `GET /readyz` (503 with the reason until every dependency answers).

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A readiness probe: resolves to `Err(reason)` while a dependency does not answer.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the admin endpoints need.
#[derive(Clone)]
pub struct AdminState {
    /// Renders the process's metrics; `None` in tests that install no recorder (then `/metrics`
    /// answers an empty body).
    pub metrics: Option<PrometheusHandle>,
    /// Asked on every `/readyz`, bounded by [`READINESS_TIMEOUT`].
    pub readiness: ReadinessCheck,
}

/// Longest a `/readyz` waits for the dependency checks before answering 503.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(state: AdminState, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n".into()));
    }
    Ok(match request.uri().path() {
        "/metrics" => {
            let body = state.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match tokio::time::timeout(READINESS_TIMEOUT, (state.readiness)()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready\n".into()),
            Ok(Err(reason)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: dependency checks timed out\n".into(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
