//! From request bytes to accepted events. The envelope is parsed once with simd-json; then every
//! event is validated and normalised on its own, so one bad event is rejected with its index,
//! messageId and reason while the rest of the batch is accepted (docs/contract.md §4).

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use common::event::{snake_case, Event, EventType};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{config::Limits, error::IngestError};

/// Which endpoint the body came to: a batch, or one event of a known type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Batch,
    Single(EventType),
}

/// The Segment batch envelope. Unknown fields (`integrations`, `metadata`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct BatchEnvelope {
    batch: Option<Vec<Value>>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Value>,
}

/// A parsed request, before authentication and per-event validation.
#[derive(Debug)]
pub struct Envelope {
    sent_at: Option<Value>,
    context: Option<Map<String, Value>>,
    events: Vec<Value>,
    endpoint: Endpoint,
}

/// One rejected event, reported back to the client as `{index, messageId?, code, error}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEvent {
    pub index: usize,
    pub message_id: Option<String>,
    pub reason: Rejection,
}

impl serde::Serialize for RejectedEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("index", &self.index)?;
        if let Some(id) = &self.message_id {
            map.serialize_entry("messageId", id)?;
        }
        map.serialize_entry("code", self.reason.code())?;
        map.serialize_entry("error", self.reason.message())?;
        map.end()
    }
}

/// Why one event was refused (docs/contract.md §4): a stable [`code`](Rejection::code), the
/// `code` of its entry in the response and the `reason` label of `ingest_events_rejected_total`,
/// and the reason in words, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A required field is absent (`type` in a batch, an id, `event` of a track call...).
    MissingField(String),
    /// A field has the wrong type, is empty, or holds what a store cannot (control characters).
    InvalidField(String),
    /// An identifier, page or property key is longer than its limit.
    TooLong(String),
    /// A property or traits key is not allowed (`$`, `.`, NUL...).
    InvalidKey(String),
    /// `properties`, `traits` or `context` nest deeper than the limit.
    TooDeep(String),
    /// The normalised event is larger than `INGEST_MAX_EVENT_BYTES`.
    TooLarge(String),
    /// A time is not ISO-8601, or the event time is before the floor.
    InvalidTime(String),
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingField(_) => "missing_field",
            Rejection::InvalidField(_) => "invalid_field",
            Rejection::TooLong(_) => "too_long",
            Rejection::InvalidKey(_) => "invalid_key",
            Rejection::TooDeep(_) => "too_deep",
            Rejection::TooLarge(_) => "too_large",
            Rejection::InvalidTime(_) => "invalid_time",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Rejection::MissingField(m)
            | Rejection::InvalidField(m)
            | Rejection::TooLong(m)
            | Rejection::InvalidKey(m)
            | Rejection::TooDeep(m)
            | Rejection::TooLarge(m)
            | Rejection::InvalidTime(m) => m,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// The outcome of validating a request's events.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Accepted events with their JSON encoding, ready to publish.
    pub accepted: Vec<(Event, Vec<u8>)>,
    /// Repeats of a messageId within this request, dropped.
    pub duplicates: usize,
    pub rejected: Vec<RejectedEvent>,
}

/// What normalisation needs besides the events.
#[derive(Debug, Clone)]
pub struct Normalisation<'a> {
    pub project: &'a str,
    pub received_at: DateTime<Utc>,
    pub max_clock_skew: Duration,
    pub historical_horizon: Duration,
    pub limits: &'a Limits,
}

/// Parses a decompressed request body. Fails only for a malformed envelope (400) or too many
/// events (413); problems with single events are reported by [`Envelope::validate`].
pub fn decode_batch(body: &mut [u8], endpoint: Endpoint, limits: &Limits) -> Result<Envelope, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    match endpoint {
        Endpoint::Batch => {
            let envelope: BatchEnvelope = simd_json::serde::from_slice(body)
                .map_err(|e| IngestError::BadRequest(format!("the body is not a JSON batch envelope: {e}")))?;
            let events = envelope
                .batch
                .ok_or_else(|| IngestError::BadRequest("the body has no `batch` array".into()))?;
            if events.len() > limits.max_batch_events {
                return Err(IngestError::PayloadTooLarge(format!(
                    "the batch has {} events; at most {} are allowed per request",
                    events.len(),
                    limits.max_batch_events
                )));
            }
            let context = match envelope.context {
                None | Some(Value::Null) => None,
                Some(Value::Object(map)) => Some(map),
                Some(_) => return Err(IngestError::BadRequest("`context` must be an object".into())),
            };
            Ok(Envelope {
                sent_at: envelope.sent_at,
                context,
                events,
                endpoint,
            })
        }
        Endpoint::Single(_) => {
            let value: Value = simd_json::serde::from_slice(body)
                .map_err(|e| IngestError::BadRequest(format!("the body is not a JSON event: {e}")))?;
            let Value::Object(mut event) = value else {
                return Err(IngestError::BadRequest("the body must be a JSON object".into()));
            };
            // Read by `body_write_key` before this parse; not part of the event.
            event.remove("writeKey");
            Ok(Envelope {
                sent_at: None,
                context: None,
                events: vec![Value::Object(event)],
                endpoint,
            })
        }
    }
}

