//! ISO 8601 durations, as xAPI's `result.duration` carries them (`PT1M30.5S`, `P1DT2H`, `PT03M15S`):
//! a small parser rather than a crate, since the grammar is one line and a crate would bring
//! calendar arithmetic we do not want (a duration is a number of seconds here).
//!
//! `P[nY][nM][nW][nD][T[nH][nM][nS]]`: at least one component, in this order, each a number of
//! digits, the last one present possibly with a fraction (`.` or `,`). Years count 365 days and
//! months 30 (xAPI durations from learning platforms are hours, minutes and seconds in practice).

/// Seconds in each date component, in order.
const DATE: [(u8, f64); 4] = [
    (b'Y', 365.0 * 86_400.0),
    (b'M', 30.0 * 86_400.0),
    (b'W', 7.0 * 86_400.0),
    (b'D', 86_400.0),
];
/// Seconds in each time component, in order.
const TIME: [(u8, f64); 3] = [(b'H', 3_600.0), (b'M', 60.0), (b'S', 1.0)];

/// The seconds `text` stands for, or why it is no ISO 8601 duration.
pub fn seconds(text: &str) -> Result<f64, String> {
    let refuse = || format!("is not an ISO 8601 duration (such as PT1M30.5S): {text:?}");
    let rest = text.strip_prefix('P').ok_or_else(refuse)?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return Err(refuse()),
        None => (rest, None),
    };
    let mut total = 0.0;
    let mut components = 0;
    let mut fraction_seen = false;
    for (part, units) in [(date, &DATE[..]), (time.unwrap_or(""), &TIME[..])] {
        let mut bytes = part.as_bytes();
        let mut next_unit = 0;
        while !bytes.is_empty() {
            if fraction_seen {
                // Only the last component may have a fraction.
                return Err(refuse());
            }
            let digits = bytes
                .iter()
                .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b','))
                .count();
            let (number, tail) = bytes.split_at(digits);
            let (&designator, tail) = tail.split_first().ok_or_else(refuse)?;
            let number = std::str::from_utf8(number).map_err(|_| refuse())?.replace(',', ".");
            let whole_digits = number.split('.').next().unwrap_or_default();
            let fraction_digits = number.split_once('.').map(|(_, f)| f);
            if whole_digits.is_empty() || fraction_digits.is_some_and(|f| f.is_empty() || f.contains('.')) {
                return Err(refuse());
            }
            fraction_seen = fraction_digits.is_some();
            let value: f64 = number.parse().map_err(|_| refuse())?;
            let position = units[next_unit..]
                .iter()
                .position(|(unit, _)| *unit == designator)
                .ok_or_else(refuse)?;
            total += value * units[next_unit + position].1;
            next_unit += position + 1;
            components += 1;
            bytes = tail;
        }
    }
    if components == 0 || !total.is_finite() {
        return Err(refuse());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_are_read_in_seconds() {
        for (text, expected) in [
            ("PT1S", 1.0),
            ("PT03M15S", 195.0),
            ("PT1M30.5S", 90.5),
            ("PT0,25S", 0.25),
            ("PT1H", 3_600.0),
            ("P1DT2H3M4S", 86_400.0 + 7_384.0),
            ("P2W", 14.0 * 86_400.0),
            ("P1Y2M", 365.0 * 86_400.0 + 60.0 * 86_400.0),
            ("PT0S", 0.0),
            ("PT1.5H", 5_400.0),
            ("P0D", 0.0),
        ] {
            assert_eq!(seconds(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "", "P", "PT", "1S", "PT1", "PTS", "PT1S2", "PT1.5M3S", "PT.5S", "PT1.S", "PT1.2.3S", "P1H", "PT1D",
            "PT1S1M", "PT1M1M", "-PT1S", "P-1D", "pt1s", "PT1 S", "P1DT", "90",
        ] {
            assert!(seconds(text).is_err(), "{text:?}");
        }
    }
}
