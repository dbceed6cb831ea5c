//! xAPI statements in (docs/contract.md §4 "xAPI statements"), so that Moodle's logstore_xapi and
//! Open edX's event-routing-backends send to ingest with only an endpoint and credentials: ingest
//! is their LRS for writing. A request's way:
//!
//! 1. `X-Experience-API-Version` 1.0.x is required (400); every answer carries `1.0.3`.
//! 2. The write key: Basic auth with the key as user name or as password (senders' settings ask
//!    for a "username" and a "password", or a "key" and a "secret"), or Bearer (401 otherwise;
//!    503 when PostgreSQL cannot say), then the project's origin allow-list, as on every route.
//! 3. The body, within the same size, time and decoding budgets as Segment's: one statement, or
//!    (POST) an array of them.
//! 4. Every statement is validated (`statement`), given its id (its own, `PUT ?statementId=`, or
//!    one derived from its content: `id`), translated to a Segment track call (`translate`) and
//!    that call validated and encoded by the reference path of `decode`, as any event. The batch
//!    is all or nothing: the first statement refused is the answer (400, its index, field and why).
//! 5. The rate limit and in-flight bound, then the ids are recorded with their content hashes in
//!    PostgreSQL (`store`): a known id with other content is 409 for the whole request.
//! 6. The events are published and, once JetStream acknowledged every one, the answer: 200 with
//!    the statement ids in order (POST), 204 (PUT).

mod duration;
mod id;
mod statement;
mod store;
mod translate;

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    auth::Sender,
    decode::{encode_built, Normalisation},
    error::IngestError,
    server::{App, Body, Reply, XAPI_VERSION_HEADER},
};

/// The xAPI version this LRS speaks, and answers with.
const VERSION: &str = "1.0.3";

/// `GET /xAPI/about`.
pub(crate) fn about() -> Reply {
    Reply::Json(StatusCode::OK, serde_json::json!({"version": [VERSION]}))
}

/// Adds `X-Experience-API-Version` to an xAPI answer, errors included, and lets browser pages
/// read it.
pub(crate) fn version_headers(response: &mut Response<Full<Bytes>>) {
    let headers = response.headers_mut();
    headers.insert(XAPI_VERSION_HEADER, HeaderValue::from_static(VERSION));
    if headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS) {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, X-Experience-API-Version"),
        );
    }
}

/// Refuses a request without `X-Experience-API-Version: 1.0.x` (xAPI "Communication" 3.3).
fn check_version(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(XAPI_VERSION_HEADER) else {
        return Err(IngestError::BadRequest(format!(
            "the X-Experience-API-Version header is required; this LRS speaks {VERSION} (send 1.0.x)"
        )));
    };
    let text = value.to_str().unwrap_or_default().trim();
    let patch = text.strip_prefix("1.0");
    let supported = patch.is_some_and(|patch| {
        patch.is_empty()
            || patch
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if supported {
        Ok(())
    } else {
        Err(IngestError::BadRequest(format!(
            "X-Experience-API-Version {text:?} is not supported; this LRS speaks {VERSION} (send 1.0.x)"
        )))
    }
}

/// The credentials a request offers as a write key, in order: Basic's user name then password
/// (either may be the key), or a Bearer token.
fn offered_keys(headers: &HeaderMap) -> Vec<String> {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return Vec::new();
    };
    let credentials = credentials.trim();
    let mut keys = Vec::new();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        match decoded.split_once(':') {
            Some((user, password)) => keys.extend([user.to_owned(), password.to_owned()]),
            None => keys.push(decoded),
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        keys.push(credentials.to_owned());
    }
    keys.retain(|key| !key.is_empty());
    keys.dedup();
    keys
}

/// `statementId` of a PUT's query string.
fn statement_id_param(query: Option<&str>) -> Result<Uuid, IngestError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("statementId="))
        .ok_or_else(|| IngestError::BadRequest("PUT /xAPI/statements needs ?statementId=<UUID>".into()))?;
    Uuid::try_parse(value).map_err(|_| IngestError::BadRequest(format!("statementId {value:?} is not a UUID")))
}

/// A request's statements, ready to record and publish.
struct Prepared {
    /// Each statement's id, in request order (what a POST answers).
    ids: Vec<Uuid>,
    /// One per distinct id, in request order.
    entries: Vec<store::Entry>,
    events: crate::decode::EncodedEvents,
}

