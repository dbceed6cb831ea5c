//! The Prometheus metrics the api records (docs/contract.md §8), described once so `/metrics` carries
//! HELP text and units for each.

use std::time::Instant;

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use metrics::{describe_counter, describe_histogram, Unit};

/// Registers the descriptions; called by `main` after the recorder is installed.
pub fn describe() {
    describe_histogram!(
        "api_http_request_duration_seconds",
        Unit::Seconds,
        "Time from request to response, by route pattern and status."
    );
    describe_counter!("api_cache_hits_total", "Responses served from the response cache.");
    describe_counter!(
        "api_cache_misses_total",
        "Responses computed from PostgreSQL or MongoDB because the cache had no current entry."
    );
    // Registered at zero, so dashboards and alerts see both series from the start.
    metrics::counter!("api_cache_hits_total").increment(0);
    metrics::counter!("api_cache_misses_total").increment(0);
}

/// Middleware recording each request's duration, labelled by route pattern (never the raw URL,
/// which would make the label set unbounded) and status.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "api_http_request_duration_seconds",
        "route" => route,
        "status" => response.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
