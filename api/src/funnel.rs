//! Funnels (docs/contract.md, "Funnel"): ordered steps, each an event name optionally narrowed
//! to a course and to equal top-level properties; a user enters at their first event matching
//! step 1 in the range and reaches step i when steps 2..=i match later events, in that order,
//! within `window` of entering. Computed from `event_log`, the event-time table the workers
//! fill in the rollup transaction (one row per counted event, so resends and redeliveries are not
//! rows twice), read by its `(project, event, ts)` index: never from the raw events in MongoDB.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::ApiError;

/// Steps of one funnel at most.
pub const MAX_STEPS: usize = 10;
/// Property filters of one step at most.
pub const MAX_STEP_PROPERTIES: usize = 5;
/// Longest event name, course id, property name or string value in a step.
const MAX_NAME: usize = 200;
/// The default conversion window: 7 days.
pub const DEFAULT_WINDOW_S: i64 = 7 * 86_400;
/// The longest conversion window: 365 days.
pub const MAX_WINDOW_S: i64 = 365 * 86_400;

/// A step as sent: an event name, or an object narrowing it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StepRequest {
    Name(String),
    Filtered {
        event: String,
        #[serde(default)]
        course_id: Option<String>,
        #[serde(default)]
        properties: serde_json::Map<String, Value>,
    },
}

/// A validated step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course_id: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, Value>,
}

impl Step {
    /// Validates step `index` (0-based) of a request: which step and field is wrong, and why.
    pub fn parse(index: usize, request: StepRequest) -> Result<Self, ApiError> {
        let n = index + 1;
        let bad = |detail: String| ApiError::Unprocessable(format!("`steps[{index}]` (step {n}): {detail}"));
        let (event, course_id, properties) = match request {
            StepRequest::Name(event) => (event, None, serde_json::Map::new()),
            StepRequest::Filtered {
                event,
                course_id,
                properties,
            } => (event, course_id, properties),
        };
        if event.is_empty() || event.len() > MAX_NAME || event.contains('\0') {
            return Err(bad(format!("`event` must have 1 to {MAX_NAME} characters and no NUL")));
        }
        if let Some(course) = &course_id {
            if course.is_empty() || course.len() > MAX_NAME || course.contains('\0') {
                return Err(bad(format!(
                    "`course_id` must have 1 to {MAX_NAME} characters and no NUL"
                )));
            }
        }
        if properties.len() > MAX_STEP_PROPERTIES {
            return Err(bad(format!(
                "`properties` may filter on at most {MAX_STEP_PROPERTIES} properties"
            )));
        }
        for (key, value) in &properties {
            if key.is_empty() || key.len() > MAX_NAME || key.contains('\0') {
                return Err(bad(format!(
                    "property names must have 1 to {MAX_NAME} characters and no NUL"
                )));
            }
            let scalar = match value {
                Value::String(s) => s.len() <= MAX_NAME && !s.contains('\0'),
                Value::Number(_) | Value::Bool(_) => true,
                _ => false,
            };
            if !scalar {
                return Err(bad(format!(
                    "`properties.{key}` must be a string (at most {MAX_NAME} characters), a number or a boolean"
                )));
            }
        }
        Ok(Self {
            event: common::event::snake_case(&event),
            course_id,
            properties,
        })
    }

    fn matches(&self, event: &Row) -> bool {
        self.event == event.event
            && self
                .course_id
                .as_ref()
                .is_none_or(|c| event.course_id.as_ref() == Some(c))
            && self.properties.iter().all(|(key, want)| {
                if key == "course_id" {
                    // Not in `props`: `event_log` keeps it in its own column, as an id (strings
                    // as they are, numbers printed), so a property filter on it compares with that.
                    return event.course_id.as_deref().is_some_and(|course| match want {
                        Value::String(s) => s == course,
                        Value::Number(n) => n.to_string() == course,
                        _ => false,
                    });
                }
                event
                    .props
                    .as_ref()
                    .and_then(|p| p.get(key))
                    .is_some_and(|v| same(v, want))
            })
    }
}

