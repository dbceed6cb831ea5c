//! Every way a read request can fail, mapped to a status and a JSON body `{"error","detail"}` in
//! one place. Internal errors are logged with their cause chain; the client gets a generic body.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Authenticated, but these credentials may not read this resource.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("not found")]
    NotFound,
    /// Over a per-credential limit (live streams): the client should close what it holds.
    #[error("{0}")]
    TooMany(String),
    /// PostgreSQL is unreachable, or the query ran past the statement timeout: worth retrying
    /// (or narrowing), never the client's fault and never a hung connection.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::unavailable(&error).unwrap_or_else(|| ApiError::Internal(anyhow::Error::new(error)))
    }
}

impl ApiError {
    /// A PostgreSQL error that a retry may cure (503), if `error` is one: a statement timeout,
    /// or PostgreSQL unreachable or shutting down.
    pub fn unavailable(error: &sqlx::Error) -> Option<ApiError> {
        match error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(QUERY_CANCELED) => Some(ApiError::Unavailable(
                "the query ran past the statement timeout (API_STATEMENT_TIMEOUT); narrow the range or retry".into(),
            )),
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "PostgreSQL unavailable");
                Some(ApiError::Unavailable("PostgreSQL is unavailable; retry shortly".into()))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
                tracing::warn!(%error, "PostgreSQL unavailable");
                Some(ApiError::Unavailable("PostgreSQL is unavailable; retry shortly".into()))
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response()
    }
}

impl ApiError {
    /// The response for this error (by reference: the cache shares one error among the requests
    /// that waited for the same computation).
    pub fn response(&self) -> Response {
        let (status, code, detail) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", self.to_string()),
            ApiError::Forbidden(detail) => (StatusCode::FORBIDDEN, "forbidden", detail.clone()),
            ApiError::Unprocessable(detail) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", detail.clone()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", self.to_string()),
            ApiError::TooMany(detail) => (StatusCode::TOO_MANY_REQUESTS, "too_many", detail.clone()),
            ApiError::Unavailable(detail) => {
                let body = Json(serde_json::json!({"error": "unavailable", "detail": detail}));
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    body,
                )
                    .into_response();
            }
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request failed; it has been logged".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({"error": code, "detail": detail}))).into_response()
    }
}
