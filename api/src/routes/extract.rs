//! The request's parameters, parsed at the edge into the types the routes take: a range of days
//! ([`Range`]) and a page of a list ([`Page`]) as axum extractors, the validators behind them
//! (dates, bounded integers, path ids) and a JSON body whose refusals look like every other one.
//! Every refusal is a 422 `invalid_query` naming the parameter and what is wrong.
//!
//! The read routes share one query string, [`RangeQuery`]: each extractor reads it whole (a
//! repeated parameter is axum's 400, whichever extractor meets it) and takes its fields from it.
//! The extractors that read the query come after the ones that authorise (`super::access`), so a
//! caller who may not read a route learns that (403) before what is wrong with the query (422).

use axum::{
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::request::Parts,
    response::{IntoResponse as _, Response},
};
use chrono::{Datelike as _, NaiveDate};
use serde::Deserialize;

use crate::{ApiError, App};

/// The query string of the read routes.
#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub interval: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    /// Only the current members of this group (Segment `group` calls): [`GroupFilter`].
    pub group: Option<String>,
    /// The instructor metrics' parameters ([`super::instructor`]).
    pub rules: Option<String>,
    pub inactive_days: Option<String>,
    pub behind_points: Option<String>,
    pub failed_in_row: Option<String>,
    pub pass_mark: Option<String>,
    pub buckets: Option<String>,
    pub course_id: Option<String>,
}

impl RangeQuery {
    /// The request's query string, or axum's own refusal of it.
    pub async fn of(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        match Query::<Self>::from_request_parts(parts, app).await {
            Ok(Query(query)) => Ok(query),
            Err(rejection) => Err(rejection.into_response()),
        }
    }
}

/// A validated, inclusive range of UTC days (`?from&to`), at most `API_MAX_RANGE_DAYS` long.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Range {
    pub fn parse(from: Option<&str>, to: Option<&str>, max_days: i64) -> Result<Self, ApiError> {
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

    /// The normalised form used in cache keys.
    pub fn key(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }

    /// The first and last day, as the query functions take them.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        (self.from, self.to)
    }
}

impl FromRequestParts<App> for Range {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let query = RangeQuery::of(parts, app).await?;
        Self::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days).map_err(|e| e.response())
    }
}

pub fn date(name: &str, value: Option<&str>) -> Result<NaiveDate, ApiError> {
    let value = value.ok_or_else(|| ApiError::Unprocessable(format!("`{name}` is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        // Events are dated from ingest's time floor (INGEST_TIME_FLOOR, 2000-01-01 by default, which
        // backfills may lower), and day arithmetic stays in range.
        .filter(|d| (1970..=9999).contains(&d.year()))
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "`{name}` must be a date from 1970-01-01 to 9999-12-31 as YYYY-MM-DD, not {value:?}"
            ))
        })
}

/// An integer query parameter within `min..=max`, `default` when absent.
pub fn bounded(name: &str, value: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    let Some(value) = value else { return Ok(default) };
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::Unprocessable(format!(
            "`{name}` must be an integer from {min} to {max}, not {value:?}"
        ))),
    }
}

/// A number query parameter within `min..=max`, `default` when absent.
pub fn number(name: &str, value: Option<&str>, default: f64, min: f64, max: f64) -> Result<f64, ApiError> {
    let Some(value) = value else { return Ok(default) };
    match value.parse::<f64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::Unprocessable(format!(
            "`{name}` must be a number from {min} to {max}, not {value:?}"
        ))),
    }
}

/// A page of a list: `limit` (1–500, default 50) items from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn parse(query: &RangeQuery) -> Result<Self, ApiError> {
        Ok(Self {
            limit: bounded("limit", query.limit.as_deref(), 50, 1, 500)?,
            offset: bounded("offset", query.offset.as_deref(), 0, 0, i64::from(i32::MAX))?,
        })
    }

    /// The normalised form used in cache keys.
    pub fn key(&self) -> String {
        format!("{}:{}", self.limit, self.offset)
    }

    /// `(limit, offset)`, as the query functions take them.
    pub fn window(&self) -> (i64, i64) {
        (self.limit, self.offset)
    }

    /// The page's envelope: items, total and the next offset (null on the last page).
    pub fn envelope(&self, items: serde_json::Value, total: i64) -> serde_json::Value {
        let next = (self.offset + self.limit < total).then_some(self.offset + self.limit);
        serde_json::json!({"items": items, "total": total, "limit": self.limit, "offset": self.offset, "next_offset": next})
    }
}

impl FromRequestParts<App> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Self::parse(&RangeQuery::of(parts, app).await?).map_err(|e| e.response())
    }
}

/// `?group=G`: restrict a metric to the current members of group G (docs/contract.md §6 "Group
/// traits and memberships"); absent or empty: everyone. G is checked like a path id.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter(pub Option<String>);

impl GroupFilter {
    pub fn parse(query: &RangeQuery) -> Result<Self, ApiError> {
        let group = query.group.clone().filter(|g| !g.is_empty());
        if let Some(group) = &group {
            path_id("group", group)?;
        }
        Ok(Self(group))
    }

    /// The group, as the query functions take it.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The normalised form used in cache keys (empty for everyone).
    pub fn key(&self) -> &str {
        self.get().unwrap_or("")
    }
}

impl FromRequestParts<App> for GroupFilter {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Self::parse(&RangeQuery::of(parts, app).await?).map_err(|e| e.response())
    }
}

/// An id from the path: 1 to 256 bytes, no control characters (ingest accepts no others).
pub fn path_id(name: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::Unprocessable(format!("`{name}` must have 1 to 256 bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "`{name}` must not contain control characters (such as NUL)"
        )));
    }
    Ok(())
}

/// A JSON request body whose rejections (not JSON, wrong shape) are `{"error","detail"}` 422s
/// like every other invalid request.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::Unprocessable(rejection.body_text())),
        }
    }
}
