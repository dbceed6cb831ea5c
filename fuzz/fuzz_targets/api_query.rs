//! Arbitrary bytes as what the api parses from its callers, each way it can be read: a query
//! string (`?from&to&limit&offset&group`, decoded as axum's `Query` does), a JSON body
//! (`POST /v1/funnels`, its window and steps) and a bare value (a date, a window, a path id, a
//! step name). Beyond "no panic": whatever is accepted is within the bounds docs/contract.md §7
//! states, and every refusal is a 422 with a reason.
#![no_main]

use api::{
    parse::{
        bounded, date, parse_window, path_id, FunnelRequest, Page, Range, RangeQuery, Step, StepRequest, MAX_STEPS,
        MAX_STEP_PROPERTIES, MAX_WINDOW_S,
    },
    ApiError,
};
use chrono::{Datelike as _, Days, NaiveDate};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Range limits to parse with: tight, a month, `API_MAX_RANGE_DAYS`' default, and every day
/// `date` accepts (1970 to 9999).
const MAX_DAYS: [i64; 4] = [1, 31, 400, 3_000_000];
/// Longest step event name, course id, property name or string value.
const MAX_NAME: usize = 200;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = serde_urlencoded::from_bytes::<RangeQuery>(data) {
        query_string(&query);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        bare(text);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        body(&value);
    }
});

fn query_string(query: &RangeQuery) {
    for max_days in MAX_DAYS {
        check_range(
            Range::parse(query.from.as_deref(), query.to.as_deref(), max_days),
            max_days,
        );
    }
    match Page::parse(query) {
        Ok(page) => {
            assert!((1..=500).contains(&page.limit), "{page:?}");
            assert!((0..=i64::from(i32::MAX)).contains(&page.offset), "{page:?}");
            for total in [0, page.offset, page.offset + page.limit, i64::MAX] {
                let envelope = page.envelope(Value::Array(Vec::new()), total);
                match envelope["next_offset"].as_i64() {
                    Some(next) => assert!(next == page.offset + page.limit && next < total, "{envelope}"),
                    None => assert!(page.offset + page.limit >= total, "{envelope}"),
                }
            }
        }
        Err(error) => unprocessable(&error),
    }
    if let Some(group) = query.group.as_deref().filter(|g| !g.is_empty()) {
        check_path_id(group);
    }
    // `?matrix=N` of /v1/retention, read from `interval` here (RangeQuery has no `matrix`).
    match bounded("matrix", query.interval.as_deref(), 0, 1, 90) {
        Ok(n) => assert!((query.interval.is_none() && n == 0) || (1..=90).contains(&n), "{n}"),
        Err(error) => unprocessable(&error),
    }
}

fn bare(text: &str) {
    match date("from", Some(text)) {
        Ok(day) => {
            assert!((1970..=9999).contains(&day.year()), "{day}");
            // The canonical form reads back as the same day.
            assert_eq!(date("from", Some(&day.to_string())).ok(), Some(day));
        }
        Err(error) => unprocessable(&error),
    }
    check_window(parse_window(Some(&Value::String(text.to_owned()))));
    check_path_id(text);
    check_step(0, StepRequest::Name(text.to_owned()));
}

fn body(value: &Value) {
    check_window(parse_window(Some(value)));
    // Each step on its own, so that one bad step does not hide the checks of the others.
    let steps = value
        .as_array()
        .or_else(|| value.get("steps").and_then(Value::as_array));
    for (index, step) in steps.into_iter().flatten().enumerate() {
        if let Ok(request) = serde_json::from_value::<StepRequest>(step.clone()) {
            check_step(index, request);
        }
    }
    for max_days in MAX_DAYS {
        let Ok(request) = serde_json::from_value::<FunnelRequest>(value.clone()) else {
            return;
        };
        match request.validate(max_days) {
            Ok((range, window, steps, group)) => {
                check_range(Ok(range), max_days);
                // An accepted group is a valid id, and the empty one is no group.
                if let Some(group) = group.get() {
                    assert!(path_id("group", group).is_ok(), "{group:?}");
                }
                assert_eq!(group.key().is_empty(), group.get().is_none());
                check_window(Ok(window));
                assert!((2..=MAX_STEPS).contains(&steps.len()), "{} steps", steps.len());
                steps.iter().for_each(valid_step);
                // What the handler derives: the cache key and the time bounds of the query.
                serde_json::to_string(&steps).expect("steps serialise");
                let start = range.from.and_hms_opt(0, 0, 0).unwrap().and_utc();
                let end = range.to.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
                assert!(start < end);
            }
            Err(error) => unprocessable(&error),
        }
    }
}