/// The body's top-level `writeKey`, read without building the document: other members are
/// skipped by serde without allocating, so a request without a key in its headers is
/// authenticated before its events are parsed into a tree (which may take several times the
/// body's bytes). Every endpoint's body is a JSON object with the key at the top level.
pub fn body_write_key(body: &[u8]) -> Result<Option<String>, IngestError> {
    // serde would also read a struct from an array (`["key"]`), taking its first element for the key.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(IngestError::BadRequest("the body is not a JSON object".into()));
    }
    #[derive(Deserialize)]
    struct KeyOnly<'a> {
        #[serde(rename = "writeKey", borrow, default)]
        write_key: Option<&'a serde_json::value::RawValue>,
    }
    let KeyOnly { write_key } = serde_json::from_slice(body)
        .map_err(|e| IngestError::BadRequest(format!("the body is not a JSON object: {e}")))?;
    match write_key.map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None => Ok(None),
        Some(Ok(key)) => Ok(key),
        Some(Err(_)) => Err(IngestError::BadRequest("`writeKey` must be a string".into())),
    }
}

impl Envelope {
    /// How many events the request carries, valid or not.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Validates and normalises every event on its own.
    pub fn validate(self, norm: &Normalisation<'_>) -> Decoded {
        let mut decoded = Decoded {
            accepted: Vec::with_capacity(self.events.len()),
            ..Decoded::default()
        };
        let batch_sent_at = match self.sent_at.as_ref().map(|v| parse_time(v, "sentAt")) {
            Some(Err(error)) => {
                // A bad batch-level sentAt makes every event's time untrustworthy: reject them all.
                for index in 0..self.events.len() {
                    decoded.rejected.push(RejectedEvent {
                        index,
                        message_id: None,
                        reason: error.clone(),
                    });
                }
                return decoded;
            }
            Some(Ok(time)) => time,
            None => None,
        };
        let mut seen = HashSet::with_capacity(self.events.len());
        for (index, raw) in self.events.into_iter().enumerate() {
            let message_id = raw.get("messageId").and_then(Value::as_str).map(str::to_owned);
            match normalise(raw, self.endpoint, batch_sent_at, self.context.as_ref(), norm) {
                Ok(event) => {
                    if !seen.insert(event.message_id.clone()) {
                        decoded.duplicates += 1;
                        continue;
                    }
                    match serde_json::to_vec(&event) {
                        Ok(json) if json.len() <= norm.limits.max_event_bytes => decoded.accepted.push((event, json)),
                        Ok(json) => decoded.rejected.push(RejectedEvent {
                            index,
                            message_id,
                            reason: Rejection::TooLarge(format!(
                                "the event is {} bytes once normalised; at most {} are allowed",
                                json.len(),
                                norm.limits.max_event_bytes
                            )),
                        }),
                        Err(e) => decoded.rejected.push(RejectedEvent {
                            index,
                            message_id,
                            reason: Rejection::InvalidField(format!("cannot encode the event: {e}")),
                        }),
                    }
                }
                Err(reason) => decoded.rejected.push(RejectedEvent {
                    index,
                    message_id,
                    reason,
                }),
            }
        }
        decoded
    }
}

/// Longest accepted identifier (userId, anonymousId, messageId, sessionId, event name, and the
/// properties the rollups key by: `KEY_PROPERTIES`).
const MAX_ID_LEN: usize = 256;
/// Longest accepted page (`properties.page` / `path`): a rollup key, well under PostgreSQL's
/// 2,704-byte btree row limit; 2,048 bytes is also the longest URL crawlers and browsers agree on.
pub const MAX_PAGE_LEN: usize = 2_048;
/// Properties the workers use as rollup keys: identifiers, bounded and free of control characters.
const KEY_PROPERTIES: [&str; 6] = [
    "course_id",
    "module_id",
    "lesson_id",
    "quiz_id",
    "badge_id",
    "instructor_id",
];
/// How far in the future an event time may be before it is clamped to the receive time.
const MAX_FUTURE: chrono::TimeDelta = chrono::TimeDelta::hours(23);