/// Equal JSON scalars; numbers by value (1 and 1.0 are the same number).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// One event of `event_log`, as a funnel reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub user_ord: i32,
    pub event: String,
    pub ts: DateTime<Utc>,
    pub course_id: Option<String>,
    pub props: Option<sqlx::types::Json<serde_json::Map<String, Value>>>,
}

/// Users reaching each step, and the millisecond gaps between consecutive steps of those who did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub reached: Vec<i64>,
    pub gaps: Vec<Vec<i64>>,
}

/// The funnel over `rows` (any order).
pub fn compute(steps: &[Step], window_s: i64, rows: Vec<Row>) -> Outcome {
    let mut by_user: HashMap<i32, Vec<Row>> = HashMap::new();
    for row in rows {
        by_user.entry(row.user_ord).or_default().push(row);
    }
    let mut outcome = Outcome {
        reached: vec![0; steps.len()],
        gaps: vec![Vec::new(); steps.len()],
    };
    for events in by_user.values_mut() {
        // Event time, then name, so ties resolve the same way on every run.
        events.sort_by(|a, b| (a.ts, &a.event).cmp(&(b.ts, &b.event)));
        let Some(entry) = events.iter().position(|e| steps[0].matches(e)) else {
            continue;
        };
        let entered = events[entry].ts.timestamp_millis();
        let deadline = entered.saturating_add(window_s.saturating_mul(1000));
        outcome.reached[0] += 1;
        let (mut previous, mut position) = (entered, entry + 1);
        for (index, step) in steps.iter().enumerate().skip(1) {
            let Some(found) = events[position..]
                .iter()
                .position(|e| e.ts.timestamp_millis() <= deadline && step.matches(e))
            else {
                break;
            };
            let at = events[position + found].ts.timestamp_millis();
            outcome.reached[index] += 1;
            outcome.gaps[index].push(at - previous);
            previous = at;
            position += found + 1;
        }
    }
    outcome
}

/// The median of millisecond gaps, in seconds (the mean of the middle two for an even count).
pub fn median_seconds(gaps: &mut [i64]) -> Option<f64> {
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let n = gaps.len();
    let ms = if n % 2 == 1 {
        gaps[n / 2] as f64
    } else {
        (gaps[n / 2 - 1] + gaps[n / 2]) as f64 / 2.0
    };
    Some(ms / 1000.0)
}

/// The conversion window: seconds, or a duration such as `30m`, `2h`, `7d`; 1 s to 365 days.
pub fn parse_window(value: Option<&Value>) -> Result<i64, ApiError> {
    let invalid =
        || ApiError::Unprocessable("`window` must be seconds or a duration like 30m, 2h, 7d, from 1s to 365d".into());
    let seconds = match value {
        None | Some(Value::Null) => DEFAULT_WINDOW_S,
        Some(Value::Number(n)) => n.as_i64().ok_or_else(invalid)?,
        Some(Value::String(s)) => {
            i64::try_from(common::config::parse_duration(s).map_err(|_| invalid())?.as_secs()).map_err(|_| invalid())?
        }
        Some(_) => return Err(invalid()),
    };
    if !(1..=MAX_WINDOW_S).contains(&seconds) {
        return Err(invalid());
    }
    Ok(seconds)
}

