//! Funnels (docs/contract.md, "Funnel"): ordered steps, each an event name optionally narrowed
//! to a course and to equal top-level properties; a user enters at their first event matching
//! step 1 in the range and reaches step i when steps 2..=i match later events, in that order,
//! within `window` of entering. Computed from `event_chunks`, the event-time ledger the workers
//! fill in the rollup transaction (each counted event in one chunk once, so resends and
//! redeliveries are not there twice), never from the raw events in MongoDB.
//!
//! [`run`] is the whole funnel: [`load`] reads the steps' events as arrays, one row per event
//! name; [`compute`] sorts those hits by user and time and walks each user's once; [`report`]
//! turns the users reaching each step into conversions and median times. The request's shape
//! (steps, window) is validated here too, by [`Step::parse`] and [`parse_window`], because it is
//! the funnel's definition, not a detail of HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{activity, persons::Persons};
use crate::{query::ratio, ApiError};

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
        // Ingest refuses such names (`"!!!"`): a step of one could never match an event.
        let event = common::event::snake_case(&event);
        if event.is_empty() {
            return Err(bad("`event` has no letters or digits".into()));
        }
        Ok(Self {
            event,
            course_id,
            properties,
        })
    }
}

/// One counted event (`event_chunks`) as a funnel sees it: whose, when, and which steps it matches. Ordered
/// by user, then time, then event name (`rank`), so ties resolve the same way on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub user: i32,
    pub at_ms: i64,
    /// The position of the event's name among the steps' sorted distinct names.
    pub rank: u16,
    /// Bit `i` is set when the event matches step `i`.
    pub steps: u16,
}

const _: () = assert!(MAX_STEPS <= u16::BITS as usize);

/// One event name's hits as `load` reads them: the name's rank, its users, their times, and the
/// masks of the filtered steps (absent when no step is filtered).
type NameRow = (i32, Vec<i32>, Vec<PgMicros>, Option<Vec<i32>>);

