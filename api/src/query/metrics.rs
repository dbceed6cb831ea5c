//! Project-wide metrics: active users and retention from the activity bitmaps
//! ([`super::activity`]), top events and pages from the daily counters. Each reads a range of days
//! once and leaves the arithmetic (rolling windows, calendar buckets, cohort cells) to pure
//! functions tested below.

use chrono::{Datelike as _, Days, NaiveDate, Utc};
use common::bitmap::Kind;
use serde::{ser::SerializeMap as _, Serialize, Serializer};

use super::persons::Persons;
use crate::{
    query::activity::{self, DailySets},
    ApiError,
};

/// How active users are grouped: rolling windows ending on each day, or calendar buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Week,
    Month,
}

impl Interval {
    /// `day`, `week` or `month`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }
}

/// The longest rolling window (MAU): the days before `from` whose users count.
const MONTH_DAYS: u64 = 30;

/// One day's distinct users over the 1, 7 and 30 days ending on it.
#[derive(Debug, PartialEq, Serialize)]
pub struct Rolling {
    pub date: NaiveDate,
    pub dau: u64,
    pub wau: u64,
    pub mau: u64,
}

/// The distinct users of one calendar week or month (clipped to the range), by its first day.
#[derive(Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub start: NaiveDate,
    pub active_users: u64,
}

/// Active users by day (`interval=day`) or by calendar bucket.
#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Series {
    Rolling(Vec<Rolling>),
    Buckets(Vec<Bucket>),
}

/// The active users of `from..=to` by `interval`; with `group`, only its current members count.
/// Exact: unions of the daily activity bitmaps, read from 29 days before `from` for the MAU.
pub async fn active_users(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    (from, to): (NaiveDate, NaiveDate),
    interval: Interval,
    group: Option<&str>,
) -> Result<Series, ApiError> {
    let first = from
        .checked_sub_days(Days::new(MONTH_DAYS - 1))
        .unwrap_or(NaiveDate::MIN);
    let mut sets = DailySets::load(pool, project, persons, Kind::Active, None, first, to).await?;
    if let Some(group) = group {
        sets.restrict(&activity::group_members(pool, project, persons, group).await?);
    }
    Ok(series(&sets, from, to, interval))
}

/// The series of `from..=to` over the daily sets (which must reach 29 days before `from`).
pub fn series(sets: &DailySets, from: NaiveDate, to: NaiveDate, interval: Interval) -> Series {
    if interval == Interval::Day {
        let rows = sets
            .rolling(from, to, &[1, 7, MONTH_DAYS])
            .into_iter()
            .map(|(date, c)| Rolling {
                date,
                dau: c[0],
                wau: c[1],
                mau: c[2],
            });
        Series::Rolling(rows.collect())
    } else {
        let rows = buckets(from, to, interval).into_iter().map(|(start, end)| Bucket {
            start,
            active_users: sets.union(start, end).len(),
        });
        Series::Buckets(rows.collect())
    }
}

/// The calendar weeks (ISO, from Monday) or months of `from..=to`, each clipped to it.
pub fn buckets(from: NaiveDate, to: NaiveDate, interval: Interval) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let next = match interval {
            Interval::Week => start
                .week(chrono::Weekday::Mon)
                .last_day()
                .checked_add_days(Days::new(1)),
            _ => start
                .with_day(1)
                .and_then(|d| d.checked_add_months(chrono::Months::new(1))),
        };
        let end = next.and_then(|n| n.pred_opt()).unwrap_or(NaiveDate::MAX).min(to);
        out.push((start, end));
        match end.succ_opt() {
            Some(after) => start = after,
            None => break,
        }
    }
    out
}

/// The daily counters a top list sums: events by name, or page views by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    Events,
    Pages,
}

impl Top {
    /// The rollup table, which is also the list's name in cache keys.
    pub fn table(self) -> &'static str {
        match self {
            Top::Events => "daily_event_counts",
            Top::Pages => "daily_page_views",
        }
    }

    /// The column (and answer field) of what is counted.
    pub fn name(self) -> &'static str {
        match self {
            Top::Events => "event",
            Top::Pages => "page",
        }
    }

    /// The column (and answer field) of the count.
    pub fn count(self) -> &'static str {
        match self {
            Top::Events => "events",
            Top::Pages => "views",
        }
    }
}

