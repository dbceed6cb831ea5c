//! The router and what every route shares: the validated query types (ranges, limits, pages).
//! Every handler takes the caller's [`Principal`](crate::auth::Principal), checks what it may read,
//! and scopes every query to the principal's project, so no query reaches another project's rows.

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue},
    middleware::Next,
    response::{Html, IntoResponse, Response},
    routing::{get, post, put},
    Router,
};
use chrono::{Datelike as _, NaiveDate};
use serde::Deserialize;
use tower_http::compression::CompressionLayer;

use crate::{courses, metrics_routes, users, ApiError, App};

/// Every route: (method, path pattern). The OpenAPI test checks each is documented.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/metrics/active-users"),
    ("get", "/v1/metrics/events/top"),
    ("get", "/v1/metrics/pages/top"),
    ("post", "/v1/funnels"),
    ("get", "/v1/retention"),
    ("get", "/v1/courses"),
    ("put", "/v1/courses/{id}"),
    ("get", "/v1/courses/{id}/analytics"),
    ("get", "/v1/courses/{id}/learners"),
    ("get", "/v1/users/{id}/stats"),
    ("get", "/v1/users/{id}/progress"),
    ("get", "/v1/users/{id}/progress/stream"),
    ("get", "/v1/users/{id}/learning-paths/{course_id}"),
];

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/metrics/active-users", get(metrics_routes::active_users))
        .route("/v1/metrics/events/top", get(metrics_routes::top_events))
        .route("/v1/metrics/pages/top", get(metrics_routes::top_pages))
        .route("/v1/funnels", post(metrics_routes::funnel))
        .route("/v1/retention", get(metrics_routes::retention))
        .route("/v1/courses", get(courses::list))
        .route("/v1/courses/{id}", put(courses::put))
        .route("/v1/courses/{id}/analytics", get(courses::analytics))
        .route("/v1/courses/{id}/learners", get(courses::learners))
        .route("/v1/users/{id}/stats", get(users::stats))
        .route("/v1/users/{id}/progress", get(users::progress))
        .route("/v1/users/{id}/progress/stream", get(users::progress_stream))
        .route("/v1/users/{id}/learning-paths/{course_id}", get(users::learning_path))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), deadline))
        .route_layer(axum::middleware::from_fn(crate::instruments::record))
        .fallback(|| async { ApiError::NotFound })
        .layer(CompressionLayer::new())
        .with_state(app)
}

/// Bounds the time to a response by `API_REQUEST_TIMEOUT` (a live stream's later events are not
/// part of it): 503 rather than a request hung on a connection PostgreSQL no longer answers.
async fn deadline(State(app): State<App>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(app.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(
            "PostgreSQL did not answer within the request timeout (API_REQUEST_TIMEOUT); retry shortly".into(),
        )
        .response(),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../static/index.html"))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        crate::openapi::document().to_string(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub interval: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    /// Active users only: restrict to the members of this group (Segment `group` calls).
    pub group: Option<String>,
}

/// A validated, inclusive range of UTC days.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Range {
    pub fn parse(from: Option<&str>, to: Option<&str>, max_days: i64) -> Result<Self, ApiError> {
        let (from, to) = (date("from", from)?, date("to", to)?);
        if from > to {
            return Err(ApiError::Unprocessable(format!("`from` ({from}) is after `to` ({to})")));
        }
        let days = (to - from).num_days() + 1;
        if days > max_days {
            return Err(ApiError::Unprocessable(format!(
                "the range has {days} days; at most {max_days} are allowed"
            )));
        }
        Ok(Self { from, to })
    }

    /// The normalised form used in cache keys.
    pub fn key(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }
}

pub fn date(name: &str, value: Option<&str>) -> Result<NaiveDate, ApiError> {
    let value = value.ok_or_else(|| ApiError::Unprocessable(format!("`{name}` is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        // Events are dated from ingest's time floor (INGEST_TIME_FLOOR, 2000-01-01 by default, which
        // backfills may lower), and day arithmetic stays in range.
        .filter(|d| (1970..=9999).contains(&d.year()))
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "`{name}` must be a date from 1970-01-01 to 9999-12-31 as YYYY-MM-DD, not {value:?}"
            ))
        })
}

/// An integer query parameter within `min..=max`, `default` when absent.
pub fn bounded(name: &str, value: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    let Some(value) = value else { return Ok(default) };
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::Unprocessable(format!(
            "`{name}` must be an integer from {min} to {max}, not {value:?}"
        ))),
    }
}

/// A page of a list: `limit` (1–500, default 50) items from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn parse(query: &RangeQuery) -> Result<Self, ApiError> {
        Ok(Self {
            limit: bounded("limit", query.limit.as_deref(), 50, 1, 500)?,
            offset: bounded("offset", query.offset.as_deref(), 0, 0, i64::from(i32::MAX))?,
        })
    }

    /// The page's envelope: items, total and the next offset (null on the last page).
    pub fn envelope(&self, items: serde_json::Value, total: i64) -> serde_json::Value {
        let next = (self.offset + self.limit < total).then_some(self.offset + self.limit);
        serde_json::json!({"items": items, "total": total, "limit": self.limit, "offset": self.offset, "next_offset": next})
    }
}

/// An id from the path: 1 to 256 bytes, no control characters (ingest accepts no others).
pub fn path_id(name: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::Unprocessable(format!("`{name}` must have 1 to 256 bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "`{name}` must not contain control characters (such as NUL)"
        )));
    }
    Ok(())
}

/// A JSON request body whose rejections (not JSON, wrong shape) are `{"error","detail"}` 422s
/// like every other invalid request.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::Unprocessable(rejection.body_text())),
        }
    }
}
