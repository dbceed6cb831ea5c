//! Project-wide metrics (admins and read keys): active users and retention from the activity
//! bitmaps, top events and pages from the daily counters, funnels from `event_log`; all from
//! PostgreSQL, never the raw events.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
};
use chrono::{Datelike as _, Days, NaiveDate, Utc};
use common::bitmap::Kind;
use serde::{Deserialize, Serialize};

use crate::{
    activity::{self, DailySets},
    auth::Principal,
    funnel::{self, Step, StepRequest},
    routes::{bounded, path_id, JsonBody, Range, RangeQuery},
    ApiError, App,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Interval {
    Day,
    Week,
    Month,
}

fn json<T: Serialize>(value: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

/// The longest rolling window (MAU): the days before `from` whose users count.
const MONTH_DAYS: u64 = 30;

/// `GET /v1/metrics/active-users?from&to&interval=day|week|month`: with `day`, DAU, WAU and MAU
/// (distinct users in the 1, 7 and 30 days ending on each day); with `week` or `month`, the
/// distinct users of each calendar bucket clipped to the range. Exact: unions of the daily
/// activity bitmaps. With `group`, only the group's current members count.
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
    let group = query.group.filter(|g| !g.is_empty());
    if let Some(group) = &group {
        path_id("group", group)?;
    }
    let project = principal.project;
    let key = format!(
        "active-users:{}:{interval:?}:{}",
        range.key(),
        group.as_deref().unwrap_or("")
    );
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let first = range.from.checked_sub_days(Days::new(MONTH_DAYS - 1)).unwrap_or(NaiveDate::MIN);
            let mut sets = DailySets::load(&app.pool, &project, Kind::Active, None, first, range.to).await?;
            if let Some(group) = &group {
                sets.restrict(&activity::group_members(&app.pool, &project, group).await?);
            }
            let series = if interval == Interval::Day {
                let rows: Vec<serde_json::Value> = sets
                    .rolling(range.from, range.to, &[1, 7, MONTH_DAYS])
                    .into_iter()
                    .map(|(date, c)| serde_json::json!({"date": date, "dau": c[0], "wau": c[1], "mau": c[2]}))
                    .collect();
                json(rows)?
            } else {
                let rows: Vec<serde_json::Value> = buckets(range, interval)
                    .into_iter()
                    .map(|(start, end)| serde_json::json!({"start": start, "active_users": sets.union(start, end).len()}))
                    .collect();
                json(rows)?
            };
            Ok(serde_json::json!({
                "project": project,
                "group": group,
                "from": range.from,
                "to": range.to,
                "interval": interval,
                "series": series,
            }))
        })
        .await)
}

/// The calendar weeks (ISO, from Monday) or months of `range`, each clipped to it.
fn buckets(range: Range, interval: Interval) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let mut start = range.from;
    while start <= range.to {
        let next = match interval {
            Interval::Week => start
                .week(chrono::Weekday::Mon)
                .last_day()
                .checked_add_days(Days::new(1)),
            _ => start
                .with_day(1)
                .and_then(|d| d.checked_add_months(chrono::Months::new(1))),
        };
        let end = next.and_then(|n| n.pred_opt()).unwrap_or(NaiveDate::MAX).min(range.to);
        out.push((start, end));
        match end.succ_opt() {
            Some(after) => start = after,
            None => break,
        }
    }
    out
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

/// The days after the first active day that retention reports by name.
const RETENTION_DAYS: [u64; 3] = [1, 7, 30];
/// The widest N-day retention matrix (`matrix=N`: days 0..=N of each cohort).
const MAX_MATRIX_DAYS: i64 = 90;

#[derive(Debug, Deserialize)]
pub struct RetentionQuery {
    from: Option<String>,
    to: Option<String>,
    matrix: Option<String>,
}

/// `GET /v1/retention?from&to[&matrix=N]`: cohorts by first active day within the range; day-N
/// retention is the share of the cohort active on exactly day cohort+N (null while that day is in
/// the future). With `matrix=N`, each cohort also has the users active on each day 0..=N.
/// Exact: the cohort bitmap intersected with each later day's activity bitmap.
pub async fn retention(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RetentionQuery>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let matrix = match query.matrix.as_deref() {
        None => None,
        Some(value) => Some(bounded("matrix", Some(value), 0, 1, MAX_MATRIX_DAYS)? as u64),
    };
    let project = principal.project;
    let key = format!("retention:{}:{matrix:?}", range.key());
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let reach = RETENTION_DAYS[2].max(matrix.unwrap_or(0));
            let last = range.to.checked_add_days(Days::new(reach)).unwrap_or(NaiveDate::MAX);
            let cohorts = DailySets::load(&app.pool, &project, Kind::Cohort, None, range.from, range.to).await?;
            let active = DailySets::load(&app.pool, &project, Kind::Active, None, range.from, last).await?;
            let today = Utc::now().date_naive();
            let mut out = Vec::new();
            for day in activity::days(range.from, range.to) {
                let Some(cohort) = cohorts.day(day).filter(|c| !c.is_empty()) else {
                    continue;
                };
                let size = cohort.len();
                let mut entry = serde_json::json!({"cohort": day, "size": size});
                let named = activity::retained(cohort, day, &active, RETENTION_DAYS, today);
                for (n, users) in RETENTION_DAYS.iter().zip(named) {
                    let rate = users.map(|u| u as f64 / size as f64);
                    entry[format!("d{n}")] = serde_json::json!({"users": users.unwrap_or(0), "rate": rate});
                }
                if let Some(n) = matrix {
                    entry["matrix"] = json(activity::retained(cohort, day, &active, 0..=n, today))?;
                }
                out.push(entry);
            }
            Ok(
                serde_json::json!({"project": project, "from": range.from, "to": range.to,
                                  "days": RETENTION_DAYS, "matrix_days": matrix, "cohorts": out}),
            )
        })
        .await)
}