fn normalise(
    raw: Value,
    endpoint: Endpoint,
    batch_sent_at: Option<DateTime<Utc>>,
    batch_context: Option<&Map<String, Value>>,
    norm: &Normalisation<'_>,
) -> Result<Event, Rejection> {
    let Value::Object(mut raw) = raw else {
        return Err(Rejection::InvalidField("the event must be a JSON object".into()));
    };
    let kind = match (endpoint, raw.get("type")) {
        (Endpoint::Single(kind), None) => kind,
        (Endpoint::Single(kind), Some(Value::String(t))) if t == kind.as_str() => kind,
        (Endpoint::Single(kind), Some(_)) => {
            return Err(Rejection::InvalidField(format!(
                "`type` must be \"{}\" on this endpoint",
                kind.as_str()
            )))
        }
        (Endpoint::Batch, Some(Value::String(t))) => EventType::parse(t).ok_or_else(|| {
            Rejection::InvalidField(format!(
                "`type` \"{t}\" is not supported; use track, page, screen, identify, group or alias"
            ))
        })?,
        (Endpoint::Batch, Some(_)) => return Err(Rejection::InvalidField("`type` must be a string".into())),
        (Endpoint::Batch, None) => return Err(Rejection::MissingField("`type` is required in a batch".into())),
    };
    let user_id = identifier(raw.get("userId"), "userId")?;
    let anonymous_id = identifier(raw.get("anonymousId"), "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::MissingField(
            "one of `userId` and `anonymousId` is required".into(),
        ));
    }
    let group_id = match kind {
        EventType::Group => Some(
            identifier(raw.get("groupId"), "groupId")?
                .ok_or_else(|| Rejection::MissingField("`groupId` is required for group calls".into()))?,
        ),
        _ => None,
    };
    let previous_id = match kind {
        EventType::Alias => {
            if user_id.is_none() {
                return Err(Rejection::MissingField(
                    "`userId` (the id being linked to) is required for alias calls".into(),
                ));
            }
            Some(
                identifier(raw.get("previousId"), "previousId")?
                    .ok_or_else(|| Rejection::MissingField("`previousId` is required for alias calls".into()))?,
            )
        }
        _ => None,
    };
    let (message_id, message_id_assigned) = match identifier(raw.get("messageId"), "messageId")? {
        Some(id) => (id, false),
        None => (uuid::Uuid::now_v7().to_string(), true),
    };
    let mut properties = object(raw.remove("properties"), "properties", norm.limits.max_property_depth)?;
    let mut context = object(raw.remove("context"), "context", norm.limits.max_property_depth)?;
    let mut traits = object(raw.remove("traits"), "traits", norm.limits.max_property_depth)?;
    if let Some(batch_context) = batch_context {
        for (key, value) in batch_context {
            context.entry(key.clone()).or_insert_with(|| value.clone());
        }
        check_keys(&context, "context", 1, norm.limits.max_property_depth)?;
    }
    let event = match kind {
        EventType::Track => {
            let name = match raw.get("event") {
                Some(Value::String(name)) => name,
                Some(_) => return Err(Rejection::InvalidField("`event` must be a string".into())),
                None => return Err(Rejection::MissingField("`event` is required for track calls".into())),
            };
            let normalised = snake_case(name);
            if normalised.is_empty() {
                return Err(Rejection::InvalidField("`event` has no letters or digits".into()));
            }
            if normalised.len() > MAX_ID_LEN {
                return Err(Rejection::TooLong(format!("`event` is longer than {MAX_ID_LEN} bytes")));
            }
            normalised
        }
        EventType::Page | EventType::Screen => {
            if !properties.contains_key("page") {
                let page = properties
                    .get("path")
                    .cloned()
                    .or_else(|| context.get("page").and_then(|p| p.get("path")).cloned())
                    .or_else(|| raw.get("name").cloned())
                    .filter(Value::is_string);
                if let Some(page) = page {
                    properties.insert("page".into(), page);
                }
            }
            for field in ["name", "category"] {
                if let Some(Value::String(value)) = raw.get(field) {
                    properties.entry(field).or_insert_with(|| Value::String(value.clone()));
                }
            }
            if kind == EventType::Page {
                "page_view"
            } else {
                "screen_view"
            }
            .to_owned()
        }
        EventType::Identify => {
            // Some SDKs (rudder-sdk-python) send identify traits only under `context.traits`;
            // traits sent at the top level win over them.
            if let Some(Value::Object(context_traits)) = context.get("traits") {
                for (key, value) in context_traits {
                    traits.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            "identify".to_owned()
        }
        EventType::Group => "group".to_owned(),
        EventType::Alias => "alias".to_owned(),
    };
    let session_id = identifier(
        raw.get("sessionId").or_else(|| properties.get("session_id")),
        "sessionId",
    )?;
    let client_time = match raw.get("timestamp").or_else(|| raw.get("originalTimestamp")) {
        Some(value) => parse_time(value, "timestamp")?,
        None => None,
    };
    let sent_at = match raw.get("sentAt") {
        Some(value) => parse_time(value, "sentAt")?,
        None => None,
    }
    .or(batch_sent_at);
    let received_at = norm.received_at;
    let mut ts = client_time.unwrap_or(received_at);
    if let (Some(client_time), Some(sent_at)) = (client_time, sent_at) {
        let skew = (received_at - sent_at).abs();
        if skew.to_std().unwrap_or(Duration::MAX) > norm.max_clock_skew {
            ts = received_at - (sent_at - client_time);
        }
    }
    if ts > received_at + MAX_FUTURE {
        ts = received_at;
    }
    if ts.date_naive() < norm.limits.time_floor {
        return Err(Rejection::InvalidTime(format!(
            "the event time {} (from `timestamp`, corrected by `sentAt`) is before {}, the earliest accepted",
            ts.format("%Y-%m-%d"),
            norm.limits.time_floor
        )));
    }
    check_key_properties(&properties)?;
    let horizon = chrono::TimeDelta::from_std(norm.historical_horizon).unwrap_or(chrono::TimeDelta::MAX);
    let historical = received_at
        .checked_sub_signed(horizon)
        .is_some_and(|cutoff| ts < cutoff);
    Ok(Event {
        project: norm.project.to_owned(),
        message_id,
        message_id_assigned,
        kind,
        event,
        user_id,
        anonymous_id,
        session_id,
        group_id,
        previous_id,
        ts,
        day: ts.date_naive(),
        timestamp: client_time,
        sent_at,
        received_at,
        historical,
        properties,
        context,
        traits,
    })
}

/// An identifier: a non-empty string (numbers are accepted and turned into strings, as SDKs of
/// typed languages send them), at most [`MAX_ID_LEN`] bytes.
fn identifier(value: Option<&Value>, field: &str) -> Result<Option<String>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_ID_LEN => Err(Rejection::TooLong(format!(
            "`{field}` is longer than {MAX_ID_LEN} bytes"
        ))),
        Some(Value::String(s)) if s.chars().any(char::is_control) => Err(Rejection::InvalidField(format!(
            "`{field}` contains a control character (such as NUL)"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Rejection::InvalidField(format!("`{field}` must be a string"))),
    }
}

/// The page and the identifier properties the rollups key by: strings (or numbers) within their
/// limits, without control characters.
fn check_key_properties(properties: &Map<String, Value>) -> Result<(), Rejection> {
    if let Some(Value::String(page)) = properties.get("page") {
        if page.len() > MAX_PAGE_LEN {
            return Err(Rejection::TooLong(format!(
                "`properties.page` is longer than {MAX_PAGE_LEN} bytes"
            )));
        }
        if page.chars().any(char::is_control) {
            return Err(Rejection::InvalidField(
                "`properties.page` contains a control character".into(),
            ));
        }
    }
    // Copied from the call's top level by page and screen calls, after `properties` was checked.
    for field in ["name", "category"] {
        if let Some(Value::String(text)) = properties.get(field) {
            if text.contains('\0') {
                return Err(Rejection::InvalidField(format!("`{field}` contains NUL (U+0000)")));
            }
        }
    }
    for key in KEY_PROPERTIES {
        if let Some(Value::String(id)) = properties.get(key) {
            if id.len() > MAX_ID_LEN {
                return Err(Rejection::TooLong(format!(
                    "`properties.{key}` is longer than {MAX_ID_LEN} bytes"
                )));
            }
            if id.chars().any(char::is_control) {
                return Err(Rejection::InvalidField(format!(
                    "`properties.{key}` contains a control character (such as NUL)"
                )));
            }
        }
    }
    Ok(())
}

fn object(value: Option<Value>, field: &str, max_depth: usize) -> Result<Map<String, Value>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => {
            check_keys(&map, field, 1, max_depth)?;
            Ok(map)
        }
        Some(_) => Err(Rejection::InvalidField(format!("`{field}` must be an object"))),
    }
}

