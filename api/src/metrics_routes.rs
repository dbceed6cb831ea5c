//! Project-wide metrics (admins and read keys): active users, top events and pages, funnels
//! (from the raw events in MongoDB) and retention cohorts.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
};
use chrono::{NaiveDate, Utc};
use futures::TryStreamExt as _;
use mongodb::bson::{self, doc, Document};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    routes::{bounded, JsonBody, Range, RangeQuery},
    ApiError, App,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Interval {
    Day,
    Week,
    Month,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct DailyActive {
    date: NaiveDate,
    /// Distinct users active that day.
    dau: i64,
    /// Distinct users active in the 7 days ending that day.
    wau: i64,
    /// Distinct users active in the 30 days ending that day.
    mau: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct BucketActive {
    /// First day of the bucket within the range.
    start: NaiveDate,
    /// Distinct users active in the bucket (within the range).
    active_users: i64,
}

fn json<T: Serialize>(value: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

/// `GET /v1/metrics/active-users?from&to&interval=day|week|month`.
pub async fn active_users(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let interval = match query.interval.as_deref().unwrap_or("day") {
        "day" => Interval::Day,
        "week" => Interval::Week,
        "month" => Interval::Month,
        other => {
            return Err(ApiError::Unprocessable(format!(
                "`interval` must be day, week or month, not {other:?}"
            )))
        }
    };
    let project = principal.project;
    let key = format!("active-users:{}:{interval:?}", range.key());
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let series = if interval == Interval::Day {
                // One pass over the (day, user) rows of the range and the 29 days before it, with
                // sliding 7- and 30-day windows: far cheaper than a distinct count per day.
                let rows: Vec<(NaiveDate, String)> = sqlx::query_as(
                    "select day, user_key from daily_active_users
                      where project = $1 and day between $2::date - 29 and $3::date order by day",
                )
                .bind(&project)
                .bind(range.from)
                .bind(range.to)
                .fetch_all(&app.pool)
                .await?;
                json(daily_active(&rows, range.from, range.to))?
            } else {
                let unit = if interval == Interval::Week { "week" } else { "month" };
                let rows: Vec<BucketActive> = sqlx::query_as(
                    "select greatest(date_trunc($4, b.start)::date, $2::date) as start,
                            (select count(distinct user_key) from daily_active_users a
                              where a.project = $1
                                and a.day between greatest(date_trunc($4, b.start)::date, $2::date)
                                              and least((date_trunc($4, b.start) + ('1 ' || $4)::interval)::date - 1, $3::date)) as active_users
                       from generate_series(date_trunc($4, $2::date), $3::date, ('1 ' || $4)::interval) as b(start)
                      order by 1",
                )
                .bind(&project)
                .bind(range.from)
                .bind(range.to)
                .bind(unit)
                .fetch_all(&app.pool)
                .await?;
                json(rows)?
            };
            Ok(serde_json::json!({
                "project": project,
                "from": range.from,
                "to": range.to,
                "interval": interval,
                "series": series,
            }))
        })
        .await)
}

/// DAU, WAU and MAU for each day of `from..=to`, from the (day, user) rows of `from - 29..=to`.
fn daily_active(rows: &[(NaiveDate, String)], from: NaiveDate, to: NaiveDate) -> Vec<DailyActive> {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut by_day: std::collections::BTreeMap<NaiveDate, Vec<u32>> = std::collections::BTreeMap::new();
    for (day, user) in rows {
        let next = ids.len() as u32;
        let id = *ids.entry(user.as_str()).or_insert(next);
        by_day.entry(*day).or_default().push(id);
    }
    let empty = Vec::new();
    let users = |day: NaiveDate| by_day.get(&day).unwrap_or(&empty);
    let add = |window: &mut HashMap<u32, u32>, users: &[u32]| {
        for u in users {
            *window.entry(*u).or_default() += 1;
        }
    };
    let remove = |window: &mut HashMap<u32, u32>, users: &[u32]| {
        for u in users {
            if let Some(n) = window.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    window.remove(u);
                }
            }
        }
    };
    // Users → active days within the window; its length is the distinct count.
    let (mut weekly, mut monthly) = (HashMap::new(), HashMap::new());
    for back in (1..30u64).rev() {
        let day = from - chrono::Days::new(back);
        add(&mut monthly, users(day));
        if back < 7 {
            add(&mut weekly, users(day));
        }
    }
    let mut series = Vec::new();
    let mut day = from;
    while day <= to {
        add(&mut weekly, users(day));
        add(&mut monthly, users(day));
        series.push(DailyActive {
            date: day,
            dau: users(day).len() as i64,
            wau: weekly.len() as i64,
            mau: monthly.len() as i64,
        });
        remove(&mut weekly, users(day - chrono::Days::new(6)));
        remove(&mut monthly, users(day - chrono::Days::new(29)));
        day = day + chrono::Days::new(1);
    }
    series
}

/// `GET /v1/metrics/events/top?from&to&limit`: events by name over the range, most first.
pub async fn top_events(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    top(app, principal, headers, query, "daily_event_counts", "event", "events").await
}