impl App {
    /// `POST` or `PUT /xAPI/statements`.
    pub(crate) async fn xapi_statements(
        &self,
        request: Request<Incoming>,
        origin: Option<&HeaderValue>,
    ) -> Result<Reply, IngestError> {
        let received_at = Utc::now();
        check_version(request.headers())?;
        let sender = self.xapi_sender(request.headers(), origin).await?;
        let put = request.method() == Method::PUT;
        let put_id = if put {
            Some(statement_id_param(request.uri().query())?)
        } else {
            None
        };
        let prepared = {
            // Held until the statements are translated and encoded.
            let body = self.read_body(request).await?;
            let statements = parse(&body, put)?;
            let config = &self.inner.config;
            if statements.len() > config.limits.max_batch_events {
                return Err(IngestError::PayloadTooLarge(format!(
                    "the request has {} statements; at most {} are allowed per request",
                    statements.len(),
                    config.limits.max_batch_events
                )));
            }
            metrics::counter!("ingest_events_received_total").increment(statements.len() as u64);
            let norm = Normalisation {
                project: &sender.project,
                received_at,
                max_clock_skew: config.max_clock_skew,
                historical_horizon: config.historical_horizon,
                limits: &config.limits,
            };
            prepare(&statements, put_id, &norm)?
        };
        let events = prepared.events.len();
        if events > 0 {
            let _permit = self.admit(&sender, events)?;
            let conflict = store::record(&self.inner.pool, &sender.project, &prepared.entries)
                .await
                .map_err(|error| {
                    let missing_table =
                        matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"));
                    tracing::warn!(%error, missing_table, "cannot record xAPI statement ids in PostgreSQL");
                    IngestError::Unavailable("the statement ids cannot be checked right now".into())
                })?;
            if let Some(at) = conflict {
                let id = prepared.entries[at].id;
                return Err(IngestError::Conflict(format!(
                    "statement id {id} already stands for a statement with other content; nothing was stored"
                )));
            }
            self.publish(&sender, prepared.events).await?;
        }
        if put {
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        } else {
            let ids = prepared.ids.iter().map(|id| Value::String(id.to_string())).collect();
            Ok(Reply::Json(StatusCode::OK, Value::Array(ids)))
        }
    }

    /// The sender of the first offered key that is a write key (401 when none is; 503 when
    /// PostgreSQL could not say and no key was accepted), admitted from `origin`.
    async fn xapi_sender(&self, headers: &HeaderMap, origin: Option<&HeaderValue>) -> Result<Sender, IngestError> {
        let mut unavailable = None;
        for key in offered_keys(headers) {
            match self.inner.keys.authenticate(&key).await {
                Ok(sender) => return sender.admit(origin),
                Err(IngestError::Unauthorized) => {}
                Err(error) => unavailable = Some(error),
            }
        }
        Err(unavailable.unwrap_or(IngestError::XapiUnauthorized))
    }
}

/// The request's statements: its JSON object, or (POST only) its array.
fn parse(body: &Body<'_>, put: bool) -> Result<Vec<Value>, IngestError> {
    let media = body
        .content_type
        .as_ref()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim().to_owned();
    if media.starts_with("multipart/") {
        return Err(IngestError::UnsupportedMediaType(
            "statements with attachments (multipart/mixed) are not supported; send application/json".into(),
        ));
    }
    let first = body.bytes.iter().find(|b| !b.is_ascii_whitespace());
    let claims_json = media.is_empty() || media == "application/json" || media.ends_with("+json");
    if !matches!(first, Some(b'{' | b'[')) && !claims_json {
        return Err(IngestError::UnsupportedMediaType(format!(
            "the body ({media}) is not JSON; send statements as application/json"
        )));
    }
    if first.is_none() {
        return Err(IngestError::BadRequest(
            "the request body is empty; send a statement or an array of them".into(),
        ));
    }
    let value: Value = serde_json::from_slice(&body.bytes)
        .map_err(|e| IngestError::BadRequest(format!("the body is not JSON: {e}")))?;
    match value {
        Value::Array(_) if put => Err(IngestError::BadRequest(
            "PUT /xAPI/statements takes one statement, not an array".into(),
        )),
        Value::Array(statements) => Ok(statements),
        Value::Object(_) => Ok(vec![value]),
        _ => Err(IngestError::BadRequest(
            "the body must be a statement (a JSON object) or an array of statements".into(),
        )),
    }
}

