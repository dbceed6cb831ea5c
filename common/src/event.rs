//! The event as ingest accepted it and workers store it: Segment's fields after validation and
//! normalisation, carrying the project (tenant) it belongs to. Field names are those of the stored
//! MongoDB documents (docs/contract.md §4), so the JSON that crosses JetStream and the document in
//! `events` read the same.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Segment call types the pipeline accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Track,
    Page,
    Screen,
    Identify,
    /// Segment's `group`: the user belongs to `group_id` (a class, cohort or organisation).
    Group,
    /// Segment's `alias`: `previous_id` and `user_id` are one person.
    Alias,
}

impl EventType {
    /// The lowercase name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Identify => "identify",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// The type of a wire or stored name, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "track" => EventType::Track,
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "identify" => EventType::Identify,
            "group" => EventType::Group,
            "alias" => EventType::Alias,
            _ => return None,
        })
    }
}

/// One accepted event. Invalid states were rejected at ingest: at least one of `user_id` and
/// `anonymous_id` is set, `event` is snake_case, `day` is the UTC date of `ts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The project (tenant) whose write key sent the event; nothing crosses projects.
    pub project: String,
    /// The client's idempotency key, or a server-assigned UUIDv7; unique within a project.
    pub message_id: String,
    /// True when the client sent no messageId and ingest assigned one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub message_id_assigned: bool,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Normalised event name (`course_viewed`, `page_view`, `identify`, ...).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The group a `group` call puts the user in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The id an `alias` call links to `user_id` (usually the anonymous id used before sign-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// When the event happened, corrected for client clock skew: what metrics bucket by.
    #[serde(deserialize_with = "crate::wire_time::required")]
    pub ts: DateTime<Utc>,
    /// UTC date of `ts`, precomputed for bucketing.
    pub day: NaiveDate,
    /// The client's own `timestamp`, as sent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire_time::optional"
    )]
    pub timestamp: Option<DateTime<Utc>>,
    /// The client's `sentAt`, as sent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire_time::optional"
    )]
    pub sent_at: Option<DateTime<Utc>>,
    /// When ingest received the request.
    #[serde(deserialize_with = "crate::wire_time::required")]
    pub received_at: DateTime<Utc>,
    /// The event is older than the historical horizon: stored and counted, but flagged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub historical: bool,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
}

impl Event {
    /// A property by name. Events carry a handful of properties, and for a handful a scan of the
    /// keys is cheaper than `Map::get`, which hashes the name with SipHash first (the map is an
    /// IndexMap: bson turns on serde_json's `preserve_order`); the rollup fold looks up several
    /// per event.
    pub fn property(&self, name: &str) -> Option<&Value> {
        if self.properties.len() > 16 {
            return self.properties.get(name);
        }
        self.properties
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value)
    }

    /// The identity metrics count: the user id, else the anonymous id (docs/contract.md §6).
    pub fn user_key(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }
}

/// A property value read as an identifier (a course, lesson, module or badge id): a non-empty
/// string as it is, a number as printed; anything else is no id (docs/contract.md §5).
pub fn id_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A property value read as a number: a JSON number, or a string that parses as one.
pub fn number_value(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A property value read as a duration in whole seconds (`time_spent_s`): rounded, and 0 when it
/// is absent, not a number, negative, or 10⁹ or more.
pub fn whole_seconds(value: Option<&Value>) -> i64 {
    value
        .and_then(number_value)
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map_or(0, |s| s.round() as i64)
}

/// Normalises an event name to snake_case, so `"Course Viewed"`, `"COURSE_VIEWED"`,
/// `"courseViewed"` and `"course_viewed"` are one event. Runs of anything but letters and digits
/// become one `_`; a lower-to-upper case change starts a new word, as does the last capital of an
/// acronym followed by a lowercase letter (`"HTTPRequest"` → `http_request`). A normalised name
/// normalises to itself, so a stored name given back (as a funnel step) is the same name.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    let mut pending_separator = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            pending_separator = !out.is_empty();
            continue;
        }
        if is_capital(c) && i > 0 {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (is_capital(prev) && next_is_lower) {
                pending_separator = !out.is_empty();
            }
        }
        if pending_separator {
            out.push('_');
            pending_separator = false;
        }
        // `İ` lowercases to `i` and a combining dot, which is no letter (and would become a `_`
        // the next time): only the letters and digits are kept.
        out.extend(c.to_lowercase().filter(|l| l.is_alphanumeric()));
    }
    out
}

/// An uppercase letter with a lowercase form. Uppercase symbols without one (`🄰`) stay as they
/// are, so they cannot start a word, or they would start one the next time.
fn is_capital(c: char) -> bool {
    c.is_uppercase() && c.to_lowercase().ne(std::iter::once(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_in_every_common_spelling_are_one_name() {
        for name in [
            "Course Viewed",
            "COURSE_VIEWED",
            "course_viewed",
            "courseViewed",
            "CourseViewed",
            " course--viewed ",
        ] {
            assert_eq!(snake_case(name), "course_viewed", "{name}");
        }
    }

    #[test]
    fn acronyms_and_digits_split_sensibly() {
        assert_eq!(snake_case("HTTPRequest"), "http_request");
        assert_eq!(snake_case("Lesson 2 Completed"), "lesson_2_completed");
        assert_eq!(snake_case("quiz2Submitted"), "quiz2_submitted");
        assert_eq!(snake_case("Ünïcode Évent"), "ünïcode_évent");
        assert_eq!(snake_case("!!!"), "");
    }

    #[test]
    fn normalised_names_normalise_to_themselves() {
        // `İ` (found by fuzz/, ingest_decode) lowercases to `i` + U+0307, and `🄰` is uppercase with
        // no lowercase form; either made a stored name differ from its own normalisation.
        assert_eq!(snake_case("İlk Ders"), "ilk_ders");
        assert_eq!(snake_case("A🄰"), "a🄰");
        for name in [
            "İlk Ders",
            "A🄰",
            "x🄰🄰y",
            "HTTPRequest",
            "ǅungla Ǆ",
            "Ⅻ Roman",
            "Ünïcode Évent",
        ] {
            let once = snake_case(name);
            assert_eq!(snake_case(&once), once, "{name}");
        }
    }

    #[test]
    fn user_key_prefers_the_user_id() {
        let json = r#"{"project":"p","message_id":"m","type":"track","event":"login","user_id":"u1","anonymous_id":"a1",
            "ts":"2026-01-01T00:00:00Z","day":"2026-01-01","received_at":"2026-01-01T00:00:00Z"}"#;
        let mut event: Event = serde_json::from_str(json).unwrap();
        assert_eq!(event.user_key(), "u1");
        event.user_id = None;
        assert_eq!(event.user_key(), "a1");
        let back: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }
}
