//! Arbitrary bytes as a decompressed ingest request body: the body's `writeKey`, the envelope,
//! and every event's validation and normalisation, on the batch endpoint and on one single-event
//! endpoint. Beyond "no panic": each event is accepted, dropped as a repeat or rejected with a
//! reason, and what is accepted keeps the promises of docs/contract.md §4 ("Limits", "Event fields
//! and normalisation") and reads back, as the workers read it, as the same event, whose maps the
//! workers' BSON writer stores as bson would (what ingest accepts, MongoDB stores).
#![no_main]

use std::{collections::HashSet, sync::LazyLock, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use common::event::{id_value, snake_case, Event, EventType};
use ingest::{body_write_key, decode_batch, Endpoint, Limits, Normalisation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// docs/contract.md §4, "Limits".
const MAX_ID_LEN: usize = 256;
const MAX_PAGE_LEN: usize = 2_048;
const KEY_PROPERTIES: [&str; 8] = [
    "course_id",
    "module_id",
    "lesson_id",
    "quiz_id",
    "badge_id",
    "instructor_id",
    "item_id",
    "video_id",
];
/// How far ahead of the receive time an event time may stay (later ones are clamped to it).
const MAX_FUTURE: TimeDelta = TimeDelta::hours(23);
const TYPES: [EventType; 6] = [
    EventType::Track,
    EventType::Page,
    EventType::Screen,
    EventType::Identify,
    EventType::Group,
    EventType::Alias,
];

static LIMITS: LazyLock<Limits> = LazyLock::new(Limits::default);
static RECEIVED_AT: LazyLock<DateTime<Utc>> = LazyLock::new(|| Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap());

fuzz_target!(|data: &[u8]| {
    write_key(data);
    decode(data, Endpoint::Batch);
    // The single-event endpoints differ only in the type they imply: one per input, picked by
    // its length, keeps each run cheap and still reaches all six.
    decode(data, Endpoint::Single(TYPES[data.len() % TYPES.len()]));
});

/// A key found is the body's top-level `writeKey` string.
fn write_key(data: &[u8]) {
    match body_write_key(data) {
        Ok(key) => {
            let Ok(body) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            let Value::Object(body) = body else {
                panic!("a key ({key:?}) read from a body that is not a JSON object");
            };
            assert_eq!(
                key.as_deref(),
                body.get("writeKey").and_then(Value::as_str),
                "the key read is not the body's `writeKey`"
            );
        }
        Err(error) => assert_eq!(error.status().as_u16(), 400, "{error}"),
    }
}

fn decode(data: &[u8], endpoint: Endpoint) {
    let limits = &*LIMITS;
    let mut body = data.to_vec();
    let envelope = match decode_batch(&mut body, endpoint, limits) {
        Ok(envelope) => envelope,
        Err(error) => {
            let status = error.status().as_u16();
            assert!(
                status == 400 || (status == 413 && endpoint == Endpoint::Batch),
                "{endpoint:?} answered {status}: {error}"
            );
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert!(!data.iter().all(u8::is_ascii_whitespace), "an empty body was accepted");
    let events = envelope.len();
    match endpoint {
        Endpoint::Batch => assert!(events <= limits.max_batch_events, "{events} events"),
        Endpoint::Single(_) => assert_eq!(events, 1),
    }

    let norm = Normalisation {
        project: "p1",
        received_at: *RECEIVED_AT,
        max_clock_skew: Duration::from_secs(60),
        historical_horizon: Duration::from_secs(30 * 86_400),
        limits,
    };
    let decoded = envelope.validate(&norm);
    assert_eq!(
        decoded.accepted.len() + decoded.duplicates + decoded.rejected.len(),
        events,
        "every event is accepted, a repeat or rejected"
    );
    let mut previous = None;
    for rejection in &decoded.rejected {
        assert!(rejection.index < events, "{rejection:?}");
        assert!(
            previous < Some(rejection.index),
            "rejections out of order: {:?}",
            decoded.rejected
        );
        assert!(!rejection.reason.message().is_empty(), "{rejection:?}");
        previous = Some(rejection.index);
    }
    let mut ids = HashSet::new();
    for (event, json) in &decoded.accepted {
        check_event(event, json, endpoint, &norm);
        assert!(
            ids.insert(&event.message_id),
            "messageId {:?} accepted twice",
            event.message_id
        );
    }
}

fn check_event(event: &Event, json: &[u8], endpoint: Endpoint, norm: &Normalisation<'_>) {
    // What is published is the event's JSON, within the size limit, and the workers
    // (`simd_json`, a JetStream message being an array of events) read back the same event.
    assert!(json.len() <= norm.limits.max_event_bytes, "{} bytes", json.len());
    assert_eq!(serde_json::to_vec(event).unwrap(), json);
    let mut message = Vec::with_capacity(json.len() + 2);
    message.push(b'[');
    message.extend_from_slice(json);
    message.push(b']');
    let back: Vec<Event> = simd_json::serde::from_slice(&mut message).unwrap_or_else(|e| {
        panic!(
            "the workers cannot read an accepted event ({e}): {}",
            String::from_utf8_lossy(json)
        )
    });
    assert_eq!(back.len(), 1);
    assert_eq!(&back[0], event, "the event changed on its way to the workers");
    // What ingest accepts MongoDB must store: the workers' BSON writer takes every map of it,
    // as the very bytes bson's own encoder gives.
    for map in [&event.properties, &event.context, &event.traits] {
        let mut writer = common::raw_bson::Writer::with_capacity(0);
        let at = writer.begin();
        writer
            .object("m", map)
            .unwrap_or_else(|e| panic!("accepted but not storable in MongoDB ({e}): {}", String::from_utf8_lossy(json)));
        writer.end(at);
        let expected = bson::to_bson(map)
            .and_then(|m| bson::to_vec(&bson::doc! {"m": m}))
            .expect("bson encodes what the writer encodes");
        assert_eq!(writer.into_bytes(), expected, "the stored bytes differ from bson's");
    }

    assert_eq!(event.project, norm.project);
    if let Endpoint::Single(kind) = endpoint {
        assert_eq!(event.kind, kind);
    }

    // Identifiers.
    assert!(
        event.user_id.is_some() || event.anonymous_id.is_some(),
        "no user: {event:?}"
    );
    identifier("messageId", Some(&event.message_id));
    for (field, value) in [
        ("userId", &event.user_id),
        ("anonymousId", &event.anonymous_id),
        ("sessionId", &event.session_id),
        ("groupId", &event.group_id),
        ("previousId", &event.previous_id),
    ] {
        identifier(field, value.as_ref());
    }
    if event.message_id_assigned {
        let id = uuid::Uuid::parse_str(&event.message_id).expect("an assigned messageId is a UUID");
        assert_eq!(id.get_version_num(), 7);
    }
    assert_eq!(event.group_id.is_some(), event.kind == EventType::Group, "{event:?}");
    assert_eq!(event.previous_id.is_some(), event.kind == EventType::Alias, "{event:?}");
    if event.kind == EventType::Alias {
        assert!(event.user_id.is_some(), "an alias without userId: {event:?}");
    }

    // The name: snake_case, within the identifier limit.
    match event.kind {
        EventType::Track => {
            identifier("event", Some(&event.event));
            assert_eq!(snake_case(&event.event), event.event, "the name is not snake_case");
        }
        EventType::Page => assert_eq!(event.event, "page_view"),
        EventType::Screen => assert_eq!(event.event, "screen_view"),
        EventType::Identify => assert_eq!(event.event, "identify"),
        EventType::Group => assert_eq!(event.event, "group"),
        EventType::Alias => assert_eq!(event.event, "alias"),
    }

    // Times: not before the floor, not far ahead of the receive time, `day` and `historical`
    // derived from `ts`.
    assert!(event.ts.date_naive() >= norm.limits.time_floor, "{}", event.ts);
    assert!(event.ts <= norm.received_at + MAX_FUTURE, "{}", event.ts);
    assert_eq!(event.day, event.ts.date_naive());
    assert_eq!(event.received_at, norm.received_at);
    let horizon = TimeDelta::from_std(norm.historical_horizon).unwrap();
    assert_eq!(event.historical, event.ts < norm.received_at - horizon);

    // Properties the rollups key by.
    if let Some(Value::String(page)) = event.properties.get("page") {
        assert!(page.len() <= MAX_PAGE_LEN, "`properties.page` of {} bytes", page.len());
        assert!(!page.chars().any(char::is_control), "`properties.page` {page:?}");
    }
    // An empty key property is kept as sent and read by the workers as no id (`id_value`).
    for key in KEY_PROPERTIES {
        if let Some(Value::String(id)) = event.properties.get(key) {
            assert!(id.len() <= MAX_ID_LEN, "`{key}` of {} bytes", id.len());
            assert!(!id.chars().any(char::is_control), "`{key}` {id:?}");
            if id.is_empty() {
                assert_eq!(id_value(&Value::String(id.clone())), None);
            }
        }
    }

    // Keys and values the stores accept, nested no deeper than the limit.
    for (field, map) in [
        ("properties", &event.properties),
        ("context", &event.context),
        ("traits", &event.traits),
    ] {
        let depth = object(field, map);
        assert!(
            depth <= norm.limits.max_property_depth,
            "`{field}` is {depth} deep: {map:?}"
        );
    }
}

/// A stored identifier: 1 to 256 bytes, no control characters.
fn identifier(field: &str, value: Option<&String>) {
    if let Some(id) = value {
        assert!(
            !id.is_empty() && id.len() <= MAX_ID_LEN,
            "`{field}` of {} bytes",
            id.len()
        );
        assert!(!id.chars().any(char::is_control), "`{field}` {id:?}");
    }
}

/// Checks the keys and strings of `map` at any depth; returns its depth (1 for a flat map).
fn object(path: &str, map: &Map<String, Value>) -> usize {
    let mut depth = 1;
    for (key, value) in map {
        assert!(
            !key.is_empty()
                && key.len() <= MAX_ID_LEN
                && !key.starts_with('$')
                && !key.contains('.')
                && !key.contains('\0'),
            "`{path}` has the key {key:?}"
        );
        depth = depth.max(1 + value_depth(path, value));
    }
    depth
}

/// The containers nested in `value` (0 for a scalar); no string holds NUL.
fn value_depth(path: &str, value: &Value) -> usize {
    match value {
        Value::Object(map) => object(path, map),
        Value::Array(items) => 1 + items.iter().map(|v| value_depth(path, v)).max().unwrap_or(0),
        Value::String(text) => {
            assert!(!text.contains('\0'), "`{path}` holds a string with NUL: {text:?}");
            0
        }
        _ => 0,
    }
}