/// Validates, identifies, translates and encodes every statement; the first refused refuses the
/// request. A statement repeated within the request (same id, same content) becomes one event;
/// one id with two contents is refused (xAPI "Communication" 2.1.2).
fn prepare(statements: &[Value], put_id: Option<Uuid>, norm: &Normalisation<'_>) -> Result<Prepared, IngestError> {
    let mut ids = Vec::with_capacity(statements.len());
    let mut entries: Vec<store::Entry> = Vec::with_capacity(statements.len());
    let mut first_index: HashMap<Uuid, usize> = HashMap::with_capacity(statements.len());
    let mut translated = Vec::with_capacity(statements.len());
    for (index, value) in statements.iter().enumerate() {
        let refuse = |invalid: statement::Invalid| IngestError::InvalidStatement {
            index,
            field: invalid.field,
            reason: invalid.reason,
        };
        let checked = statement::validate(value).map_err(refuse)?;
        let hash = id::content_hash(checked.raw);
        let id = match (put_id, checked.id) {
            (Some(param), Some(own)) if param != own => {
                return Err(refuse(statement::Invalid {
                    field: Some("id".into()),
                    reason: format!("`id` {own} is not the statementId of the request ({param})"),
                }));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => id::derived_id(&hash),
        };
        ids.push(id);
        match first_index.get(&id) {
            Some(&first) if entries[first].hash == hash => continue,
            Some(&first) => {
                return Err(refuse(statement::Invalid {
                    field: Some("id".into()),
                    reason: format!("`id` {id} is also statement {first}'s, with other content"),
                }));
            }
            None => {
                first_index.insert(id, entries.len());
                entries.push(store::Entry { id, hash });
            }
        }
        let original = serde_json::to_string(value).unwrap_or_default();
        translated.push((index, translate::translate(&checked, id, original)));
    }
    let events = translated.iter().map(|(_, t)| t.event.clone()).collect();
    let encoded = encode_built(events, norm);
    if let Some(rejected) = encoded.rejected.first() {
        let (index, translation) = &translated[rejected.index];
        let message = rejected.reason.message();
        let field = translation.source_of(message).map(str::to_owned);
        let from = field.as_deref().map(|f| format!(" (from `{f}`)")).unwrap_or_default();
        return Err(IngestError::InvalidStatement {
            index: *index,
            field,
            reason: format!(
                "its {} event is refused ({}): {message}{from}",
                translation.name,
                rejected.reason.code()
            ),
        });
    }
    debug_assert_eq!(encoded.duplicates, 0, "statement ids are distinct here");
    Ok(Prepared {
        ids,
        entries,
        events: encoded.accepted,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone as _;
    use serde_json::json;

    use super::*;
    use crate::config::Limits;

    fn norm(limits: &Limits) -> Normalisation<'_> {
        Normalisation {
            project: "p1",
            received_at: Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap(),
            max_clock_skew: Duration::from_secs(60),
            historical_horizon: Duration::from_secs(30 * 86_400),
            limits,
        }
    }

    fn viewed(user: &str) -> Value {
        json!({
            "actor": {"account": {"homePage": "https://lms.example.org", "name": user}},
            "verb": {"id": "http://id.tincanapi.com/verb/viewed"},
            "object": {"id": "https://lms.example.org/course/view.php?id=2",
                       "definition": {"type": "https://w3id.org/xapi/cmi5/activitytype/course"}},
            "timestamp": "2026-12-01T10:00:00Z",
        })
    }

    fn refused(statements: &[Value]) -> (usize, Option<String>, String) {
        let limits = Limits::default();
        match prepare(statements, None, &norm(&limits)) {
            Err(IngestError::InvalidStatement { index, field, reason }) => (index, field, reason),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn versions_1_0_x_are_accepted_and_others_refused() {
        let mut headers = HeaderMap::new();
        assert!(check_version(&headers).is_err());
        for (version, ok) in [
            ("1.0.3", true),
            ("1.0.0", true),
            ("1.0", true),
            (" 1.0.12 ", true),
            ("1.0.", false),
            ("2.0.0", false),
            ("1.0.x", false),
            ("0.95", false),
        ] {
            headers.insert(XAPI_VERSION_HEADER, HeaderValue::from_static(version));
            assert_eq!(check_version(&headers).is_ok(), ok, "{version}");
        }
    }

    #[test]
    fn either_part_of_basic_auth_and_a_bearer_token_are_offered_as_keys() {
        let mut headers = HeaderMap::new();
        let basic = |text: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text));
        for (value, keys) in [
            (basic("wk_1:"), vec!["wk_1"]),
            (basic("moodle:wk_2"), vec!["moodle", "wk_2"]),
            (basic(":wk_3"), vec!["wk_3"]),
            (basic("wk_4:wk_4"), vec!["wk_4"]),
            ("Bearer wk_5".to_owned(), vec!["wk_5"]),
            ("Digest x".to_owned(), vec![]),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(offered_keys(&headers), keys, "{value}");
        }
    }

    #[test]
    fn ids_are_the_statements_or_derived_from_content_and_stable() {
        let limits = Limits::default();
        let mut with_id = viewed("1");
        with_id["id"] = json!("6E3B3A0C-2F7A-4A8B-9A51-5C9F2F8B1E2D");
        let prepared = prepare(&[viewed("1"), with_id, viewed("2")], None, &norm(&limits)).unwrap();
        assert_eq!(prepared.ids[1].to_string(), "6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d");
        assert_eq!(prepared.ids[0].get_version_num(), 8);
        assert_ne!(prepared.ids[0], prepared.ids[2]);
        assert_eq!(
            prepared.entries[0].hash, prepared.entries[1].hash,
            "the id is not content"
        );
        let again = prepare(&[viewed("2")], None, &norm(&limits)).unwrap();
        assert_eq!(again.ids[0], prepared.ids[2], "a resent statement has the same id");
        let put = prepare(&[viewed("2")], Some(prepared.ids[1]), &norm(&limits)).unwrap();
        assert_eq!(put.ids, [prepared.ids[1]]);
    }

    #[test]
    fn the_first_invalid_statement_refuses_the_batch_with_its_index_and_field() {
        let mut bad = viewed("3");
        bad["result"] = json!({"score": {"scaled": 2}});
        let mut worse = viewed("4");
        worse["verb"]["id"] = json!("viewed");
        let (index, field, reason) = refused(&[viewed("1"), bad, worse]);
        assert_eq!((index, field.as_deref()), (1, Some("result.score.scaled")));
        assert!(reason.contains("within -1..1"), "{reason}");
    }

    #[test]
    fn a_translated_event_refused_by_ingest_rules_refuses_the_batch_naming_the_statement_field() {
        let long = "u".repeat(257);
        let (index, field, reason) = refused(&[viewed("1"), viewed(&long)]);
        assert_eq!((index, field.as_deref()), (1, Some("actor.account.name")));
        assert!(
            reason.contains("course_viewed event is refused (too_long)") && reason.contains("`userId`"),
            "{reason}"
        );
        let mut long_course = viewed("1");
        long_course["object"]["id"] = json!(format!("https://lms.example.org/{}", "c".repeat(256)));
        let (_, field, _) = refused(&[long_course]);
        assert_eq!(field.as_deref(), Some("object.id"));
        let mut old = viewed("1");
        old["timestamp"] = json!("1999-12-31T23:00:00Z");
        let (_, field, reason) = refused(&[old]);
        assert_eq!(field.as_deref(), Some("timestamp"), "{reason}");
        let mut large = viewed("1");
        large["object"]["definition"]["description"] = json!({"en": "d".repeat(64 * 1024)});
        let (_, field, reason) = refused(&[large]);
        assert_eq!(field, None);
        assert!(reason.contains("(too_large)"), "{reason}");
        // NUL inside the statement is escaped text in `xapi_statement`, which the stores keep.
        let mut nul = viewed("1");
        nul["object"]["definition"]["name"] = json!({"en": "a\u{0}b"});
        let limits = Limits::default();
        assert!(prepare(&[nul], None, &norm(&limits)).is_ok());
    }

    #[test]
    fn a_statement_repeated_in_a_request_is_one_event_and_one_id_with_two_contents_is_refused() {
        let limits = Limits::default();
        let prepared = prepare(&[viewed("1"), viewed("1")], None, &norm(&limits)).unwrap();
        assert_eq!(
            (prepared.ids.len(), prepared.entries.len(), prepared.events.len()),
            (2, 1, 1)
        );
        let mut a = viewed("1");
        a["id"] = json!("6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d");
        let mut b = viewed("2");
        b["id"] = a["id"].clone();
        let (index, field, reason) = refused(&[a, b]);
        assert_eq!((index, field.as_deref()), (1, Some("id")));
        assert!(reason.contains("also statement 0's"), "{reason}");
    }
}
