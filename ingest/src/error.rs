//! Every way a request can fail, and the one place that maps each to an HTTP status. Retryable
//! failures (503, 429, 408) are kept apart from permanent ones (4xx) so SDKs retry only the former.

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no valid write key: send it as Basic auth (key as user), a Bearer token, or writeKey")]
    Unauthorized,
    #[error("no valid write key: send it as Basic auth (the key as user name or as password) or a Bearer token")]
    XapiUnauthorized,
    #[error("{0}")]
    BadRequest(String),
    /// An xAPI request's first invalid statement: the whole request is refused (xAPI batches are
    /// all or nothing).
    #[error("statement {index}: {reason}")]
    InvalidStatement {
        /// Its position in the request (0 for a single statement).
        index: usize,
        /// The statement's field at fault (`actor.mbox`, `result.score.scaled`...), when one is.
        field: Option<String>,
        reason: String,
    },
    /// A statement id already stands for a statement with other content (xAPI: 409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request was not received within {0:?}")]
    RequestTimeout(Duration),
    #[error("no such endpoint; events go to POST /v1/batch, /v1/track, /v1/page, /v1/screen, /v1/identify, /v1/group or /v1/alias, xAPI statements to /xAPI/statements")]
    NotFound,
    #[error("{0}")]
    OriginNotAllowed(String),
    /// With the methods the route answers (`Route::methods`).
    #[error("method not allowed here; use {0}")]
    MethodNotAllowed(&'static str),
    #[error("too many events in flight; retry shortly")]
    Overloaded,
    #[error("this write key sends events faster than its rate limit; retry after {0} s")]
    RateLimited(u32),
    #[error("the event stream did not confirm the events; nothing was acknowledged, retry: {0}")]
    Unavailable(String),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Unauthorized | IngestError::XapiUnauthorized => StatusCode::UNAUTHORIZED,
            IngestError::BadRequest(_) | IngestError::InvalidStatement { .. } => StatusCode::BAD_REQUEST,
            IngestError::Conflict(_) => StatusCode::CONFLICT,
            IngestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            IngestError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Overloaded | IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a client should wait before retrying, for the retryable failures.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            IngestError::Overloaded => Some(1),
            IngestError::RateLimited(seconds) => Some(*seconds),
            IngestError::Unavailable(_) => Some(5),
            _ => None,
        }
    }

    /// A short stable code for the response body and the `reason` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthorized | IngestError::XapiUnauthorized => "unauthorized",
            IngestError::BadRequest(_) => "bad_request",
            IngestError::InvalidStatement { .. } => "invalid_statement",
            IngestError::Conflict(_) => "conflict",
            IngestError::PayloadTooLarge(_) => "payload_too_large",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::OriginNotAllowed(_) => "origin_not_allowed",
            IngestError::RequestTimeout(_) => "request_timeout",
            IngestError::NotFound => "not_found",
            IngestError::MethodNotAllowed(_) => "method_not_allowed",
            IngestError::Overloaded => "overloaded",
            IngestError::RateLimited(_) => "rate_limited",
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}
