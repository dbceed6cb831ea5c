//! Project-wide metrics (admins and read keys): active users, top events and pages, retention.
//! Each handler reads its parameters, names its cache key and answers what `crate::query::metrics`
//! computes; the funnel, which takes a body, is `super::funnel`.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;

use crate::{
    auth::Principal,
    query::metrics::{self, Interval, Top, MAX_MATRIX_DAYS, RETENTION_DAYS},
    routes::{
        access::Admin,
        answer::cached,
        extract::{bounded, GroupFilter, Range, RangeQuery},
    },
    ApiError, App,
};

/// `GET /v1/metrics/active-users?from&to&interval=day|week|month`: with `day`, DAU, WAU and MAU
/// (distinct users in the 1, 7 and 30 days ending on each day); with `week` or `month`, the
/// distinct users of each calendar bucket clipped to the range. Exact: unions of the daily
/// activity bitmaps. With `group`, only the group's current members count.
pub async fn active_users(
    State(app): State<App>,
    Admin(principal): Admin,
    range: Range,
    Query(query): Query<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let interval = query.interval.as_deref().unwrap_or("day");
    let interval = Interval::parse(interval)
        .ok_or_else(|| ApiError::Unprocessable(format!("`interval` must be day, week or month, not {interval:?}")))?;
    let group = GroupFilter::parse(&query)?;
    let key = format!("active-users:{}:{interval:?}:{}", range.key(), group.key());
    let project = &principal.project;
    Ok(cached(&app, &principal, &headers, key, async {
        let persons = app.persons(project).await?;
        let series = metrics::active_users(&app.pool, project, &persons, range.days(), interval, group.get()).await?;
        Ok(serde_json::json!({
            "project": project, "group": group.get(), "from": range.from, "to": range.to,
            "interval": interval, "series": series,
        }))
    })
    .await)
}

/// `GET /v1/metrics/events/top?from&to&limit[&group]`: events by name over the range, most first.
pub async fn top_events(
    State(app): State<App>,
    Admin(principal): Admin,
    range: Range,
    Query(query): Query<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    top(app, principal, range, query, headers, Top::Events).await
}

/// `GET /v1/metrics/pages/top?from&to&limit[&group]`: page views by path over the range, most first.
pub async fn top_pages(
    State(app): State<App>,
    Admin(principal): Admin,
    range: Range,
    Query(query): Query<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    top(app, principal, range, query, headers, Top::Pages).await
}

/// Both top lists: `limit` (1-100, default 10) names with their counts.
async fn top(
    app: App,
    principal: Principal,
    range: Range,
    query: RangeQuery,
    headers: HeaderMap,
    top: Top,
) -> Result<Response, ApiError> {
    let limit = bounded("limit", query.limit.as_deref(), 10, 1, 100)?;
    let group = GroupFilter::parse(&query)?;
    let key = format!("top:{}:{}:{limit}:{}", top.table(), range.key(), group.key());
    let project = &principal.project;
    Ok(cached(&app, &principal, &headers, key, async {
        let persons = app.persons(project).await?;
        let rows = metrics::top(&app.pool, (project, &persons), top, range.days(), group.get(), limit).await?;
        let items: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(name, count)| serde_json::json!({top.name(): name, top.count(): count}))
            .collect();
        Ok(serde_json::json!({
            "project": project, "group": group.get(), "from": range.from, "to": range.to, "items": items,
        }))
    })
    .await)
}

/// Retention's query string: its own, not [`RangeQuery`], so that it refuses (400) a repeated
/// `matrix` and nothing it does not read, as it always has; hence the range is parsed here.
#[derive(Debug, Deserialize)]
pub struct RetentionQuery {
    from: Option<String>,
    to: Option<String>,
    matrix: Option<String>,
    group: Option<String>,
}

/// `GET /v1/retention?from&to[&matrix=N][&group=G]`: cohorts by first active day within the range; day-N
/// retention is the share of the cohort active on exactly day cohort+N (null while that day is in
/// the future). With `matrix=N`, each cohort also has the users active on each day 0..=N.
/// Exact: the cohort bitmap intersected with each later day's activity bitmap. With `group`, the
/// cohorts hold its current members only.
pub async fn retention(
    State(app): State<App>,
    Admin(principal): Admin,
    Query(query): Query<RetentionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let matrix = match query.matrix.as_deref() {
        None => None,
        Some(value) => Some(bounded("matrix", Some(value), 0, 1, MAX_MATRIX_DAYS)? as u64),
    };
    let group = GroupFilter::parse(&RangeQuery {
        group: query.group,
        ..RangeQuery::default()
    })?;
    let key = format!("retention:{}:{matrix:?}:{}", range.key(), group.key());
    let project = &principal.project;
    Ok(cached(&app, &principal, &headers, key, async {
        let persons = app.persons(project).await?;
        let cohorts = metrics::retention(&app.pool, project, &persons, range.days(), matrix, group.get()).await?;
        Ok(serde_json::json!({
            "project": project, "group": group.get(), "from": range.from, "to": range.to,
            "days": RETENTION_DAYS, "matrix_days": matrix, "cohorts": cohorts,
        }))
    })
    .await)
}
