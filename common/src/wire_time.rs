//! Reading the event's times as they cross JetStream. Ingest writes them with chrono's serde, as
//! RFC 3339 in UTC (`2026-01-02T03:04:05.678Z`), and the workers read four per event: chrono's
//! general RFC 3339 parser was about 4% of the workers' CPU in a drain's profile. That exact
//! shape is read directly here; anything else (an offset, a leap second, a message written by
//! another version) goes to chrono's parser, so what is accepted and what it means are unchanged.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de, Deserializer};

/// A time in ingest's shape, or through chrono's `FromStr` (what `DateTime<Utc>`'s own serde
/// accepts).
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match fast(text.as_bytes()) {
        Some(time) => Ok(time),
        None => text.parse(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or None.
fn fast(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if *b.last()? != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?
            .iter()
            .try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let value = digits(20..b.len() - 1)?;
            value * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    // A second of 60 (leap) is left to chrono.
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if second > 59 {
        return None;
    }
    Some(date.and_hms_nano_opt(hour, minute, second, nanos)?.and_utc())
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 time")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).map_err(E::custom)
    }
}

/// `#[serde(deserialize_with)]` for a `DateTime<Utc>`.
pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Visitor)
}

/// `#[serde(deserialize_with)]` for an `Option<DateTime<Utc>>` (with `default` for absence).
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    struct Optional;
    impl<'de> de::Visitor<'de> for Optional {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            required(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(Optional)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input means what chrono says it means, accepted or refused.
    #[test]
    fn agrees_with_chrono() {
        let inputs = [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.6Z",
            "2026-01-02T03:04:05.678Z",
            "2026-01-02T03:04:05.678901234Z",
            "2000-02-29T23:59:59.999Z",
            "2026-01-02T03:04:05.678+02:00",
            "2026-01-02 03:04:05Z",
            "2026-01-02T03:04:05.678z",
            "2016-12-31T23:59:60Z",
            "2026-01-02T03:04:05.1234567890Z",
            "2026-01-02T03:04:5Z",
            "",
            "2026-02-30T00:00:00Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:05.Z",
            "２026-01-02T03:04:05Z",
            "2026-01-02T03:04:05",
            "-026-01-02T03:04:05Z",
        ];
        for text in inputs {
            assert_eq!(parse(text).ok(), text.parse::<DateTime<Utc>>().ok(), "{text:?}");
        }
        let accepted = inputs.iter().filter(|t| parse(t).is_ok()).count();
        assert!(accepted >= 10 && accepted < inputs.len(), "both outcomes are exercised");
    }

    #[test]
    fn ingests_shape_takes_the_fast_path() {
        let now = Utc::now();
        let written = serde_json::to_value(now).unwrap();
        let text = written.as_str().unwrap();
        assert_eq!(fast(text.as_bytes()), Some(now), "{text}");
        assert!(fast(b"2016-12-31T23:59:60Z").is_none(), "leap seconds go to chrono");
        assert!(fast(b"2026-01-02T03:04:05.678+02:00").is_none());
    }

    #[test]
    fn deserialises_required_and_optional_times() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "required")]
            at: DateTime<Utc>,
            #[serde(default, deserialize_with = "optional")]
            maybe: Option<DateTime<Utc>>,
        }
        let t: T = serde_json::from_str(r#"{"at": "2026-01-02T03:04:05.678Z", "maybe": null}"#).unwrap();
        assert_eq!(t.at.timestamp_millis(), 1_767_323_045_678);
        assert_eq!(t.maybe, None);
        let t: T = serde_json::from_str(r#"{"at": "2026-01-02T03:04:05Z"}"#).unwrap();
        assert_eq!(t.maybe, None);
        let mut bytes = br#"{"at": "2026-01-02T03:04:05Z", "maybe": "2026-01-02T03:04:06Z"}"#.to_vec();
        let t: T = simd_json::serde::from_slice(&mut bytes).unwrap();
        assert_eq!(t.maybe.map(|m| m - t.at), Some(chrono::TimeDelta::seconds(1)));
        assert!(serde_json::from_str::<T>(r#"{"at": 5}"#).is_err());
    }
}
