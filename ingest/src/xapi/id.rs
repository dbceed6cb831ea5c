//! Statement identity. A statement sent without an `id` gets one derived from its content, so a
//! client that resends it (Moodle's logstore_xapi sends no ids and retries failed batches) sends
//! the same event, which the workers store and count once. The content hash also tells a resend
//! (same id, same content: accepted again) from a different statement under a used id (409).
//!
//! The content is the statement without `id`, `stored`, `authority` and `version` (what an LRS
//! may set or a client may add on a resend, xAPI "Data" 2.3.1), as canonical JSON: object keys in
//! bytewise order at every depth, no whitespace, strings as serde_json escapes them, integral
//! numbers below 2^53 as integers (`1.0` and `1` are one number) and other numbers as serde_json
//! prints them. The hash is its SHA-256; the derived id is a version 8 UUID of its first 16 bytes.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// The top-level properties that are not the statement's content.
const NOT_CONTENT: [&str; 4] = ["id", "stored", "authority", "version"];

/// SHA-256 of the statement's canonical content.
pub fn content_hash(statement: &Map<String, Value>) -> [u8; 32] {
    let mut canonical = Vec::with_capacity(1024);
    write_object(&mut canonical, statement, true);
    Sha256::digest(&canonical).into()
}

/// The id of a statement sent without one: a version 8 UUID of its content hash.
pub fn derived_id(hash: &[u8; 32]) -> Uuid {
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>, top: bool) {
    let mut keys: Vec<&String> = map
        .keys()
        .filter(|key| !(top && NOT_CONTENT.contains(&key.as_str())))
        .collect();
    keys.sort_unstable();
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, &map[key.as_str()]);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map, false),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::String(text) => write_string(out, text),
        Value::Number(n) => {
            /// Integers a double holds exactly.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            match n.as_f64() {
                Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < EXACT => {
                    out.extend_from_slice((f as i64).to_string().as_bytes());
                }
                _ => out.extend_from_slice(n.to_string().as_bytes()),
            }
        }
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, text).ok();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hash(value: Value) -> [u8; 32] {
        content_hash(value.as_object().unwrap())
    }

    #[test]
    fn the_hash_ignores_key_order_whitespace_number_spelling_and_what_an_lrs_sets() {
        let a = hash(
            json!({"actor": {"mbox": "mailto:a@b.c", "name": "A"}, "verb": {"id": "http://v/x"},
                           "result": {"score": {"raw": 1.0, "max": 2}}}),
        );
        let b: Value = serde_json::from_str(
            r#"{ "verb": {"id":"http://v/x"}, "result": {"score": {"max": 2.0, "raw": 1}},
                 "actor": {"name":"A", "mbox":"mailto:a@b.c"}, "id": "6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d",
                 "stored": "2026-01-01T00:00:00Z", "authority": {"mbox": "mailto:lrs@x.org"}, "version": "1.0.3" }"#,
        )
        .unwrap();
        assert_eq!(a, hash(b));
        assert_ne!(
            a,
            hash(
                json!({"actor": {"mbox": "mailto:a@b.c", "name": "A"}, "verb": {"id": "http://v/y"},
                                  "result": {"score": {"raw": 1.0, "max": 2}}})
            )
        );
        // Only the top level's `id` is not content: an activity's is.
        assert_ne!(
            hash(json!({"object": {"id": "http://a"}})),
            hash(json!({"object": {"id": "http://b"}}))
        );
        assert_ne!(hash(json!({"n": 0.5})), hash(json!({"n": 0.25})));
    }

    #[test]
    fn derived_ids_are_version_8_uuids_of_the_hash() {
        let hash = hash(json!({"verb": {"id": "http://v/x"}}));
        let id = derived_id(&hash);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.as_bytes()[..6], hash[..6]);
        assert_eq!(derived_id(&hash), id);
    }
}