/// Rejects keys that MongoDB would read as operators or paths (`$…`, anything with `.`), empty
/// keys, keys with NUL or longer than [`MAX_ID_LEN`], and nesting deeper than `max_depth`; names
/// the offending path.
fn check_keys(map: &Map<String, Value>, path: &str, depth: usize, max_depth: usize) -> Result<(), Rejection> {
    if depth > max_depth {
        return Err(Rejection::TooDeep(format!(
            "`{path}` is nested deeper than {max_depth} levels"
        )));
    }
    for (key, value) in map {
        if key.is_empty() || key.starts_with('$') || key.contains('.') || key.contains('\0') {
            return Err(Rejection::InvalidKey(format!(
                "`{path}` has the key {key:?}; keys must not be empty, start with `$` or contain `.`"
            )));
        }
        if key.len() > MAX_ID_LEN {
            return Err(Rejection::TooLong(format!(
                "`{path}` has a key longer than {MAX_ID_LEN} bytes"
            )));
        }
        check_value(value, &format!("{path}.{key}"), depth, max_depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize, max_depth: usize) -> Result<(), Rejection> {
    match value {
        Value::Object(map) => check_keys(map, path, depth + 1, max_depth),
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(Rejection::TooDeep(format!(
                    "`{path}` is nested deeper than {max_depth} levels"
                )));
            }
            items
                .iter()
                .try_for_each(|item| check_value(item, path, depth + 1, max_depth))
        }
        // PostgreSQL stores no NUL in text or jsonb: refused here, so the stores accept what
        // ingest accepts.
        Value::String(text) if text.contains('\0') => {
            Err(Rejection::InvalidField(format!("`{path}` contains NUL (U+0000)")))
        }
        // MongoDB's integers are 64-bit signed: an integer above i64::MAX (JSON has no bound)
        // could not be stored as the number it is.
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => Err(Rejection::InvalidField(format!(
            "`{path}` is an integer above {} (MongoDB stores 64-bit signed integers)",
            i64::MAX
        ))),
        _ => Ok(()),
    }
}

