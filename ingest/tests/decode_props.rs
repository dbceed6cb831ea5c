//! Property tests of the request decoder: whatever the bytes, `decode_batch` and `validate` never
//! panic, every request-level rejection is a 4xx with a message, and every event is accounted for
//! (accepted, duplicate or rejected with a reason).

use chrono::Utc;
use common::event::EventType;
use ingest::{decode_batch, Endpoint, Limits, Normalisation};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        Just(Endpoint::Batch),
        Just(Endpoint::Single(EventType::Track)),
        Just(Endpoint::Single(EventType::Page)),
        Just(Endpoint::Single(EventType::Screen)),
        Just(Endpoint::Single(EventType::Identify)),
    ]
}

/// Keys SDKs send, keys that must be rejected, and noise.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "type",
            "event",
            "name",
            "userId",
            "anonymousId",
            "messageId",
            "timestamp",
            "sentAt",
            "originalTimestamp",
            "properties",
            "context",
            "traits",
            "batch",
            "writeKey",
            "page",
            "path",
            "$gt",
            "a.b",
            "",
            "sessionId",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z$._ \u{0}-\u{7f}]{0,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "track",
            "page",
            "identify",
            "screen",
            "alias",
            "2026-03-01T00:00:00Z",
            "x"
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(24, 256, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bodies: arbitrary bytes, arbitrary JSON, and batches of arbitrary events.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (prop::collection::vec(json_value(), 0..8), scalar())
            .prop_map(|(events, sent_at)| serde_json::to_vec(&json!({"batch": events, "sentAt": sent_at})).unwrap()),
        prop::collection::vec((key(), json_value()), 0..8).prop_map(|pairs| {
            serde_json::to_vec(&Value::Object(pairs.into_iter().collect::<Map<_, _>>())).unwrap()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn no_body_panics_and_every_rejection_is_a_4xx_with_a_reason(mut bytes in body(), endpoint in endpoint()) {
        let limits = Limits { max_batch_events: 6, max_property_depth: 4, ..Limits::default() };
        match decode_batch(&mut bytes, endpoint, &limits) {
            Err(error) => {
                prop_assert!(error.status().is_client_error(), "{error:?}");
                prop_assert!(!error.to_string().is_empty());
            }
            Ok(envelope) => {
                let events = envelope.len();
                let decoded = envelope.validate(&Normalisation {
                    project: "p",
                    received_at: Utc::now(),
                    max_clock_skew: std::time::Duration::from_secs(60),
                    historical_horizon: std::time::Duration::from_secs(30 * 86_400),
                    limits: &limits,
                });
                prop_assert_eq!(decoded.accepted.len() + decoded.duplicates + decoded.rejected.len(), events);
                for rejection in &decoded.rejected {
                    prop_assert!(rejection.index < events);
                    prop_assert!(!rejection.reason.message().is_empty());
                }
                for (event, json) in &decoded.accepted {
                    prop_assert!(event.user_id.is_some() || event.anonymous_id.is_some());
                    prop_assert!(json.len() <= limits.max_event_bytes);
                }
            }
        }
    }
}
