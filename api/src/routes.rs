//! Routes of the read API. Every handler is given the project its credentials read, so no query
//! can reach another project's rows.

use axum::{
    extract::{FromRequestParts, Query, State},
    http::{header, request::Parts},
    routing::get,
    Json, Router,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{ApiError, App};

pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/metrics/active-users", get(active_users))
        .route_layer(axum::middleware::from_fn(crate::instruments::record))
        .with_state(app)
}

/// The project the request's credentials may read.
struct Project(String);

impl FromRequestParts<App> for Project {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let expected = app.config.read_key.as_bytes();
        let equal =
            token.len() == expected.len() && token.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if equal {
            Ok(Project(app.config.project.clone()))
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Interval {
    Day,
    Week,
    Month,
}

/// A validated, inclusive range of UTC days.
struct Range {
    from: NaiveDate,
    to: NaiveDate,
}

impl Range {
    fn parse(from: Option<&str>, to: Option<&str>, max_days: i64) -> Result<Self, ApiError> {
        let date = |name: &str, value: Option<&str>| -> Result<NaiveDate, ApiError> {
            let value = value.ok_or_else(|| ApiError::Unprocessable(format!("`{name}` is required (YYYY-MM-DD)")))?;
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map_err(|_| ApiError::Unprocessable(format!("`{name}` must be a date as YYYY-MM-DD, not {value:?}")))
        };
        let (from, to) = (date("from", from)?, date("to", to)?);
        if from > to {
            return Err(ApiError::Unprocessable(format!("`from` ({from}) is after `to` ({to})")));
        }
        let days = (to - from).num_days() + 1;
        if days > max_days {
            return Err(ApiError::Unprocessable(format!(
                "the range has {days} days; at most {max_days} are allowed"
            )));
        }
        Ok(Self { from, to })
    }
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

/// `GET /v1/metrics/active-users?from&to&interval=day|week|month`.
async fn active_users(
    State(app): State<App>,
    Project(project): Project,
    Query(query): Query<RangeQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let series = if interval == Interval::Day {
        let rows: Vec<DailyActive> = sqlx::query_as(
            "select d.day::date as date,
                    (select count(*) from daily_active_users a
                      where a.project = $1 and a.day = d.day::date) as dau,
                    (select count(distinct user_key) from daily_active_users a
                      where a.project = $1 and a.day between d.day::date - 6 and d.day::date) as wau,
                    (select count(distinct user_key) from daily_active_users a
                      where a.project = $1 and a.day between d.day::date - 29 and d.day::date) as mau
               from generate_series($2::date, $3::date, interval '1 day') as d(day)
              order by 1",
        )
        .bind(&project)
        .bind(range.from)
        .bind(range.to)
        .fetch_all(&app.pool)
        .await?;
        serde_json::to_value(rows).map_err(anyhow::Error::from)?
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
        serde_json::to_value(rows).map_err(anyhow::Error::from)?
    };
    Ok(Json(serde_json::json!({
        "project": project,
        "from": range.from,
        "to": range.to,
        "interval": interval,
        "series": series,
    })))
}
