//! How a read route answers: its typed result as JSON, from the response cache when the project's
//! current generation has it, else computed, stored and sent (`crate::cache` has the mechanics:
//! generations, ETags, 304s, gzip, hit and miss counters). Every cached route goes through
//! [`cached`], so they differ only in their key and what they compute.

use std::future::Future;

use axum::{http::HeaderMap, response::Response};
use serde::Serialize;

use crate::{auth::Principal, ApiError, App};

/// The answer under `key` for `principal`'s project: cached, or `compute`d (only then polled),
/// stored and sent. Errors are sent, never stored.
pub async fn cached<T: Serialize>(
    app: &App,
    principal: &Principal,
    headers: &HeaderMap,
    key: String,
    compute: impl Future<Output = Result<T, ApiError>>,
) -> Response {
    app.cache
        .respond(&principal.project, key, headers, || async { json(compute.await?) })
        .await
}

/// `value` as a JSON value. Answers go through [`serde_json::Value`] rather than straight to bytes
/// so that their keys come out in the map order serde_json is built with (sorted, or as inserted
/// when a dependency turns on `preserve_order`), as they always have: the bytes, and the ETags
/// clients hold, stay the same.
pub fn json<T: Serialize>(value: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}