/// Reads the hits of `steps` from `start` (inclusive) to `end` (exclusive); `None` when there are
/// more than `limit`.
///
/// One row per event name comes back, with its users and times as two arrays: an unfiltered
/// funnel reads the name's chunks of the range's days (`event_chunks_key`), unnests them, and
/// sends a handful of rows, whatever the number of events (per-row decoding was most of the
/// api's time before). A step filtered by course or properties adds a third array, the mask of
/// the filtered steps each event matches, each a SQL predicate over bound values: the course
/// (the chunk's `courses`) and the property filters as one `props::jsonb @> $n` containment
/// (jsonb compares numbers by value, so 99 matches 99.0); a `course_id` property reads the course.
pub async fn load(
    pool: &sqlx::PgPool,
    (project, persons): (&str, &Persons),
    steps: &[Step],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    group: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<Hit>>, ApiError> {
    // Every id of the member persons: a person's anonymous events before they joined count.
    let members: Option<Vec<i32>> = match group {
        Some(group) => {
            let members = activity::group_members(pool, project, persons, group).await?;
            Some(
                persons
                    .expand(&members)
                    .iter()
                    .filter_map(|o| i32::try_from(o).ok())
                    .collect(),
            )
        }
        None => None,
    };
    let names = event_names(steps);
    let filtered = |step: &Step| step.course_id.is_some() || !step.properties.is_empty();
    let mut sql =
        sqlx::QueryBuilder::<sqlx::Postgres>::new("select n.rank::int4, array_agg(e.user_ord), array_agg(e.ts), ");
    if steps.iter().any(filtered) {
        sql.push("array_agg(0");
        for (i, step) in steps.iter().enumerate().filter(|(_, s)| filtered(s)) {
            sql.push(" | (case when n.name = ").push_bind(step.event.clone());
            if let Some(course) = &step.course_id {
                sql.push(" and e.course_id = ").push_bind(course.clone());
            }
            let mut contained = serde_json::Map::new();
            for (key, want) in &step.properties {
                if key != "course_id" {
                    contained.insert(key.clone(), want.clone());
                    continue;
                }
                // The ledger keeps the course in its own array, as an id (strings as they are,
                // numbers printed), so a property filter on it compares with that.
                match want {
                    Value::String(s) => sql.push(" and e.course_id = ").push_bind(s.clone()),
                    Value::Number(n) => sql.push(" and e.course_id = ").push_bind(n.to_string()),
                    _ => sql.push(" and false"),
                };
            }
            if !contained.is_empty() {
                sql.push(" and e.props::jsonb @> ")
                    .push_bind(sqlx::types::Json(contained))
                    .push("::jsonb");
            }
            sql.push(format!(" then {} else 0 end)", 1u32 << i));
        }
        sql.push(")");
    } else {
        sql.push("null::int4[]");
    }
    sql.push(" from unnest(").push_bind(names.clone());
    // Only a filtered step reads the chunks' courses and properties: unnesting two arrays rather
    // than four halves an unfiltered funnel's time (the chunks of a backfill are many and small).
    sql.push(if steps.iter().any(filtered) {
        "::text[]) with ordinality n(name, rank), lateral (select e.user_ord, e.ts, e.course_id, e.props \
         from event_chunks c, unnest(c.users, c.times, c.courses, c.props) e(user_ord, ts, course_id, props)"
    } else {
        "::text[]) with ordinality n(name, rank), lateral (select e.user_ord, e.ts \
         from event_chunks c, unnest(c.users, c.times) e(user_ord, ts)"
    });
    sql.push(" where c.project = ").push_bind(project.to_owned());
    sql.push(" and c.event = n.name and c.day >= ")
        .push_bind(start.date_naive());
    // `end` is exclusive: its day holds events only after midnight.
    sql.push(" and c.day <= ")
        .push_bind((end - chrono::Duration::microseconds(1)).date_naive());
    sql.push(" and e.ts >= ").push_bind(start);
    sql.push(" and e.ts < ").push_bind(end);
    if let Some(members) = members {
        // The members' ids, as ordinals (a hashed semi-join).
        sql.push(" and e.user_ord in (select unnest(")
            .push_bind(members)
            .push("::int4[]))");
    }
    sql.push(" limit ")
        .push_bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
    sql.push(") e group by n.rank");
    let rows: Vec<NameRow> = sql.build_query_as().fetch_all(pool).await?;
    if rows.iter().map(|r| r.1.len()).sum::<usize>() > limit {
        return Ok(None);
    }
    let mut hits = Vec::with_capacity(rows.iter().map(|r| r.1.len()).sum());
    for (rank, users, times, masks) in rows {
        let name = usize::try_from(rank - 1).ok().and_then(|i| names.get(i));
        // The unfiltered steps this name matches, whatever the event's course or properties.
        let always: u16 = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !filtered(s) && Some(&s.event) == name)
            .map(|(i, _)| 1u16 << i)
            .sum();
        for (i, (user, at)) in users.into_iter().zip(times).enumerate() {
            let more = masks.as_ref().and_then(|m| m.get(i)).copied().unwrap_or(0);
            // Each person's events in one sequence, whichever of its ids sent them.
            let user = u32::try_from(user).map_or(user, |ord| i32::try_from(persons.person(ord)).unwrap_or(user));
            hits.push(Hit {
                user,
                at_ms: at.unix_ms(),
                rank: u16::try_from(rank).unwrap_or(u16::MAX),
                steps: always | u16::try_from(more).unwrap_or(0),
            });
        }
    }
    Ok(Some(hits))
}

/// A `timestamptz` as PostgreSQL sends it in binary: microseconds since 2000-01-01 UTC. Read as a
/// number, without chrono's calendar arithmetic, which was a fifth of a funnel's api time.
struct PgMicros(i64);

impl PgMicros {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> i64 {
        const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;
        self.0.div_euclid(1000).saturating_add(POSTGRES_EPOCH_MS)
    }
}

impl sqlx::Type<sqlx::Postgres> for PgMicros {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::postgres::PgHasArrayType for PgMicros {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <DateTime<Utc> as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for PgMicros {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        // Queries with bound parameters are answered in binary; text would be a bug here.
        if value.format() != sqlx::postgres::PgValueFormat::Binary {
            return Err("a timestamptz in text format where binary was expected".into());
        }
        let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
        Ok(Self(i64::from_be_bytes(bytes)))
    }
}

/// Users reaching each step, and the millisecond gaps between consecutive steps of those who did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub reached: Vec<i64>,
    pub gaps: Vec<Vec<i64>>,
}