#[derive(Debug, Deserialize)]
pub struct FunnelRequest {
    steps: Vec<StepRequest>,
    from: Option<String>,
    to: Option<String>,
    /// The conversion window: seconds, or a duration such as `30m`, `2h`, `7d`.
    window: Option<serde_json::Value>,
}

impl FunnelRequest {
    /// The range, the window in seconds and the steps, each validated (422 naming what is wrong).
    pub fn validate(self, max_range_days: i64) -> Result<(Range, i64, Vec<Step>), ApiError> {
        let range = Range::parse(self.from.as_deref(), self.to.as_deref(), max_range_days)?;
        if !(2..=funnel::MAX_STEPS).contains(&self.steps.len()) {
            return Err(ApiError::Unprocessable(format!(
                "`steps` must have 2 to {} steps, not {}",
                funnel::MAX_STEPS,
                self.steps.len()
            )));
        }
        let window = funnel::parse_window(self.window.as_ref())?;
        let steps = self
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::parse(i, s))
            .collect::<Result<_, _>>()?;
        Ok((range, window, steps))
    }
}

/// `POST /v1/funnels` with `{steps, from, to, window}` (crate::funnel has the definition): users
/// per step, conversion from the previous step and from the first, and the median seconds between
/// consecutive steps.
pub async fn funnel(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(request): JsonBody<FunnelRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let (range, window, steps) = request.validate(app.config.max_range_days)?;
    let project = principal.project;
    let key = format!("funnel:{}:{window}:{}", range.key(), json(&steps)?);
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let start = range.from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            let end = range.to.succ_opt().unwrap_or(NaiveDate::MAX).and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            let Some(hits) = funnel::load(&app.pool, &project, &steps, start, end, app.config.funnel_max_events).await? else {
                return Err(ApiError::Unprocessable(format!(
                    "the range holds more than {} events of these steps (API_FUNNEL_MAX_EVENTS); narrow it",
                    app.config.funnel_max_events
                )));
            };
            let mut outcome = funnel::compute(steps.len(), window, hits);
            let reached = &outcome.reached;
            let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
            let mut items = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let mut item = serde_json::json!({
                    "step": i + 1,
                    "event": step.event,
                    "users": reached[i],
                    "conversion_from_previous": if i == 0 { Some(1.0).filter(|_| reached[0] > 0) } else { ratio(reached[i], reached[i - 1]) },
                    "conversion_overall": ratio(reached[i], reached[0]),
                    "median_seconds_from_previous": if i == 0 { None } else { funnel::median_seconds(&mut outcome.gaps[i]) },
                });
                if let Some(course) = &step.course_id {
                    item["course_id"] = json(course)?;
                }
                if !step.properties.is_empty() {
                    item["properties"] = json(&step.properties)?;
                }
                items.push(item);
            }
            let k = steps.len();
            Ok(serde_json::json!({
                "project": project, "from": range.from, "to": range.to, "window_seconds": window,
                "steps": items, "overall_conversion": ratio(reached[k - 1], reached[0]),
            }))
        })
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_calendar_weeks_and_months_clipped_to_the_range() {
        let d = |m: u32, n: u32| NaiveDate::from_ymd_opt(2026, m, n).unwrap();
        // 2026-03-04 is a Wednesday.
        let weeks = buckets(
            Range {
                from: d(3, 4),
                to: d(3, 17),
            },
            Interval::Week,
        );
        assert_eq!(weeks, [(d(3, 4), d(3, 8)), (d(3, 9), d(3, 15)), (d(3, 16), d(3, 17))]);
        let months = buckets(
            Range {
                from: d(1, 30),
                to: d(3, 2),
            },
            Interval::Month,
        );
        assert_eq!(months, [(d(1, 30), d(1, 31)), (d(2, 1), d(2, 28)), (d(3, 1), d(3, 2))]);
        let end = buckets(
            Range {
                from: NaiveDate::MAX,
                to: NaiveDate::MAX,
            },
            Interval::Month,
        );
        assert_eq!(end, [(NaiveDate::MAX, NaiveDate::MAX)]);
    }
}
