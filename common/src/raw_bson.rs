//! An event's MongoDB document written as BSON bytes straight into one buffer: the workers' hot
//! path (`workers::store::to_raw_document` writes the stored document with it; the fields are
//! [`crate::documents::field`]). The bson crate's `RawDocumentBuf::append` takes owned values, so every string of an
//! event's properties, context and traits was cloned, every nested object built in a buffer of
//! its own and copied into its parent, and each buffer grown from five bytes: a drain's profile
//! put `to_raw_document` at an eighth of the workers' CPU, most of it the allocator and
//! `memmove`. Here each value is copied once, into a buffer sized from the start.
//!
//! The encoding is `bson::to_bson`'s for JSON (the tests here, workers/src/store.rs's and the
//! `ingest_decode` fuzz target compare the bytes): integers
//! as 64-bit, other numbers as doubles, arrays as documents keyed "0", "1", ...

use std::io::Write as _;

use serde_json::{Map, Value};

/// A BSON document being written: [`Self::begin`] a document, its elements, [`Self::end`] it.
pub struct Writer {
    buf: Vec<u8>,
}

/// Why a value cannot be BSON.
#[derive(Debug, thiserror::Error)]
pub enum Unencodable {
    #[error("the key {0:?} holds U+0000")]
    NulInKey(String),
    #[error("the integer {0} does not fit in 64 signed bits")]
    TooLarge(u64),
    #[error("the number {0} is not representable")]
    Number(String),
}

