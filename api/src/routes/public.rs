//! The two routes anyone may read, uncached and without credentials: the dashboard page (which
//! then reads the API with the key it is given) and the OpenAPI document.

use axum::{
    http::{header, HeaderValue},
    response::{Html, IntoResponse as _, Response},
};

/// `GET /`: the dashboard page, built into the binary.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        crate::openapi::document().to_string(),
    )
        .into_response()
}
