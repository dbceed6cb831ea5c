//! Response shapes (docs/contract.md §3, §4): JSON bodies, errors with the codes SDKs print and
//! `Retry-After`, the CORS preflight, and the CORS headers every response carries.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::error::IngestError;

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn empty_response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The answer to a CORS preflight: any origin (echoed by [`cors`]), the route's methods
/// (`Route::methods`) and OPTIONS, the headers asked for, cached by the browser for 24 h.
pub fn preflight_response(methods: &'static str) -> Response<Full<Bytes>> {
    let mut response = empty_response(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    let allowed = format!("{methods}, OPTIONS");
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_str(&allowed).unwrap_or_else(|_| HeaderValue::from_static("POST, OPTIONS")),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// Headers a preflight allows when the browser names none.
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type, content-encoding";

/// Puts CORS headers on every response, errors included, so browsers let pages read why a request
/// failed: the origin is echoed (without `Allow-Credentials`: keys travel in headers or the
/// body, never in cookies), and a preflight's requested headers are allowed. The caller passes no
/// origin for a request its project's allow-list refused (`Sender::admit`), which then gets no
/// grant.
pub fn cors(response: &mut Response<Full<Bytes>>, origin: Option<HeaderValue>, requested: &Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return;
    };
    // Any origin, and so no `Allow-Credentials`: write keys travel in the body or in an explicit
    // Authorization header, never in cookies, so no page needs the browser's credentials here.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Retry-After"),
    );
    if headers.contains_key(header::ACCESS_CONTROL_MAX_AGE) {
        let allowed = requested
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    }
}

pub fn error_response(error: &IngestError) -> Response<Full<Bytes>> {
    // `code` and `message` are what Segment's and RudderStack's SDKs print from an error body;
    // `error` and `detail` are this API's own names (docs/contract.md §4).
    let mut body = serde_json::json!({
        "success": false,
        "error": error.code(),
        "detail": error.to_string(),
        "code": error.code(),
        "message": error.to_string(),
    });
    if let IngestError::InvalidStatement { index, field, .. } = error {
        body["index"] = serde_json::json!(index);
        body["field"] = serde_json::json!(field);
    }
    let mut response = json_response(error.status(), body);
    if let Some(seconds) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