/// The funnel of `steps` steps over `hits` (any order).
pub fn compute(steps: usize, window_s: i64, mut hits: Vec<Hit>) -> Outcome {
    hits.sort_unstable();
    let mut outcome = Outcome {
        reached: vec![0; steps],
        gaps: vec![Vec::new(); steps],
    };
    for events in hits.chunk_by(|a, b| a.user == b.user) {
        let Some(entry) = events.iter().position(|e| e.steps & 1 != 0) else {
            continue;
        };
        let entered = events[entry].at_ms;
        let deadline = entered.saturating_add(window_s.saturating_mul(1000));
        outcome.reached[0] += 1;
        let (mut previous, mut position) = (entered, entry + 1);
        for index in 1..steps {
            let bit = 1u16 << index;
            let Some(found) = events[position..]
                .iter()
                .take_while(|e| e.at_ms <= deadline)
                .position(|e| e.steps & bit != 0)
            else {
                break;
            };
            let at = events[position + found].at_ms;
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

/// One step of a funnel's answer.
#[derive(Debug, PartialEq, Serialize)]
pub struct StepReport {
    /// 1-based.
    pub step: usize,
    pub event: String,
    pub users: i64,
    /// 1 for the first step (when anyone entered).
    pub conversion_from_previous: Option<f64>,
    pub conversion_overall: Option<f64>,
    pub median_seconds_from_previous: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course_id: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub properties: serde_json::Map<String, Value>,
}

/// A funnel's answer: each step, and the conversion from the first step to the last.
#[derive(Debug, PartialEq)]
pub struct Report {
    pub steps: Vec<StepReport>,
    pub overall_conversion: Option<f64>,
}

/// The report of `steps` from their `outcome`: users per step, conversion from the previous step
/// and from the first, the median seconds between consecutive steps.
pub fn report(steps: &[Step], mut outcome: Outcome) -> Report {
    let reached = &outcome.reached;
    let mut items = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        items.push(StepReport {
            step: i + 1,
            event: step.event.clone(),
            users: reached[i],
            conversion_from_previous: if i == 0 {
                Some(1.0).filter(|_| reached[0] > 0)
            } else {
                ratio(reached[i], reached[i - 1])
            },
            conversion_overall: ratio(reached[i], reached[0]),
            median_seconds_from_previous: if i == 0 {
                None
            } else {
                median_seconds(&mut outcome.gaps[i])
            },
            course_id: step.course_id.clone(),
            properties: step.properties.clone(),
        });
    }
    let last = steps.len().saturating_sub(1);
    let overall_conversion = ratio(outcome.reached[last], outcome.reached[0]);
    Report {
        steps: items,
        overall_conversion,
    }
}

/// The instants the UTC days `from..=to` span: from `from`'s midnight (inclusive) to the midnight
/// after `to` (exclusive).
pub fn bounds(from: NaiveDate, to: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |day: NaiveDate| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    (midnight(from), midnight(to.succ_opt().unwrap_or(NaiveDate::MAX)))
}

/// The funnel of `steps` over the days `from..=to` with a window of `window_s` seconds, of the
/// current members of `group` only when given; `None` when the range holds more than `limit`
/// events of the steps (of those members).
pub async fn run(
    pool: &sqlx::PgPool,
    (project, persons): (&str, &Persons),
    steps: &[Step],
    (from, to): (NaiveDate, NaiveDate),
    window_s: i64,
    group: Option<&str>,
    limit: usize,
) -> Result<Option<Report>, ApiError> {
    let (start, end) = bounds(from, to);
    let Some(hits) = load(pool, (project, persons), steps, start, end, group, limit).await? else {
        return Ok(None);
    };
    Ok(Some(report(steps, compute(steps.len(), window_s, hits))))
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

    /// A hit of user `user` at `minute` on event `name`, matching the steps of `names` it is.
    fn hit(names: &[&str], user: i32, name: &str, minute: i64) -> Hit {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        Hit {
            user,
            at_ms: (1_772_323_200 + minute * 60) * 1000,
            rank: sorted.iter().position(|n| *n == name).unwrap() as u16 + 1,
            steps: names
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == name)
                .map(|(i, _)| 1u16 << i)
                .sum(),
        }
    }

    #[test]
    fn steps_count_in_order_within_the_window_from_the_first_entry() {
        let names = ["view", "cart", "buy"];
        let at = |user, name, minute| hit(&names, user, name, minute);
        let hits = vec![
            at(1, "buy", 10),
            at(1, "view", 0),
            at(1, "cart", 5),
            // Out of order: buy before cart does not convert.
            at(2, "view", 0),
            at(2, "buy", 1),
            at(2, "cart", 2),
            // Past the window.
            at(3, "view", 0),
            at(3, "cart", 61),
            // Never entered.
            at(4, "cart", 0),
            // A second entry does not restart the funnel.
            at(5, "view", 0),
            at(5, "view", 100),
            at(5, "cart", 101),
        ];
        let mut outcome = compute(names.len(), 3600, hits);
        assert_eq!(outcome.reached, [4, 2, 1]);
        // Users come in no particular order.
        outcome.gaps[1].sort_unstable();
        assert_eq!(outcome.gaps[1], [120_000, 300_000]);
    }

    #[test]
    fn one_event_can_match_two_steps_but_counts_for_one() {
        // The same event twice: the second step needs a later event.
        let names = ["lesson", "lesson"];
        let once = vec![hit(&names, 1, "lesson", 0)];
        assert_eq!(compute(2, 3600, once).reached, [1, 0]);
        let twice = vec![hit(&names, 1, "lesson", 0), hit(&names, 1, "lesson", 1)];
        assert_eq!(compute(2, 3600, twice).reached, [1, 1]);
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
        // A name that normalises to nothing would match no event (fuzz/ api_query checks it).
        assert!(bad(serde_json::json!("!!!")).contains("no letters or digits"));
        assert!(bad(serde_json::json!({"event": " - "})).contains("no letters or digits"));
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
    fn the_report_converts_from_the_previous_step_and_the_first() {
        let steps: Vec<Step> = ["view", "cart", "buy"]
            .into_iter()
            .enumerate()
            .map(|(i, name)| Step::parse(i, StepRequest::Name(name.into())).unwrap())
            .collect();
        let outcome = Outcome {
            reached: vec![4, 2, 1],
            gaps: vec![vec![], vec![300_000, 120_000], vec![60_000]],
        };
        let report = report(&steps, outcome);
        let column = |f: fn(&StepReport) -> Option<f64>| report.steps.iter().map(f).collect::<Vec<_>>();
        assert_eq!(
            column(|s| s.conversion_from_previous),
            [Some(1.0), Some(0.5), Some(0.5)]
        );
        assert_eq!(column(|s| s.conversion_overall), [Some(1.0), Some(0.5), Some(0.25)]);
        assert_eq!(
            column(|s| s.median_seconds_from_previous),
            [None, Some(210.0), Some(60.0)]
        );
        assert_eq!(report.overall_conversion, Some(0.25));
        assert_eq!(report.steps[2].step, 3);

        // Nobody entered: no conversion is known, not even the first step's.
        let empty = super::report(&steps, compute(3, 60, Vec::new()));
        assert_eq!(empty.steps[0].conversion_from_previous, None);
        assert_eq!(empty.overall_conversion, None);
    }

    #[test]
    fn a_filtered_steps_report_names_its_course_and_properties_and_only_then() {
        let request: StepRequest =
            serde_json::from_value(serde_json::json!({"event": "Buy", "course_id": "c1", "properties": {"n": 2}}))
                .unwrap();
        let steps = [
            Step::parse(0, StepRequest::Name("view".into())).unwrap(),
            Step::parse(1, request).unwrap(),
        ];
        let report = report(&steps, compute(2, 60, Vec::new()));
        assert_eq!(
            serde_json::to_value(&report.steps).unwrap(),
            serde_json::json!([
                {"step": 1, "event": "view", "users": 0, "conversion_from_previous": null,
                 "conversion_overall": null, "median_seconds_from_previous": null},
                {"step": 2, "event": "buy", "users": 0, "conversion_from_previous": null,
                 "conversion_overall": null, "median_seconds_from_previous": null,
                 "course_id": "c1", "properties": {"n": 2}},
            ])
        );
    }

    #[test]
    fn a_range_of_days_spans_midnight_to_the_next_midnight() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let (start, end) = bounds(day(1), day(2));
        assert_eq!(start.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-03-03T00:00:00+00:00");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_seconds(&mut [3000, 1000, 2000]), Some(2.0));
        assert_eq!(median_seconds(&mut [1000, 4000]), Some(2.5));
        assert_eq!(median_seconds(&mut []), None);
    }
}