fn parse_time(value: &Value, field: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| Rejection::InvalidTime(format!("`{field}` is not an ISO-8601 time ({e}): {text:?}"))),
        _ => Err(Rejection::InvalidTime(format!("`{field}` must be an ISO-8601 string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn norm(limits: &Limits) -> Normalisation<'_> {
        Normalisation {
            project: "p1",
            received_at: Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap(),
            max_clock_skew: Duration::from_secs(60),
            historical_horizon: Duration::from_secs(30 * 86_400),
            limits,
        }
    }

    fn run(body: &str) -> Decoded {
        let limits = Limits::default();
        let mut bytes = body.as_bytes().to_vec();
        decode_batch(&mut bytes, Endpoint::Batch, &limits)
            .unwrap()
            .validate(&norm(&limits))
    }

    #[test]
    fn every_rejection_has_a_stable_code_in_the_response_and_the_metric() {
        let deep = serde_json::json!({"a": {"b": {"c": {"d": {}}}}});
        let cases = [
            (serde_json::json!({"type": "track", "userId": "u"}), "missing_field"),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": true}),
                "invalid_field",
            ),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": "x".repeat(257)}),
                "too_long",
            ),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": "u", "properties": {"$where": 1}}),
                "invalid_key",
            ),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": "u", "properties": deep}),
                "too_deep",
            ),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"}),
                "invalid_time",
            ),
            (
                serde_json::json!({"type": "track", "event": "e", "userId": "u", "timestamp": "1999-12-31T00:00:00Z"}),
                "invalid_time",
            ),
        ];
        for (event, code) in cases {
            let mut body = serde_json::to_vec(&serde_json::json!({"batch": [event]})).unwrap();
            let limits = Limits {
                max_property_depth: 3,
                ..Limits::default()
            };
            let decoded = decode_batch(&mut body, Endpoint::Batch, &limits)
                .unwrap()
                .validate(&norm(&limits));
            let rejected = &decoded.rejected[0];
            assert_eq!(rejected.reason.code(), code, "{rejected:?}");
            let json = serde_json::to_value(rejected).unwrap();
            assert_eq!(json["code"], code);
            assert_eq!(json["error"], rejected.reason.message());
        }
    }

    #[test]
    fn a_bad_event_is_rejected_by_index_and_the_rest_accepted() {
        let decoded = run(r#"{"batch":[
            {"type":"track","event":"Course Viewed","userId":"u1","messageId":"m1","properties":{"course_id":"c1"}},
            {"type":"track","event":"x","messageId":"m2"},
            {"type":"track","event":"Login","anonymousId":"a1","messageId":"m3","properties":{"$where":"1"}},
            {"type":"track","event":"Login","anonymousId":"a1","messageId":"m4","properties":{"a.b":1}},
            {"type":"alias","userId":"u1","messageId":"m5"}
        ]}"#);
        assert_eq!(decoded.accepted.len(), 1);
        assert_eq!(decoded.accepted[0].0.event, "course_viewed");
        let reasons: Vec<_> = decoded
            .rejected
            .iter()
            .map(|r| (r.index, r.message_id.as_deref().unwrap(), r.reason.message()))
            .collect();
        assert_eq!(reasons[0].0, 1);
        assert!(reasons[0].2.contains("userId"), "{reasons:?}");
        assert!(reasons[1].2.contains("\"$where\""), "{reasons:?}");
        assert!(reasons[2].2.contains("\"a.b\""), "{reasons:?}");
        let long_key = format!(
            r#"{{"batch":[{{"type":"track","event":"a","userId":"u","properties":{{"{}":1}}}}]}}"#,
            "k".repeat(MAX_ID_LEN + 1)
        );
        assert!(run(&long_key).rejected[0]
            .reason
            .message()
            .contains("a key longer than 256 bytes"));
        assert!(reasons[3].2.contains("`previousId`"), "{reasons:?}");
    }

    #[test]
    fn group_and_alias_calls_are_accepted_with_their_ids() {
        let decoded = run(r#"{"batch":[
            {"type":"group","userId":"u1","groupId":"class-7","traits":{"name":"Class 7","kind":"class"},"messageId":"m1"},
            {"type":"alias","userId":"u1","previousId":"anon-1","messageId":"m2"},
            {"type":"group","userId":"u1","messageId":"m3"},
            {"type":"alias","anonymousId":"anon-1","previousId":"anon-0","messageId":"m4"},
            {"type":"merge","userId":"u1","messageId":"m5"}
        ]}"#);
        let events: Vec<_> = decoded.accepted.iter().map(|(e, _)| e).collect();
        assert_eq!((events[0].kind, events[0].event.as_str()), (EventType::Group, "group"));
        assert_eq!(events[0].group_id.as_deref(), Some("class-7"));
        assert_eq!(events[0].traits["name"], "Class 7");
        assert_eq!((events[1].kind, events[1].event.as_str()), (EventType::Alias, "alias"));
        assert_eq!(events[1].previous_id.as_deref(), Some("anon-1"));
        let errors: Vec<_> = decoded.rejected.iter().map(|r| (r.index, r.reason.message())).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].1.contains("`groupId` is required"), "{errors:?}");
        assert!(errors[1].1.contains("`userId`"), "{errors:?}");
        assert!(errors[2].1.contains("\"merge\" is not supported"), "{errors:?}");
    }

    #[test]
    fn identify_traits_sent_under_context_are_traits_and_pages_keep_their_category() {
        let decoded = run(r#"{"batch":[
            {"type":"identify","userId":"u1","context":{"traits":{"plan":"pro","name":"Ada"}},"traits":{"name":"Ada L."}},
            {"type":"page","userId":"u1","name":"Start","category":"Docs","properties":{"path":"/docs"}}
        ]}"#);
        let identify = &decoded.accepted[0].0;
        assert_eq!(identify.traits["plan"], "pro");
        assert_eq!(identify.traits["name"], "Ada L.", "top-level traits win");
        let page = &decoded.accepted[1].0;
        assert_eq!(
            (page.properties["name"].as_str(), page.properties["category"].as_str()),
            (Some("Start"), Some("Docs"))
        );
    }

    #[test]
    fn times_before_the_floor_are_rejected_with_the_floor() {
        let decoded = run(r#"{"batch":[
            {"type":"track","event":"a","userId":"u1","timestamp":"1999-12-31T23:59:59Z","sentAt":"2026-03-10T12:00:00Z"},
            {"type":"track","event":"a","userId":"u1","timestamp":"0000-01-01T00:00:00Z","sentAt":"9999-12-31T00:00:00Z"},
            {"type":"track","event":"a","userId":"u1","timestamp":"2000-01-01T00:00:00Z","sentAt":"2026-03-10T12:00:00Z"}
        ]}"#);
        assert_eq!(decoded.accepted.len(), 1);
        assert_eq!(decoded.rejected.len(), 2);
        for rejection in &decoded.rejected {
            assert!(
                rejection.reason.message().contains("before 2000-01-01"),
                "{rejection:?}"
            );
        }
        let limits = Limits {
            time_floor: chrono::NaiveDate::from_ymd_opt(1990, 1, 1).unwrap(),
            ..Limits::default()
        };
        let mut body =
            br#"{"batch":[{"type":"track","event":"a","userId":"u1","timestamp":"1999-12-31T23:59:59Z"}]}"#.to_vec();
        let decoded = decode_batch(&mut body, Endpoint::Batch, &limits)
            .unwrap()
            .validate(&norm(&limits));
        assert_eq!(decoded.accepted.len(), 1, "a backfill lowers the floor");
    }

    #[test]
    fn values_the_stores_would_refuse_are_rejected_with_the_field_and_the_rest_kept() {
        let long_page = format!("/p?{}", "x".repeat(MAX_PAGE_LEN));
        let body = serde_json::json!({"batch": [
            {"type": "track", "event": "a", "userId": "u\u{0}x", "messageId": "m1"},
            {"type": "page", "userId": "u1", "messageId": "m2", "properties": {"path": long_page}},
            {"type": "track", "event": "a", "userId": "u1", "messageId": "m3",
             "timestamp": "0000-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
            {"type": "track", "event": "a", "userId": "u1", "messageId": "m4", "properties": {"note": "a\u{0}b"}},
            {"type": "track", "event": "a", "userId": "u1", "messageId": "m5", "properties": {"course_id": "c\u{7}"}},
            {"type": "track", "event": "a", "userId": "u1", "messageId": "m6", "properties": {"course_id": "c1"}}
        ]})
        .to_string();
        let decoded = run(&body);
        assert_eq!(decoded.accepted.len(), 1);
        assert_eq!(decoded.accepted[0].0.message_id, "m6");
        let errors: Vec<&str> = decoded.rejected.iter().map(|r| r.reason.message()).collect();
        assert!(
            errors[0].contains("`userId`") && errors[0].contains("control"),
            "{errors:?}"
        );
        assert!(errors[1].contains("`properties.page`"), "{errors:?}");
        assert!(errors[2].contains("before 2000-01-01"), "{errors:?}");
        assert!(
            errors[3].contains("`properties.note`") && errors[3].contains("NUL"),
            "{errors:?}"
        );
        assert!(errors[4].contains("`properties.course_id`"), "{errors:?}");
    }

    #[test]
    fn integers_beyond_64_signed_bits_are_refused_by_path() {
        let decoded = run(r#"{"batch":[
            {"type":"track","event":"e","userId":"u","messageId":"a","properties":{"n":9223372036854775807,"m":-9223372036854775808,"f":1e300}},
            {"type":"track","event":"e","userId":"u","messageId":"b","properties":{"n":9223372036854775808}},
            {"type":"identify","userId":"u","messageId":"c","traits":{"deep":{"list":[1,18446744073709551615]}}}
        ]}"#);
        let ids: Vec<&str> = decoded.accepted.iter().map(|(e, _)| e.message_id.as_str()).collect();
        assert_eq!(ids, ["a"], "i64's own bounds and doubles are kept");
        let errors: Vec<&str> = decoded.rejected.iter().map(|r| r.reason.message()).collect();
        assert!(
            errors[0].contains("`properties.n`") && errors[0].contains("64-bit"),
            "{errors:?}"
        );
        assert!(errors[1].contains("`traits.deep.list`"), "{errors:?}");
        assert!(decoded.rejected.iter().all(|r| r.reason.code() == "invalid_field"));
    }

    #[test]
    fn repeated_message_ids_in_one_request_count_as_duplicates() {
        let decoded = run(r#"{"batch":[
            {"type":"track","event":"a","userId":"u1","messageId":"m1"},
            {"type":"track","event":"a","userId":"u1","messageId":"m1"}]}"#);
        assert_eq!((decoded.accepted.len(), decoded.duplicates), (1, 1));
    }

    #[test]
    fn missing_message_ids_are_assigned_and_flagged() {
        let decoded = run(r#"{"batch":[{"type":"identify","userId":"u1","traits":{"name":"Ada"}}]}"#);
        let event = &decoded.accepted[0].0;
        assert!(event.message_id_assigned);
        assert_eq!(uuid::Uuid::parse_str(&event.message_id).unwrap().get_version_num(), 7);
    }

    #[test]
    fn pages_become_page_views_with_the_path() {
        let decoded =
            run(r#"{"batch":[{"type":"page","name":"Home","userId":"u1","context":{"page":{"path":"/home"}}}]}"#);
        let event = &decoded.accepted[0].0;
        assert_eq!(event.event, "page_view");
        assert_eq!(event.properties["page"], "/home");
    }

    #[test]
    fn skewed_client_clocks_are_corrected_and_the_future_clamped() {
        // Client clock one hour fast: event 10 s before sending, by its own clock.
        let decoded = run(r#"{"sentAt":"2026-03-10T13:00:00Z","batch":[
            {"type":"track","event":"a","userId":"u1","timestamp":"2026-03-10T12:59:50Z"},
            {"type":"track","event":"b","userId":"u1","timestamp":"2026-03-12T12:00:00Z","sentAt":"2026-03-10T12:00:00Z"},
            {"type":"track","event":"c","userId":"u1","timestamp":"2026-01-01T00:00:00Z","sentAt":"2026-03-10T12:00:00Z"}]}"#);
        let times: Vec<_> = decoded
            .accepted
            .iter()
            .map(|(e, _)| (e.ts.to_rfc3339(), e.historical))
            .collect();
        assert_eq!(times[0], ("2026-03-10T11:59:50+00:00".into(), false));
        assert_eq!(times[1], ("2026-03-10T12:00:00+00:00".into(), false));
        assert_eq!(times[2], ("2026-01-01T00:00:00+00:00".into(), true));
        assert_eq!(decoded.accepted[2].0.day.to_string(), "2026-01-01");
    }

    #[test]
    fn nesting_is_allowed_up_to_the_limit_and_not_beyond() {
        let limits = Limits {
            max_property_depth: 3,
            ..Limits::default()
        };
        let at = r#"{"batch":[{"type":"track","event":"a","userId":"u","properties":{"a":{"b":{"c":1}}}}]}"#;
        let over = r#"{"batch":[{"type":"track","event":"a","userId":"u","properties":{"a":{"b":{"c":{"d":1}}}}}]}"#;
        let mut at = at.as_bytes().to_vec();
        let mut over = over.as_bytes().to_vec();
        assert_eq!(
            decode_batch(&mut at, Endpoint::Batch, &limits)
                .unwrap()
                .validate(&norm(&limits))
                .accepted
                .len(),
            1
        );
        let rejected = decode_batch(&mut over, Endpoint::Batch, &limits)
            .unwrap()
            .validate(&norm(&limits))
            .rejected;
        assert!(rejected[0].reason.message().contains("deeper than 3"), "{rejected:?}");
    }

    // The next three hold what fuzz/fuzz_targets/ingest_decode.rs checks of any input.

    #[test]
    fn page_names_and_categories_with_nul_are_rejected() {
        let decoded = run(r#"{"batch":[
            {"type":"page","userId":"u1","messageId":"m1","category":"a\u0000b"},
            {"type":"screen","userId":"u1","messageId":"m2","name":"a\u0000b","properties":{"path":"/s"}},
            {"type":"page","userId":"u1","messageId":"m3","name":"Home","category":"Docs"}]}"#);
        assert_eq!(decoded.accepted.len(), 1);
        assert_eq!(decoded.accepted[0].0.properties["category"], "Docs");
        let errors: Vec<&str> = decoded.rejected.iter().map(|r| r.reason.message()).collect();
        assert_eq!(
            errors,
            ["`category` contains NUL (U+0000)", "`name` contains NUL (U+0000)"]
        );
    }

    #[test]
    fn a_batch_context_is_nested_no_deeper_than_an_event_context() {
        let limits = Limits {
            max_property_depth: 2,
            ..Limits::default()
        };
        for (context, accepted) in [(r#"{"a":{"b":1}}"#, 1), (r#"{"a":{"b":{"c":1}}}"#, 0)] {
            for body in [
                format!(r#"{{"context":{context},"batch":[{{"type":"track","event":"a","userId":"u"}}]}}"#),
                format!(r#"{{"batch":[{{"type":"track","event":"a","userId":"u","context":{context}}}]}}"#),
            ] {
                let mut bytes = body.clone().into_bytes();
                let decoded = decode_batch(&mut bytes, Endpoint::Batch, &limits)
                    .unwrap()
                    .validate(&norm(&limits));
                assert_eq!(decoded.accepted.len(), accepted, "{body}");
            }
        }
    }

    #[test]
    fn the_body_write_key_is_read_from_an_object_only() {
        assert_eq!(
            body_write_key(br#" {"writeKey":"k","batch":[]}"#).unwrap().as_deref(),
            Some("k")
        );
        assert_eq!(body_write_key(br#"{"batch":[]}"#).unwrap(), None);
        for body in [&br#"["k"]"#[..], b"\"k\"", b"", b"{", br#"{"writeKey":1}"#] {
            let error = body_write_key(body).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    #[test]
    fn malformed_envelopes_are_bad_requests() {
        let limits = Limits::default();
        for body in ["", "nope", "[]", r#"{"events":[]}"#, r#"{"batch":{}}"#] {
            let mut bytes = body.as_bytes().to_vec();
            let error = decode_batch(&mut bytes, Endpoint::Batch, &limits).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{body}");
        }
    }
}