/// `GET /v1/metrics/pages/top?from&to&limit`: page views by path over the range, most first.
pub async fn top_pages(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    top(app, principal, headers, query, "daily_page_views", "page", "views").await
}

async fn top(
    app: App,
    principal: Principal,
    headers: HeaderMap,
    query: RangeQuery,
    table: &'static str,
    name: &'static str,
    count: &'static str,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let limit = bounded("limit", query.limit.as_deref(), 10, 1, 100)?;
    let project = principal.project;
    let key = format!("top:{table}:{}:{limit}", range.key());
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                "select {name}, sum({count})::bigint as n from {table}
                  where project = $1 and day between $2 and $3
                  group by {name} order by n desc, {name} limit $4"
            ))
            .bind(&project)
            .bind(range.from)
            .bind(range.to)
            .bind(limit)
            .fetch_all(&app.pool)
            .await?;
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(n, c)| serde_json::json!({name: n, count: c}))
                .collect();
            Ok(serde_json::json!({"project": project, "from": range.from, "to": range.to, "items": items}))
        })
        .await)
}

/// The days after the first active day that retention reports.
const RETENTION_DAYS: [i32; 3] = [1, 7, 30];

/// `GET /v1/retention?from&to`: cohorts by first active day within the range; day-N retention is
/// the share of the cohort active on exactly day cohort+N (null while that day is in the future).
pub async fn retention(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let project = principal.project;
    let key = format!("retention:{}", range.key());
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let rows: Vec<(NaiveDate, i64, i64, i64, i64)> = sqlx::query_as(
                "with firsts as (
                    select user_key, min(day) as first_day from daily_active_users
                     where project = $1 group by user_key)
                 select f.first_day, count(*),
                        count(*) filter (where exists (select 1 from daily_active_users a
                            where a.project = $1 and a.user_key = f.user_key and a.day = f.first_day + $4)),
                        count(*) filter (where exists (select 1 from daily_active_users a
                            where a.project = $1 and a.user_key = f.user_key and a.day = f.first_day + $5)),
                        count(*) filter (where exists (select 1 from daily_active_users a
                            where a.project = $1 and a.user_key = f.user_key and a.day = f.first_day + $6))
                   from firsts f
                  where f.first_day between $2 and $3
                  group by f.first_day order by 1",
            )
            .bind(&project)
            .bind(range.from)
            .bind(range.to)
            .bind(RETENTION_DAYS[0])
            .bind(RETENTION_DAYS[1])
            .bind(RETENTION_DAYS[2])
            .fetch_all(&app.pool)
            .await?;
            let today = Utc::now().date_naive();
            let cohorts: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(cohort, size, d1, d7, d30)| {
                    let mut entry = serde_json::json!({"cohort": cohort, "size": size});
                    for (n, users) in RETENTION_DAYS.iter().zip([d1, d7, d30]) {
                        let observable = cohort + chrono::Days::new(*n as u64) <= today;
                        let rate = (observable && size > 0).then(|| users as f64 / size as f64);
                        entry[format!("d{n}")] = serde_json::json!({"users": users, "rate": rate});
                    }
                    entry
                })
                .collect();
            Ok(
                serde_json::json!({"project": project, "from": range.from, "to": range.to,
                                  "days": RETENTION_DAYS, "cohorts": cohorts}),
            )
        })
        .await)
}

#[derive(Debug, Deserialize)]
pub struct FunnelRequest {
    steps: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    /// The conversion window: seconds, or a duration such as `30m`, `2h`, `7d`.
    window: Option<serde_json::Value>,
}

const MAX_STEPS: usize = 10;
const DEFAULT_WINDOW_S: i64 = 7 * 86_400;