/// An accepted range is in order, from 1970 to 9999, at most `max_days` long, and its cache key
/// is canonical: it reads back as the same range.
fn check_range(range: Result<Range, ApiError>, max_days: i64) {
    let range = match range {
        Ok(range) => range,
        Err(error) => return unprocessable(&error),
    };
    let (from, to) = (range.from, range.to);
    assert!(from <= to, "{from} > {to}");
    assert!(
        (1970..=9999).contains(&from.year()) && (1970..=9999).contains(&to.year()),
        "{from}..{to}"
    );
    assert!(
        (to - from).num_days() + 1 <= max_days,
        "{from}..{to} is over {max_days} days"
    );
    assert_eq!(range.key(), format!("{from}..{to}"));
    let again = Range::parse(Some(&from.to_string()), Some(&to.to_string()), max_days).expect("the canonical range");
    assert_eq!((again.from, again.to), (from, to));
    // What the handlers derive from a range: the 30 days before it, 90 days after it.
    assert!(from.checked_sub_days(Days::new(29)).is_some());
    assert!(to.checked_add_days(Days::new(90)).is_some());
    assert!(to < NaiveDate::MAX);
}

fn check_window(window: Result<i64, ApiError>) {
    match window {
        Ok(seconds) => assert!((1..=MAX_WINDOW_S).contains(&seconds), "{seconds}"),
        Err(error) => unprocessable(&error),
    }
}

fn check_path_id(id: &str) {
    match path_id("id", id) {
        Ok(()) => {
            assert!(!id.is_empty() && id.len() <= 256, "{} bytes", id.len());
            assert!(!id.chars().any(char::is_control), "{id:?}");
        }
        Err(error) => unprocessable(&error),
    }
}

fn check_step(index: usize, request: StepRequest) {
    match Step::parse(index, request) {
        Ok(step) => valid_step(&step),
        Err(error) => {
            unprocessable(&error);
            assert!(error.to_string().starts_with(&format!("`steps[{index}]`")), "{error}");
        }
    }
}

/// A valid step can match stored events: a snake_case name that ingest could have produced,
/// an optional course id and at most five scalar property filters, without NUL.
fn valid_step(step: &Step) {
    assert!(!step.event.is_empty(), "a step no event can match: {step:?}");
    assert!(!step.event.contains('\0'), "{step:?}");
    if let Some(course) = &step.course_id {
        assert!(
            !course.is_empty() && course.len() <= MAX_NAME && !course.contains('\0'),
            "{step:?}"
        );
    }
    assert!(step.properties.len() <= MAX_STEP_PROPERTIES, "{step:?}");
    for (key, value) in &step.properties {
        assert!(
            !key.is_empty() && key.len() <= MAX_NAME && !key.contains('\0'),
            "{step:?}"
        );
        match value {
            Value::String(s) => assert!(s.len() <= MAX_NAME && !s.contains('\0'), "{step:?}"),
            Value::Number(_) | Value::Bool(_) => {}
            other => panic!("a property filter on a non-scalar: {other}"),
        }
    }
}

/// A refusal is a 422 with a reason.
fn unprocessable(error: &ApiError) {
    match error {
        ApiError::Unprocessable(detail) => assert!(!detail.is_empty()),
        other => panic!("not a 422: {other:?}"),
    }
}