const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const BOOLEAN: u8 = 0x08;
const DATE_TIME: u8 = 0x09;
const NULL: u8 = 0x0A;
const INT64: u8 = 0x12;

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Starts a document; the returned offset goes to [`Self::end`].
    pub fn begin(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    /// Ends the document begun at `at`: the terminator, then its length in front.
    pub fn end(&mut self, at: usize) {
        self.buf.push(0);
        let len = (self.buf.len() - at) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn key(&mut self, kind: u8, key: &str) -> Result<(), Unencodable> {
        if key.as_bytes().contains(&0) {
            return Err(Unencodable::NulInKey(key.to_owned()));
        }
        self.buf.push(kind);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    pub fn string(&mut self, key: &str, value: &str) -> Result<(), Unencodable> {
        self.key(STRING, key)?;
        self.buf.extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    /// A string value made of `parts` joined, written without joining them first.
    pub fn joined(&mut self, key: &str, parts: &[&str]) -> Result<(), Unencodable> {
        self.key(STRING, key)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.buf.extend_from_slice(&(len as i32 + 1).to_le_bytes());
        for part in parts {
            self.buf.extend_from_slice(part.as_bytes());
        }
        self.buf.push(0);
        Ok(())
    }

    /// A string value as `value` displays itself, written in place.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> Result<(), Unencodable> {
        self.key(STRING, key)?;
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{value}");
        self.buf.push(0);
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// A UTC datetime, in milliseconds since the epoch.
    pub fn date(&mut self, key: &str, millis: i64) -> Result<(), Unencodable> {
        self.key(DATE_TIME, key)?;
        self.buf.extend_from_slice(&millis.to_le_bytes());
        Ok(())
    }

    pub fn boolean(&mut self, key: &str, value: bool) -> Result<(), Unencodable> {
        self.key(BOOLEAN, key)?;
        self.buf.push(u8::from(value));
        Ok(())
    }

    /// A JSON object as an embedded document.
    pub fn object(&mut self, key: &str, map: &Map<String, Value>) -> Result<(), Unencodable> {
        self.key(DOCUMENT, key)?;
        self.members(map)
    }

    fn members(&mut self, map: &Map<String, Value>) -> Result<(), Unencodable> {
        let at = self.begin();
        for (key, value) in map {
            self.value(key, value)?;
        }
        self.end(at);
        Ok(())
    }

    fn value(&mut self, key: &str, value: &Value) -> Result<(), Unencodable> {
        match value {
            Value::Null => self.key(NULL, key),
            Value::Bool(b) => self.boolean(key, *b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => {
                    self.key(INT64, key)?;
                    self.buf.extend_from_slice(&i.to_le_bytes());
                    Ok(())
                }
                (None, Some(u), _) => Err(Unencodable::TooLarge(u)),
                (None, None, Some(f)) => {
                    self.key(DOUBLE, key)?;
                    self.buf.extend_from_slice(&f.to_le_bytes());
                    Ok(())
                }
                (None, None, None) => Err(Unencodable::Number(n.to_string())),
            },
            Value::String(s) => self.string(key, s),
            Value::Array(items) => {
                self.key(ARRAY, key)?;
                let at = self.begin();
                let mut index = [0u8; 20];
                for (i, item) in items.iter().enumerate() {
                    let mut cursor = std::io::Cursor::new(&mut index[..]);
                    // Twenty bytes hold any usize in decimal.
                    let _ = write!(cursor, "{i}");
                    let len = cursor.position() as usize;
                    let key = std::str::from_utf8(&index[..len]).unwrap_or_default();
                    self.value(key, item)?;
                }
                self.end(at);
                Ok(())
            }
            Value::Object(map) => self.object(key, map),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_encode_as_bson_would() {
        let value = serde_json::json!({
            "s": "x\u{0}y", "i": -3, "f": 0.25, "b": false, "n": null,
            "a": [1, "two", [3.5], {"k": true}], "o": {"p": {"q": []}}, "e": {}
        });
        let Value::Object(map) = &value else { unreachable!() };
        let mut writer = Writer::with_capacity(0);
        let at = writer.begin();
        writer.object("doc", map).unwrap();
        writer.date("when", 1_700_000_000_123).unwrap();
        writer.end(at);
        let expected = bson::to_vec(&bson::doc! {
            "doc": bson::to_bson(&value).unwrap(),
            "when": bson::DateTime::from_millis(1_700_000_000_123),
        })
        .unwrap();
        assert_eq!(writer.into_bytes(), expected);
    }

    /// Random JSON (nested objects and arrays, every scalar kind, keys and strings with
    /// multi-byte characters and NUL in values, integers at and beyond i64's bounds): the same
    /// bytes as bson's own encoder, or refused exactly where bson refuses.
    #[test]
    fn random_values_encode_as_bson_would() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        fn value(next: &mut impl FnMut(u64) -> u64, depth: u32) -> Value {
            let text = |next: &mut dyn FnMut(u64) -> u64| -> String {
                ["", "a", "é", "日本", "x\u{0}y", "long key with spaces", "0", "😀"][next(8) as usize]
                    .repeat(1 + next(3) as usize)
            };
            match next(if depth > 3 { 7 } else { 9 }) {
                0 => Value::Null,
                1 => Value::Bool(next(2) == 1),
                2 => serde_json::json!([i64::MIN, i64::MAX, 0, -1, 1 << 40][next(5) as usize]),
                3 => serde_json::json!(u64::MAX - next(3)),
                4 => serde_json::json!([0.5, -0.0, 1e300, -2.25e-300, 3.0][next(5) as usize]),
                5 | 6 => Value::String(text(next)),
                7 => Value::Array((0..next(12)).map(|_| value(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next(6))
                        .map(|_| (text(next).replace('\0', ""), value(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        let (mut same, mut refused) = (0, 0);
        for _ in 0..3_000 {
            let mut map = Map::new();
            for i in 0..next(6) {
                map.insert(format!("k{i}"), value(&mut next, 0));
            }
            let mut writer = Writer::with_capacity(0);
            let at = writer.begin();
            let ours = writer.object("doc", &map).map(|()| {
                writer.end(at);
                writer.into_bytes()
            });
            let theirs = bson::to_bson(&map).and_then(|doc| bson::to_vec(&bson::doc! {"doc": doc}));
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours, theirs, "{map:?}");
                    same += 1;
                }
                (Err(Unencodable::TooLarge(_)), Err(_)) => refused += 1,
                (ours, theirs) => panic!("{map:?}: ours {ours:?}, bson's {theirs:?}"),
            }
        }
        assert!(
            same > 500 && refused > 500,
            "both outcomes exercised: {same} same, {refused} refused"
        );
    }

    #[test]
    fn what_bson_cannot_hold_is_refused() {
        let mut writer = Writer::with_capacity(0);
        assert!(matches!(writer.string("a\0b", "v"), Err(Unencodable::NulInKey(_))));
        let map = serde_json::json!({"big": u64::MAX});
        let Value::Object(map) = &map else { unreachable!() };
        assert!(matches!(writer.object("o", map), Err(Unencodable::TooLarge(_))));
    }
}
