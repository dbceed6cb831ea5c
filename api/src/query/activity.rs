//! Exact distinct counts from the workers' activity bitmaps (`activity_bitmaps`,
//! common::bitmap): one roaring bitmap of user ordinals per (project, kind, course, day). A
//! rolling window is the union of its days, a retention cell the intersection of a cohort with a
//! later day; both are exact, and reading a range costs one index range scan of at most
//! `days` small rows whatever the number of events behind them.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use common::bitmap::{self, Kind, RoaringBitmap};

use super::persons::Persons;
use crate::ApiError;

/// The sets of users of one kind (and course) by day, for the days that have any.
#[derive(Debug, Default)]
pub struct DailySets(BTreeMap<NaiveDate, RoaringBitmap>);

impl DailySets {
    /// Reads the sets of `kind` (of `course`, or project-wide when `None`) for `from..=to`, as
    /// sets of persons. Cohorts ([`Kind::Cohort`]) put a person of several ids under the first
    /// active day of its earliest.
    pub async fn load(
        pool: &sqlx::PgPool,
        project: &str,
        persons: &Persons,
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
        let first_days = if kind == Kind::Cohort {
            persons.first_days(pool, project).await?
        } else {
            Default::default()
        };
        let mut sets = BTreeMap::new();
        for (day, bytes) in rows {
            let users = bitmap::decode(&bytes).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("corrupt activity bitmap of {project} on {day}: {e}"))
            })?;
            let users = if kind == Kind::Cohort {
                persons.cohort(day, &users, &first_days)
            } else {
                persons.map(&users)
            };
            sets.insert(day, users);
        }
        Ok(Self(sets))
    }

    /// Keeps only `users` in every day's set.
    pub fn restrict(&mut self, users: &RoaringBitmap) {
        for set in self.0.values_mut() {
            *set &= users;
        }
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
    ///
    /// A union per window per day would cost `days x window` unions (1,110 for DAU/WAU/MAU over
    /// 30 days, most of the route's time). Instead the days are cut into blocks of `window` days,
    /// each day keeps the union from its block's start up to it (`prefix`) and from it to its
    /// block's end (`suffix`), and a window, which spans at most two blocks, is the suffix of its
    /// first day with the prefix of its last: about three unions per day, whatever the window.
    pub fn rolling(&self, from: NaiveDate, to: NaiveDate, windows: &[u64]) -> Vec<(NaiveDate, Vec<u64>)> {
        if from > to {
            return Vec::new();
        }
        let longest = windows.iter().copied().max().unwrap_or(1).max(1);
        let first = from.checked_sub_days(Days::new(longest - 1)).unwrap_or(NaiveDate::MIN);
        let empty = RoaringBitmap::new();
        let daily: Vec<&RoaringBitmap> = days(first, to).map(|d| self.day(d).unwrap_or(&empty)).collect();
        // Index of `from` in `daily`.
        let start = days(first, from).count() - 1;
        let columns: Vec<Vec<u64>> = windows
            .iter()
            .map(|&w| sliding_counts(&daily, usize::try_from(w.max(1)).unwrap_or(usize::MAX), start))
            .collect();
        days(from, to)
            .enumerate()
            .map(|(i, day)| (day, columns.iter().map(|c| c[i]).collect()))
            .collect()
    }
}

/// For each position `i >= start` of `daily`, the distinct users of `daily[i + 1 - window ..= i]`
/// (clipped at 0), by the block decomposition `DailySets::rolling` describes.
fn sliding_counts(daily: &[&RoaringBitmap], window: usize, start: usize) -> Vec<u64> {
    let n = daily.len();
    if window == 1 {
        return daily[start..].iter().map(|s| s.len()).collect();
    }
    let window = window.min(n.max(1));
    let mut prefix: Vec<RoaringBitmap> = Vec::with_capacity(n);
    for (i, set) in daily.iter().enumerate() {
        let union = match prefix.last() {
            Some(previous) if i % window != 0 => previous | *set,
            _ => (*set).clone(),
        };
        prefix.push(union);
    }
    let mut suffix: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); n];
    for i in (0..n).rev() {
        suffix[i] = if i + 1 == n || (i + 1) % window == 0 {
            daily[i].clone()
        } else {
            daily[i] | &suffix[i + 1]
        };
    }
    (start..n)
        .map(|i| match (i + 1).checked_sub(window) {
            // The window reaches before the first day: it is the first block's prefix.
            None => prefix[i].len(),
            Some(first) if first % window == 0 => prefix[i].len(),
            Some(first) => suffix[first].union_len(&prefix[i]),
        })
        .collect()
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

/// The persons who are current members of `group`: a person is when one of its ids joined
/// (workers roll `group` calls up into `group_members`, docs: migrations/0009).
pub async fn group_members(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    group: &str,
) -> Result<RoaringBitmap, ApiError> {
    let ords: Vec<i32> = sqlx::query_scalar(
        "select o.ord from group_members m
           join user_ordinals o on o.project = m.project and o.user_key = m.user_key
          where m.project = $1 and m.group_id = $2",
    )
    .bind(project)
    .bind(group)
    .fetch_all(pool)
    .await?;
    Ok(persons.map(&ords.into_iter().filter_map(|o| u32::try_from(o).ok()).collect()))
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
    fn rolling_windows_agree_with_a_union_per_window() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200 {
            let days_with_sets = rng.usize(0..80);
            let sets = DailySets::from_days((0..days_with_sets).map(|_| {
                let day = d(1) + Days::new(rng.u64(0..90));
                let users: RoaringBitmap = (0..rng.usize(0..50)).map(|_| rng.u32(0..300)).collect();
                (day, users)
            }));
            let from = d(1) + Days::new(rng.u64(0..60));
            let to = from + Days::new(rng.u64(0..40));
            let windows = [1, rng.u64(1..12), 7, 30, rng.u64(1..100)];
            let expected: Vec<(NaiveDate, Vec<u64>)> = days(from, to)
                .map(|day| {
                    let counts = windows
                        .iter()
                        .map(|&w| sets.union(day - Days::new(w - 1), day).len())
                        .collect();
                    (day, counts)
                })
                .collect();
            assert_eq!(
                sets.rolling(from, to, &windows),
                expected,
                "round {round}, windows {windows:?}"
            );
        }
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