/// The distinct event names of `steps`, sorted (what the query reads).
pub fn event_names(steps: &[Step]) -> Vec<String> {
    let names: BTreeMap<&str, ()> = steps.iter().map(|s| (s.event.as_str(), ())).collect();
    names.into_keys().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: i32, event: &str, minute: i64) -> Row {
        Row {
            user_ord: user,
            event: event.into(),
            ts: DateTime::from_timestamp(1_772_323_200 + minute * 60, 0).unwrap(),
            course_id: None,
            props: None,
        }
    }

    fn steps(names: &[&str]) -> Vec<Step> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Step::parse(i, StepRequest::Name((*n).into())).unwrap())
            .collect()
    }

    #[test]
    fn steps_count_in_order_within_the_window_from_the_first_entry() {
        let rows = vec![
            row(1, "view", 0),
            row(1, "cart", 5),
            row(1, "buy", 10),
            // Out of order: buy before cart does not convert.
            row(2, "view", 0),
            row(2, "buy", 1),
            row(2, "cart", 2),
            // Past the window.
            row(3, "view", 0),
            row(3, "cart", 61),
            // Never entered.
            row(4, "cart", 0),
        ];
        let mut outcome = compute(&steps(&["view", "cart", "buy"]), 3600, rows);
        assert_eq!(outcome.reached, [3, 2, 1]);
        // Users come in no particular order.
        outcome.gaps[1].sort_unstable();
        assert_eq!(outcome.gaps[1], [120_000, 300_000]);
    }

    #[test]
    fn a_step_can_be_narrowed_to_a_course_and_properties() {
        let mut a = row(1, "view", 0);
        a.course_id = Some("c1".into());
        let mut b = row(1, "buy", 1);
        b.props = Some(sqlx::types::Json(
            serde_json::json!({"plan": "pro", "seats": 2})
                .as_object()
                .unwrap()
                .clone(),
        ));
        let mut c = row(2, "view", 0);
        c.course_id = Some("c2".into());
        let request: Vec<StepRequest> = serde_json::from_value(serde_json::json!([
            {"event": "view", "course_id": "c1"},
            {"event": "buy", "properties": {"plan": "pro", "seats": 2.0}}
        ]))
        .unwrap();
        let steps: Vec<Step> = request
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::parse(i, s).unwrap())
            .collect();
        assert_eq!(compute(&steps, 3600, vec![a, b, c]).reached, [1, 1]);
    }

    #[test]
    fn a_property_filter_on_course_id_reads_the_course_column() {
        let mut a = row(1, "buy", 0);
        a.course_id = Some("c1".into());
        let mut b = row(2, "buy", 0);
        b.course_id = Some("7".into());
        let request: Vec<StepRequest> = serde_json::from_value(serde_json::json!([
            {"event": "buy", "properties": {"course_id": "c1"}},
            {"event": "buy", "properties": {"course_id": 7}},
            {"event": "buy", "properties": {"course_id": "c2"}}
        ]))
        .unwrap();
        let steps: Vec<Step> = request
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::parse(i, s).unwrap())
            .collect();
        let reached: Vec<usize> = steps
            .iter()
            .map(|s| [&a, &b].into_iter().filter(|r| s.matches(r)).count())
            .collect();
        assert_eq!(reached, [1, 1, 0]);
    }

    #[test]
    fn invalid_steps_name_the_step_and_the_field() {
        let bad = |v: Value| {
            let request: StepRequest = serde_json::from_value(v).unwrap();
            match Step::parse(2, request) {
                Err(ApiError::Unprocessable(detail)) => detail,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(serde_json::json!("")).starts_with("`steps[2]` (step 3)"));
        assert!(bad(serde_json::json!({"event": "x", "properties": {"a": [1]}})).contains("`properties.a`"));
        assert!(bad(serde_json::json!({"event": "x", "course_id": ""})).contains("`course_id`"));
    }

    #[test]
    fn windows_are_seconds_or_durations_within_a_year() {
        assert_eq!(parse_window(None).unwrap(), 7 * 86_400);
        assert_eq!(parse_window(Some(&serde_json::json!(60))).unwrap(), 60);
        assert_eq!(parse_window(Some(&serde_json::json!("2h"))).unwrap(), 7200);
        assert!(parse_window(Some(&serde_json::json!(0))).is_err());
        assert!(parse_window(Some(&serde_json::json!("400d"))).is_err());
        assert!(parse_window(Some(&serde_json::json!(true))).is_err());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_seconds(&mut [3000, 1000, 2000]), Some(2.0));
        assert_eq!(median_seconds(&mut [1000, 4000]), Some(2.5));
        assert_eq!(median_seconds(&mut []), None);
    }
}