/// `POST /v1/funnels` with `{steps, from, to, window}`: order-aware; a user enters at their first
/// `steps[0]` in the range and reaches step i when steps 1..i occur in that order within `window`
/// of entering. Users per step, conversion from the previous step and from the first, and the
/// median seconds between consecutive steps.
pub async fn funnel(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(request): JsonBody<FunnelRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let range = Range::parse(
        request.from.as_deref(),
        request.to.as_deref(),
        app.config.max_range_days,
    )?;
    if !(2..=MAX_STEPS).contains(&request.steps.len()) || request.steps.iter().any(|s| s.is_empty() || s.len() > 200) {
        return Err(ApiError::Unprocessable(format!(
            "`steps` must name 2 to {MAX_STEPS} events"
        )));
    }
    let window = parse_window(request.window.as_ref())?;
    let steps: Vec<String> = request.steps.iter().map(|s| common::event::snake_case(s)).collect();
    let project = principal.project;
    let key = format!(
        "funnel:{}:{window}:{}",
        range.key(),
        serde_json::to_string(&steps).unwrap_or_default()
    );
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let start = range.from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            let end = (range.to + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            let unique: Vec<&String> = {
                let mut u: Vec<&String> = steps.iter().collect();
                u.sort();
                u.dedup();
                u
            };
            let mut cursor = app
                .mongo
                .collection::<Document>("events")
                .find(doc! {
                    "project": &project,
                    "event": {"$in": unique.iter().map(|s| s.as_str()).collect::<Vec<_>>()},
                    "ts": {"$gte": bson::DateTime::from_millis(start.timestamp_millis()),
                           "$lt": bson::DateTime::from_millis(end.timestamp_millis())},
                })
                .projection(doc! {"user_id": 1, "anonymous_id": 1, "event": 1, "ts": 1})
                .await?;
            let index_of: HashMap<&str, Vec<usize>> = steps.iter().enumerate().fold(HashMap::new(), |mut m, (i, s)| {
                m.entry(s.as_str()).or_default().push(i);
                m
            });
            let mut by_user: HashMap<String, Vec<(i64, String)>> = HashMap::new();
            let mut read = 0usize;
            while let Some(document) = cursor.try_next().await? {
                read += 1;
                if read > app.config.funnel_max_events {
                    return Err(ApiError::Unprocessable(format!(
                        "the range holds more than {} matching events; narrow it",
                        app.config.funnel_max_events
                    )));
                }
                let user = document
                    .get_str("user_id")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .or_else(|| document.get_str("anonymous_id").ok())
                    .unwrap_or_default();
                let (Ok(event), Ok(ts)) = (document.get_str("event"), document.get_datetime("ts")) else {
                    continue;
                };
                if user.is_empty() || !index_of.contains_key(event) {
                    continue;
                }
                by_user
                    .entry(user.to_owned())
                    .or_default()
                    .push((ts.timestamp_millis(), event.to_owned()));
            }
            let k = steps.len();
            let mut reached = vec![0i64; k];
            let mut gaps: Vec<Vec<i64>> = vec![Vec::new(); k];
            for events in by_user.values_mut() {
                events.sort();
                let Some(entry) = events.iter().position(|(_, e)| *e == steps[0]) else { continue };
                let deadline = events[entry].0 + window * 1000;
                reached[0] += 1;
                let mut previous = events[entry].0;
                let mut position = entry + 1;
                for (step, name) in steps.iter().enumerate().skip(1) {
                    let Some(found) = events[position..]
                        .iter()
                        .position(|(ts, e)| e == name && *ts <= deadline)
                    else {
                        break;
                    };
                    let (ts, _) = &events[position + found];
                    reached[step] += 1;
                    gaps[step].push(ts - previous);
                    previous = *ts;
                    position += found + 1;
                }
            }
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            let items: Vec<serde_json::Value> = steps
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    serde_json::json!({
                        "step": i + 1,
                        "event": name,
                        "users": reached[i],
                        "conversion_from_previous": if i == 0 { Some(1.0).filter(|_| reached[0] > 0) } else { ratio(reached[i], reached[i - 1]) },
                        "conversion_overall": ratio(reached[i], reached[0]),
                        "median_seconds_from_previous": if i == 0 { None } else { median_seconds(&mut gaps[i]) },
                    })
                })
                .collect();
            Ok(serde_json::json!({
                "project": project, "from": range.from, "to": range.to, "window_seconds": window,
                "steps": items, "overall_conversion": ratio(reached[k - 1], reached[0]),
            }))
        })
        .await)
}

/// The median of millisecond gaps, in seconds (the mean of the middle two for an even count).
fn median_seconds(gaps: &mut [i64]) -> Option<f64> {
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

fn parse_window(value: Option<&serde_json::Value>) -> Result<i64, ApiError> {
    let invalid =
        || ApiError::Unprocessable("`window` must be seconds or a duration like 30m, 2h, 7d (at most 365d)".into());
    let seconds = match value {
        None | Some(serde_json::Value::Null) => DEFAULT_WINDOW_S,
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(invalid)?,
        Some(serde_json::Value::String(s)) => {
            i64::try_from(common::config::parse_duration(s).map_err(|_| invalid())?.as_secs()).map_err(|_| invalid())?
        }
        Some(_) => return Err(invalid()),
    };
    if !(1..=365 * 86_400).contains(&seconds) {
        return Err(invalid());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sliding_windows_count_each_user_once_per_window() {
        let d = |n: u32| NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        let rows: Vec<(NaiveDate, String)> = [(1, "a"), (1, "b"), (2, "a"), (8, "c"), (9, "a")]
            .iter()
            .map(|(n, u)| (d(*n), (*u).to_owned()))
            .collect();
        let series = daily_active(&rows, d(2), d(9));
        let triples: Vec<(i64, i64, i64)> = series.iter().map(|s| (s.dau, s.wau, s.mau)).collect();
        assert_eq!(
            triples,
            [
                (1, 2, 2),
                (0, 2, 2),
                (0, 2, 2),
                (0, 2, 2),
                (0, 2, 2),
                (0, 2, 2),
                (1, 2, 3),
                (1, 2, 3)
            ]
        );
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_seconds(&mut [3000, 1000, 2000]), Some(2.0));
        assert_eq!(median_seconds(&mut [1000, 4000]), Some(2.5));
        assert_eq!(median_seconds(&mut []), None);
    }
}