/// The `limit` most counted names of `top` over `from..=to`, most first, ties by name; with
/// `group`, of the events of its current members only.
pub async fn top(
    pool: &sqlx::PgPool,
    (project, persons): (&str, &Persons),
    top: Top,
    (from, to): (NaiveDate, NaiveDate),
    group: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, i64)>, ApiError> {
    let (table, name, count) = (top.table(), top.name(), top.count());
    if let Some(group) = group {
        // The rollups count everyone together: the members' events come from the ledger's
        // counted events (`event_chunks`), by the workers' definitions (a page view's `page` is
        // a string property; the ledger keeps strings of at most 1,024 bytes).
        let members = activity::group_members(pool, project, persons, group).await?;
        let ids: Vec<i32> = persons
            .expand(&members)
            .iter()
            .filter_map(|o| i32::try_from(o).ok())
            .collect();
        let (what, only) = match top {
            Top::Events => ("c.event", ""),
            Top::Pages => (
                "e.props::jsonb ->> 'page'",
                " and c.event = 'page_view' and jsonb_typeof(e.props::jsonb -> 'page') = 'string'",
            ),
        };
        return Ok(sqlx::query_as(&format!(
            "select {what} as {name}, count(*) as n
               from event_chunks c, unnest(c.users, c.props) e(user_ord, props)
              where c.project = $1 and c.day between $2 and $3{only}
                and e.user_ord in (select unnest($4::int4[]))
              group by 1 order by n desc, 1 limit $5"
        ))
        .bind(project)
        .bind(from)
        .bind(to)
        .bind(&ids)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    }
    Ok(sqlx::query_as(&format!(
        "select {name}, sum({count})::bigint as n from {table}
          where project = $1 and day between $2 and $3
          group by {name} order by n desc, {name} limit $4"
    ))
    .bind(project)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The days after the first active day that retention reports by name.
pub const RETENTION_DAYS: [u64; 3] = [1, 7, 30];
/// The widest N-day retention matrix (`matrix=N`: days 0..=N of each cohort).
pub const MAX_MATRIX_DAYS: i64 = 90;

/// The users whose first active day is `day`, and how many of them came back.
#[derive(Debug, PartialEq)]
pub struct Cohort {
    pub day: NaiveDate,
    pub size: u64,
    /// Active on day `day + n` for each `n` of [`RETENTION_DAYS`] (`None`: that day is still to
    /// come).
    pub retained: Vec<Option<u64>>,
    /// Active on each day `day + 0..=N` of a requested matrix.
    pub matrix: Option<Vec<Option<u64>>>,
}

/// `{cohort, size, d1, d7, d30, matrix?}`, each `dN` as `{users, rate}` (rate null while day N is
/// to come).
impl Serialize for Cohort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Cell {
            users: u64,
            rate: Option<f64>,
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("cohort", &self.day)?;
        map.serialize_entry("size", &self.size)?;
        for (n, users) in RETENTION_DAYS.iter().zip(&self.retained) {
            let cell = Cell {
                users: users.unwrap_or(0),
                rate: users.map(|u| u as f64 / self.size as f64),
            };
            map.serialize_entry(&format!("d{n}"), &cell)?;
        }
        if let Some(matrix) = &self.matrix {
            map.serialize_entry("matrix", matrix)?;
        }
        map.end()
    }
}

/// The cohorts of each first active day of `from..=to`, with the matrix of `matrix` days when
/// asked. Exact: each cohort's bitmap intersected with each later day's activity bitmap.
pub async fn retention(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    (from, to): (NaiveDate, NaiveDate),
    matrix: Option<u64>,
    group: Option<&str>,
) -> Result<Vec<Cohort>, ApiError> {
    let reach = RETENTION_DAYS[2].max(matrix.unwrap_or(0));
    let last = to.checked_add_days(Days::new(reach)).unwrap_or(NaiveDate::MAX);
    let mut firsts = DailySets::load(pool, project, persons, Kind::Cohort, None, from, to).await?;
    if let Some(group) = group {
        // A member's cohort is their first active day ever, as everyone's.
        firsts.restrict(&activity::group_members(pool, project, persons, group).await?);
    }
    let active = DailySets::load(pool, project, persons, Kind::Active, None, from, last).await?;
    Ok(cohorts(&firsts, &active, (from, to), matrix, Utc::now().date_naive()))
}

/// The non-empty cohorts of `firsts` (users by first active day) in `from..=to`, against `active`
/// (users by active day, reaching far enough after `to`), as seen on `today`.
pub fn cohorts(
    firsts: &DailySets,
    active: &DailySets,
    (from, to): (NaiveDate, NaiveDate),
    matrix: Option<u64>,
    today: NaiveDate,
) -> Vec<Cohort> {
    activity::days(from, to)
        .filter_map(|day| {
            let cohort = firsts.day(day).filter(|c| !c.is_empty())?;
            Some(Cohort {
                day,
                size: cohort.len(),
                retained: activity::retained(cohort, day, active, RETENTION_DAYS, today),
                matrix: matrix.map(|n| activity::retained(cohort, day, active, 0..=n, today)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use common::bitmap::RoaringBitmap;

    use super::*;

    fn d(m: u32, n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, n).unwrap()
    }

    fn set(users: &[u32]) -> RoaringBitmap {
        users.iter().copied().collect()
    }

    #[test]
    fn buckets_are_calendar_weeks_and_months_clipped_to_the_range() {
        // 2026-03-04 is a Wednesday.
        let weeks = buckets(d(3, 4), d(3, 17), Interval::Week);
        assert_eq!(weeks, [(d(3, 4), d(3, 8)), (d(3, 9), d(3, 15)), (d(3, 16), d(3, 17))]);
        let months = buckets(d(1, 30), d(3, 2), Interval::Month);
        assert_eq!(months, [(d(1, 30), d(1, 31)), (d(2, 1), d(2, 28)), (d(3, 1), d(3, 2))]);
        let end = buckets(NaiveDate::MAX, NaiveDate::MAX, Interval::Month);
        assert_eq!(end, [(NaiveDate::MAX, NaiveDate::MAX)]);
    }

    #[test]
    fn daily_active_users_count_the_days_before_the_range_and_buckets_do_not() {
        let sets = DailySets::from_days([(d(2, 20), set(&[9])), (d(3, 1), set(&[1, 2])), (d(3, 2), set(&[2, 3]))]);
        assert_eq!(
            series(&sets, d(3, 1), d(3, 2), Interval::Day),
            Series::Rolling(vec![
                Rolling {
                    date: d(3, 1),
                    dau: 2,
                    wau: 2,
                    mau: 3
                },
                Rolling {
                    date: d(3, 2),
                    dau: 2,
                    wau: 3,
                    mau: 4
                },
            ])
        );
        assert_eq!(
            series(&sets, d(2, 28), d(3, 2), Interval::Month),
            Series::Buckets(vec![
                Bucket {
                    start: d(2, 28),
                    active_users: 0
                },
                Bucket {
                    start: d(3, 1),
                    active_users: 3
                },
            ])
        );
        // The answer's rows, as clients read them.
        assert_eq!(
            serde_json::to_value(series(&sets, d(3, 2), d(3, 2), Interval::Week)).unwrap(),
            serde_json::json!([{"start": "2026-03-02", "active_users": 2}])
        );
    }

    #[test]
    fn cohorts_skip_empty_days_and_report_rates_of_their_size() {
        let firsts = DailySets::from_days([(d(3, 1), set(&[1, 2, 3, 4])), (d(3, 2), set(&[]))]);
        let active = DailySets::from_days([(d(3, 2), set(&[1, 2, 7])), (d(3, 8), set(&[3]))]);
        let cohorts = cohorts(&firsts, &active, (d(3, 1), d(3, 3)), Some(2), d(3, 20));
        assert_eq!(
            cohorts,
            [Cohort {
                day: d(3, 1),
                size: 4,
                retained: vec![Some(2), Some(1), None],
                matrix: Some(vec![Some(0), Some(2), Some(0)]),
            }]
        );
        assert_eq!(
            serde_json::to_value(&cohorts[0]).unwrap(),
            serde_json::json!({
                "cohort": "2026-03-01", "size": 4,
                "d1": {"users": 2, "rate": 0.5}, "d7": {"users": 1, "rate": 0.25},
                "d30": {"users": 0, "rate": null}, "matrix": [0, 2, 0],
            })
        );
    }
}
