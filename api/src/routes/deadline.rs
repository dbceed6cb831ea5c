//! The request deadline: a layer around every route, so that a request waiting on a PostgreSQL
//! that no longer answers ends in a 503 with the reason instead of hanging its connection (the
//! server's statement timeout cannot end a wait for an answer that never comes).

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use crate::{ApiError, App};

/// Bounds the time to a response by `API_REQUEST_TIMEOUT` (a live stream's later events are not
/// part of it): 503 rather than a request hung on a connection PostgreSQL no longer answers.
pub async fn deadline(State(app): State<App>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(app.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(
            "PostgreSQL did not answer within the request timeout (API_REQUEST_TIMEOUT); retry shortly".into(),
        )
        .response(),
    }
}
