//! Exact distinct counts from the workers' activity bitmaps (`activity_bitmaps`,
//! common::bitmap): one roaring bitmap of user ordinals per (project, kind, course, day). A
//! rolling window is the union of its days, a retention cell the intersection of a cohort with a
//! later day; both are exact, and reading a range costs one index range scan of at most
//! `days` small rows whatever the number of events behind them.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use common::bitmap::{self, Kind, RoaringBitmap};

use crate::ApiError;

/// The sets of users of one kind (and course) by day, for the days that have any.
#[derive(Debug, Default)]
pub struct DailySets(BTreeMap<NaiveDate, RoaringBitmap>);

impl DailySets {
    /// Reads the sets of `kind` (of `course`, or project-wide when `None`) for `from..=to`.
    pub async fn load(
        pool: &sqlx::PgPool,
        project: &str,
        kind: Kind,
        course: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Self, ApiError> {
        let rows: Vec<(NaiveDate, Vec<u8>)> = sqlx::query_as(
            "select day, users from activity_bitmaps
              where project = $1 and kind = $2 and course_id = $3 and day between $4 and $5",
        )
        .bind(project)
        .bind(kind.code())
        .bind(course.unwrap_or(""))
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        let mut sets = BTreeMap::new();
        for (day, bytes) in rows {
            let users = bitmap::decode(&bytes).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("corrupt activity bitmap of {project} on {day}: {e}"))
            })?;
            sets.insert(day, users);
        }
        Ok(Self(sets))
    }

    #[cfg(test)]
    pub fn from_days(days: impl IntoIterator<Item = (NaiveDate, RoaringBitmap)>) -> Self {
        Self(days.into_iter().collect())
    }

    /// The users of `day` (none when the day has no row).
    pub fn day(&self, day: NaiveDate) -> Option<&RoaringBitmap> {
        self.0.get(&day)
    }

    /// How many users `day` has.
    pub fn count(&self, day: NaiveDate) -> u64 {
        self.day(day).map_or(0, RoaringBitmap::len)
    }

    /// The users of any day of `from..=to`.
    pub fn union(&self, from: NaiveDate, to: NaiveDate) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        if from <= to {
            for users in self.0.range(from..=to).map(|(_, users)| users) {
                all |= users;
            }
        }
        all
    }

    /// For each day of `from..=to`, the distinct users of each trailing window of `windows` days
    /// ending on it (a window of 1 is the day itself): DAU, WAU and MAU are windows 1, 7 and 30.
    pub fn rolling(&self, from: NaiveDate, to: NaiveDate, windows: &[u64]) -> Vec<(NaiveDate, Vec<u64>)> {
        days(from, to)
            .map(|day| {
                let counts = windows
                    .iter()
                    .map(|w| match w {
                        0 | 1 => self.count(day),
                        w => self
                            .union(day.checked_sub_days(Days::new(w - 1)).unwrap_or(NaiveDate::MIN), day)
                            .len(),
                    })
                    .collect();
                (day, counts)
            })
            .collect()
    }
}

/// Every day of `from..=to`, in order.
pub fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

/// The retention of one cohort: of `cohort` (the users whose first active day is `day`), how many
/// were active on each day `day + n` for `n` in `offsets` (`None` where that day is after
/// `today`: not yet observable).
pub fn retained(
    cohort: &RoaringBitmap,
    day: NaiveDate,
    active: &DailySets,
    offsets: impl IntoIterator<Item = u64>,
    today: NaiveDate,
) -> Vec<Option<u64>> {
    offsets
        .into_iter()
        .map(|n| {
            let later = day.checked_add_days(Days::new(n))?;
            (later <= today).then(|| active.day(later).map_or(0, |users| cohort.intersection_len(users)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, n).unwrap()
    }

    fn set(users: &[u32]) -> RoaringBitmap {
        users.iter().copied().collect()
    }

    #[test]
    fn rolling_windows_count_each_user_once_per_window() {
        let sets = DailySets::from_days([
            (d(1), set(&[0, 1])),
            (d(2), set(&[0])),
            (d(8), set(&[2])),
            (d(9), set(&[0])),
        ]);
        let series: Vec<Vec<u64>> = sets
            .rolling(d(2), d(9), &[1, 7, 30])
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(
            series,
            [
                vec![1, 2, 2],
                vec![0, 2, 2],
                vec![0, 2, 2],
                vec![0, 2, 2],
                vec![0, 2, 2],
                vec![0, 2, 2],
                vec![1, 2, 3],
                vec![1, 2, 3],
            ]
        );
    }

    #[test]
    fn windows_near_the_first_representable_day_do_not_overflow() {
        let sets = DailySets::default();
        assert_eq!(
            sets.rolling(NaiveDate::MIN, NaiveDate::MIN, &[30]),
            [(NaiveDate::MIN, vec![0])]
        );
    }

    #[test]
    fn retention_intersects_the_cohort_with_later_days_and_hides_the_future() {
        let active = DailySets::from_days([(d(2), set(&[0, 5])), (d(8), set(&[1]))]);
        let cohort = set(&[0, 1, 2]);
        assert_eq!(
            retained(&cohort, d(1), &active, [0, 1, 7, 30], d(10)),
            [Some(0), Some(1), Some(1), None]
        );
        assert_eq!(retained(&cohort, NaiveDate::MAX, &active, [1], NaiveDate::MAX), [None]);
    }
}
