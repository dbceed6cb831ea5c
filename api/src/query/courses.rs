//! Courses: the catalog with each course's enrolments to date, a course's daily analytics, its
//! learners' progress, and the api's own catalog write. Progress rows are shared with the
//! learner's own endpoints ([`super::users`]), which read the same [`PROGRESS_SELECT`].

use chrono::{DateTime, NaiveDate, Utc};
use common::bitmap::{Kind, RoaringBitmap};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::persons::Persons;
use crate::{
    query::{
        activity::{self, DailySets},
        ratio,
    },
    ApiError,
};

/// One learner's progress in one course (docs/contract.md §6 "Course progress").
#[derive(Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Progress {
    pub course_id: String,
    pub user_id: String,
    pub title: Option<String>,
    /// Distinct lessons completed.
    pub lessons_completed: i64,
    /// The catalog's lesson count; null while unknown.
    pub total_lessons: Option<i32>,
    /// lessons_completed ÷ total_lessons × 100; null while the total is unknown.
    #[sqlx(skip)]
    pub progress_pct: Option<f64>,
    /// enrolled | in_progress (a lesson started or completed) | completed.
    #[sqlx(skip)]
    pub status: &'static str,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_accessed_at: DateTime<Utc>,
    #[serde(skip)]
    pub lessons_touched: i64,
}

impl Progress {
    /// Fills in what is derived from the row: the percentage and the status.
    fn finish(mut self) -> Self {
        self.progress_pct = self
            .total_lessons
            .filter(|t| *t > 0)
            .map(|t| self.lessons_completed as f64 / f64::from(t) * 100.0);
        self.status = if self.completed_at.is_some() {
            "completed"
        } else if self.lessons_touched > 0 {
            "in_progress"
        } else {
            "enrolled"
        };
        self
    }
}

/// The learners of a course are those who enrolled in it, completed it or worked on one of its
/// lessons (someone who only viewed its page is a viewer, not a learner).
const PROGRESS_SELECT: &str = "
    select e.course_id, e.user_key as user_id, c.title, coalesce(lp.done, 0) as lessons_completed,
           c.total_lessons, e.enrolled_at, e.completed_at, e.last_accessed_at,
           coalesce(lp.touched, 0) as lessons_touched
      from enrollments e
      left join course_catalog c on c.project = e.project and c.course_id = e.course_id
      left join lateral (
          select count(*) filter (where l.completed_at is not null) as done, count(*) as touched
            from lesson_progress l
           where l.project = e.project and l.user_key = e.user_key and l.course_id = e.course_id) lp on true
     where e.project = $1
       and (e.enrolled_at is not null or e.completed_at is not null or coalesce(lp.touched, 0) > 0)";

/// Every course of one learner, by course id.
pub async fn user_progress(pool: &sqlx::PgPool, project: &str, user: &str) -> Result<Vec<Progress>, ApiError> {
    let rows: Vec<Progress> = sqlx::query_as(&format!("{PROGRESS_SELECT} and e.user_key = $2 order by e.course_id"))
        .bind(project)
        .bind(user)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Progress::finish).collect())
}

/// `and <user key column> is an id of a member, one of the ordinals bound as ${param}` (everyone
/// when it is null), over `user_ordinals` of the project bound as $1.
fn member_of(column: &str, param: usize) -> String {
    format!(
        " and (${param}::int4[] is null or {column} in \
           (select o.user_key from user_ordinals o where o.project = $1 and o.ord in (select unnest(${param}::int4[]))))"
    )
}

/// Every id (as ordinals) of the persons who are current members of `group`: rows kept by id
/// (enrolments, the ledger's events) belong to the group when their id's person does.
async fn member_ids(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    group: Option<&str>,
) -> Result<Option<Vec<i32>>, ApiError> {
    let Some(group) = group else { return Ok(None) };
    let members = activity::group_members(pool, project, persons, group).await?;
    Ok(Some(
        persons
            .expand(&members)
            .iter()
            .filter_map(|o| i32::try_from(o).ok())
            .collect(),
    ))
}

/// A page of `course`'s learners by user id (of `group`'s current members only, when given), and
/// how many there are in all.
pub async fn learners(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    course: &str,
    group: Option<&str>,
    (limit, offset): (i64, i64),
) -> Result<(Vec<Progress>, i64), ApiError> {
    let members = member_ids(pool, project, persons, group).await?;
    let rows: Vec<Progress> = sqlx::query_as(&format!(
        "{PROGRESS_SELECT} and e.course_id = $2{} order by e.user_key limit $3 offset $4",
        member_of("e.user_key", 5)
    ))
    .bind(project)
    .bind(course)
    .bind(limit)
    .bind(offset)
    .bind(&members)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "select count(*) from ({PROGRESS_SELECT} and e.course_id = $2{}) as learners",
        member_of("e.user_key", 3)
    ))
    .bind(project)
    .bind(course)
    .bind(&members)
    .fetch_one(pool)
    .await?;
    Ok((rows.into_iter().map(Progress::finish).collect(), total))
}

/// One course of the catalog list, with its enrolments and completions to date.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CourseRow {
    pub course_id: String,
    pub title: Option<String>,
    pub total_lessons: Option<i32>,
    pub instructor_id: Option<String>,
    pub enrolled: i64,
    pub completed: i64,
    #[sqlx(skip)]
    pub completion_rate: Option<f64>,
}

/// A page of the courses (the catalog's, and every course with learners) by course id, only those
/// of `only` when given, and how many there are in all.
pub async fn list(
    pool: &sqlx::PgPool,
    project: &str,
    only: Option<&[String]>,
    (limit, offset): (i64, i64),
) -> Result<(Vec<CourseRow>, i64), ApiError> {
    // course_totals (migrations/0006) holds the counts, kept by the rollup's own writes.
    let ids = "with ids as (
            select course_id from course_catalog where project = $1
            union select course_id from course_totals where project = $1 and learners > 0)";
    let rows: Vec<CourseRow> = sqlx::query_as(&format!(
        "{ids}
         select i.course_id, c.title, c.total_lessons, c.instructor_id,
                coalesce(t.enrolled, 0) as enrolled, coalesce(t.completed, 0) as completed
           from ids i
           left join course_catalog c on c.project = $1 and c.course_id = i.course_id
           left join course_totals t on t.project = $1 and t.course_id = i.course_id
          where $4::text[] is null or i.course_id = any($4)
          order by i.course_id limit $2 offset $3"
    ))
    .bind(project)
    .bind(limit)
    .bind(offset)
    .bind(only)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "{ids} select count(*) from ids where $2::text[] is null or course_id = any($2)"
    ))
    .bind(project)
    .bind(only)
    .fetch_one(pool)
    .await?;
    let items = rows
        .into_iter()
        .map(|mut r| {
            r.completion_rate = ratio(r.completed, r.enrolled);
            r
        })
        .collect();
    Ok((items, total))
}

/// One day of a course (docs/contract.md §6 "Course daily analytics"): the day's counters, its
/// distinct viewers and learners, and the enrolments and completions up to its end.
#[derive(Debug, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct CourseDay {
    pub date: NaiveDate,
    pub views: i64,
    #[sqlx(skip)]
    pub unique_viewers: i64,
    #[sqlx(skip)]
    pub active_learners: i64,
    pub interactions: i64,
    pub enrollments: i64,
    pub lesson_completions: i64,
    pub course_completions: i64,
    pub time_spent_s: i64,
    #[sqlx(skip)]
    pub avg_time_spent_s: Option<f64>,
    #[sqlx(skip)]
    #[serde(rename = "enrolled_by_end_of_day")]
    pub enrolled_by: i64,
    #[sqlx(skip)]
    #[serde(rename = "completed_by_end_of_day")]
    pub completed_by: i64,
    #[sqlx(skip)]
    pub completion_rate: Option<f64>,
}

/// A course's range in all: counters summed, viewers and learners distinct over the range, the
/// completion rate of its last day.
#[derive(Debug, PartialEq, Serialize)]
pub struct Totals {
    pub views: i64,
    pub unique_viewers: i64,
    pub active_learners: i64,
    pub interactions: i64,
    pub enrollments: i64,
    pub lesson_completions: i64,
    pub course_completions: i64,
    pub time_spent_s: i64,
    pub avg_time_spent_s: Option<f64>,
    pub completion_rate: Option<f64>,
}

/// A module of a course with the lesson completions it had over the range.
#[derive(Debug, PartialEq, Serialize)]
pub struct PopularModule {
    pub module_id: String,
    pub lesson_completions: i64,
}

/// A course over a range of days: its catalog entry, the daily series, the totals, and its five
/// most popular modules (by lesson completions).
#[derive(Debug)]
pub struct Analytics {
    pub title: Option<String>,
    pub total_lessons: Option<i32>,
    pub instructor_id: Option<String>,
    pub totals: Totals,
    pub popular_modules: Vec<PopularModule>,
    pub series: Vec<CourseDay>,
}

/// `course`'s analytics over `from..=to`; with `group`, of the group's current members only.
pub async fn analytics(
    pool: &sqlx::PgPool,
    project: &str,
    persons: &Persons,
    course: &str,
    (from, to): (NaiveDate, NaiveDate),
    group: Option<&str>,
) -> Result<Analytics, ApiError> {
    // Distinct learners and viewers: the course's daily bitmaps, unions for the range.
    let mut viewers = DailySets::load(pool, project, persons, Kind::CourseViewers, Some(course), from, to).await?;
    let mut active = DailySets::load(pool, project, persons, Kind::CourseActive, Some(course), from, to).await?;
    let members = member_ids(pool, project, persons, group).await?;
    let (mut days, modules) = match &members {
        None => (
            daily_counters(pool, project, course, (from, to)).await?,
            popular_modules(pool, project, course, (from, to)).await?,
        ),
        Some(ids) => {
            let members: RoaringBitmap = persons.map(&ids.iter().filter_map(|o| u32::try_from(*o).ok()).collect());
            viewers.restrict(&members);
            active.restrict(&members);
            members_counters(pool, project, course, (from, to), ids).await?
        }
    };
    // Enrolled (and completed) by the end of each day: one grouped read, summed up.
    let by_day: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(&format!(
        "select day, count(*) filter (where enrolled), count(*) filter (where not enrolled)
           from (select enrolled_at::date as day, true as enrolled from enrollments
                  where project = $1 and course_id = $2 and enrolled_at::date <= $3{members}
                 union all
                 select greatest(enrolled_at, completed_at)::date, false from enrollments
                  where project = $1 and course_id = $2 and enrolled_at is not null and completed_at is not null
                    and greatest(enrolled_at, completed_at)::date <= $3{members}) as e
          group by day order by day",
        members = member_of("user_key", 4)
    ))
    .bind(project)
    .bind(course)
    .bind(to)
    .bind(&members)
    .fetch_all(pool)
    .await?;
    fill_days(&mut days, &by_day, &viewers, &active);
    let totals = totals(
        &days,
        viewers.union(from, to).len() as i64,
        active.union(from, to).len() as i64,
    );
    let catalog: Option<(Option<String>, Option<i32>, Option<String>)> = sqlx::query_as(
        "select title, total_lessons, instructor_id from course_catalog where project = $1 and course_id = $2",
    )
    .bind(project)
    .bind(course)
    .fetch_optional(pool)
    .await?;
    let (title, total_lessons, instructor_id) = catalog.unwrap_or_default();
    Ok(Analytics {
        title,
        total_lessons,
        instructor_id,
        totals,
        popular_modules: modules,
        series: days,
    })
}

/// The course's daily counters over `from..=to`, every day present (zeros without events).
async fn daily_counters(
    pool: &sqlx::PgPool,
    project: &str,
    course: &str,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<CourseDay>, ApiError> {
    Ok(sqlx::query_as(
        "select d.day::date as date,
                coalesce(cd.views, 0) as views,
                coalesce(cd.interactions, 0) as interactions,
                coalesce(cd.enrollments, 0) as enrollments,
                coalesce(cd.lesson_completions, 0) as lesson_completions,
                coalesce(cd.course_completions, 0) as course_completions,
                coalesce(cd.time_spent_s, 0) as time_spent_s
           from generate_series($3::date, $4::date, interval '1 day') as d(day)
           left join course_daily cd on cd.project = $1 and cd.course_id = $2 and cd.day = d.day::date
          order by 1",
    )
    .bind(project)
    .bind(course)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// The five modules with the most lesson completions over `from..=to`.
async fn popular_modules(
    pool: &sqlx::PgPool,
    project: &str,
    course: &str,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<Vec<PopularModule>, ApiError> {
    let modules: Vec<(String, i64)> = sqlx::query_as(
        "select module_id, sum(lesson_completions)::bigint as n from course_module_daily
          where project = $1 and course_id = $2 and day between $3 and $4
          group by module_id order by n desc, module_id collate \"C\" limit 5",
    )
    .bind(project)
    .bind(course)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(top_modules(modules.into_iter()))
}

/// The five modules of `counts` with the most completions, ties by module id (bytewise, as
/// `collate "C"` orders them).
fn top_modules(counts: impl Iterator<Item = (String, i64)>) -> Vec<PopularModule> {
    let mut modules: Vec<(String, i64)> = counts.collect();
    modules.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
    modules
        .into_iter()
        .take(5)
        .map(|(module_id, lesson_completions)| PopularModule {
            module_id,
            lesson_completions,
        })
        .collect()
}

/// The daily counters and popular modules of the events of `members` only. The rollups sum
/// every learner together, so these come from the ledger's counted events (`event_chunks`: each
/// event once, with its user, course and scalar properties) by the same definitions the workers
/// apply (workers/src/rollup/delta.rs): one row per day, the counts grouped in SQL and the
/// completions' properties (time spent, lesson and module) read here.
async fn members_counters(
    pool: &sqlx::PgPool,
    project: &str,
    course: &str,
    (from, to): (NaiveDate, NaiveDate),
    ords: &[i32],
) -> Result<(Vec<CourseDay>, Vec<PopularModule>), ApiError> {
    type Row = (NaiveDate, i64, i64, i64, i64, i64, Vec<Option<String>>);
    let rows: Vec<Row> = sqlx::query_as(
        "select c.day,
                count(*) filter (where c.event = 'course_viewed'),
                count(*) filter (where c.event <> 'course_viewed'),
                count(*) filter (where c.event = 'course_enrolled'),
                count(*) filter (where c.event = 'lesson_completed'),
                count(*) filter (where c.event = 'course_completed'),
                coalesce(array_agg(e.props) filter (where c.event = 'lesson_completed'), '{}')
           from event_chunks c, unnest(c.users, c.courses, c.props) e(user_ord, course_id, props)
          where c.project = $1 and c.day between $3 and $4 and c.event <> 'course_published'
            and e.course_id = $2 and e.user_ord in (select unnest($5::int4[]))
          group by c.day",
    )
    .bind(project)
    .bind(course)
    .bind(from)
    .bind(to)
    .bind(ords)
    .fetch_all(pool)
    .await?;
    let mut by_day: std::collections::BTreeMap<NaiveDate, Row> = rows.into_iter().map(|r| (r.0, r)).collect();
    let mut modules: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let days = activity::days(from, to)
        .map(|date| {
            let Some((_, views, interactions, enrollments, lesson_completions, course_completions, completions)) =
                by_day.remove(&date)
            else {
                return CourseDay {
                    date,
                    ..CourseDay::default()
                };
            };
            let mut time_spent_s = 0;
            for props in completions.iter().flatten() {
                let Ok(props) = serde_json::from_str::<serde_json::Map<String, Value>>(props) else {
                    continue;
                };
                time_spent_s += common::event::whole_seconds(props.get("time_spent_s"));
                let lesson = props.get("lesson_id").and_then(common::event::id_value);
                if let (Some(_), Some(module)) = (lesson, props.get("module_id").and_then(common::event::id_value)) {
                    *modules.entry(module).or_default() += 1;
                }
            }
            CourseDay {
                date,
                views,
                interactions,
                enrollments,
                lesson_completions,
                course_completions,
                time_spent_s,
                ..CourseDay::default()
            }
        })
        .collect();
    Ok((days, top_modules(modules.into_iter())))
}

/// Completes each day of `days` (in order) with its distinct viewers and learners, the running
/// enrolments and completions of `by_day` (`(day, enrolled, completed)` in day order, starting
/// before the range) up to its end, and the rates they give.
pub fn fill_days(days: &mut [CourseDay], by_day: &[(NaiveDate, i64, i64)], viewers: &DailySets, active: &DailySets) {
    let (mut enrolled, mut completed, mut changes) = (0, 0, by_day.iter().peekable());
    for day in days {
        while let Some((_, e, c)) = changes.next_if(|(d, _, _)| *d <= day.date) {
            enrolled += e;
            completed += c;
        }
        day.unique_viewers = viewers.count(day.date) as i64;
        day.active_learners = active.count(day.date) as i64;
        day.avg_time_spent_s = ratio(day.time_spent_s, day.active_learners);
        day.enrolled_by = enrolled;
        day.completed_by = completed;
        day.completion_rate = ratio(completed, enrolled);
    }
}

/// The totals of filled `days`, with the range's distinct `viewers` and `learners`.
pub fn totals(days: &[CourseDay], viewers: i64, learners: i64) -> Totals {
    let sum = |f: fn(&CourseDay) -> i64| days.iter().map(f).sum::<i64>();
    let time = sum(|d| d.time_spent_s);
    Totals {
        views: sum(|d| d.views),
        unique_viewers: viewers,
        active_learners: learners,
        interactions: sum(|d| d.interactions),
        enrollments: sum(|d| d.enrollments),
        lesson_completions: sum(|d| d.lesson_completions),
        course_completions: sum(|d| d.course_completions),
        time_spent_s: time,
        avg_time_spent_s: ratio(time, learners),
        completion_rate: days.last().and_then(|d| d.completion_rate),
    }
}

/// A catalog entry as `PUT /v1/courses/{id}` sends it; omitted fields become null.
#[derive(Debug, Deserialize)]
pub struct CourseUpdate {
    pub title: Option<String>,
    pub total_lessons: Option<i32>,
    pub instructor_id: Option<String>,
    /// The course's items in order (ids; at most 1,000, repeats keep their first place).
    pub items: Option<Vec<String>>,
}

/// A catalog entry as readers see it (`course_catalog`).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CatalogEntry {
    pub course_id: String,
    pub title: Option<String>,
    pub total_lessons: Option<i32>,
    pub instructor_id: Option<String>,
    pub items: Option<Vec<String>>,
    pub updated_at: DateTime<Utc>,
}

/// Replaces `course`'s catalog override and returns what readers now see: the latest update wins,
/// whether from here or a `course_published` event (an event newer than this update still wins
/// the fields it carries). The api is the one writer of `course_overrides`, the workers of
/// `courses`; readers see the `course_catalog` view of both (migration 0011).
pub async fn put(
    pool: &sqlx::PgPool,
    project: &str,
    course: &str,
    update: &CourseUpdate,
) -> Result<CatalogEntry, ApiError> {
    sqlx::query(
        "insert into course_overrides as o (project, course_id, title, total_lessons, instructor_id, items, updated_at)
         values ($1, $2, $3, $4, $5, $6, now())
         on conflict (project, course_id) do update set title = excluded.title,
             total_lessons = excluded.total_lessons, instructor_id = excluded.instructor_id,
             items = excluded.items, updated_at = greatest(excluded.updated_at, o.updated_at)",
    )
    .bind(project)
    .bind(course)
    .bind(&update.title)
    .bind(update.total_lessons)
    .bind(&update.instructor_id)
    .bind(&update.items)
    .execute(pool)
    .await?;
    Ok(sqlx::query_as(
        "select course_id, title, total_lessons, instructor_id, items, updated_at from course_catalog
          where project = $1 and course_id = $2",
    )
    .bind(project)
    .bind(course)
    .fetch_one(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use common::bitmap::RoaringBitmap;

    use super::*;

    fn d(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, n).unwrap()
    }

    fn day(n: u32, time_spent_s: i64) -> CourseDay {
        CourseDay {
            date: d(n),
            views: 1,
            time_spent_s,
            ..CourseDay::default()
        }
    }

    #[test]
    fn days_carry_enrolments_to_date_and_totals_sum_the_counters() {
        let mut days = vec![day(2, 600), day(3, 0), day(4, 90)];
        // One enrolment before the range, one on the 3rd, a completion on the 4th.
        let by_day = [(d(1), 1, 0), (d(3), 1, 0), (d(4), 0, 1)];
        let users = |u: &[u32]| u.iter().copied().collect::<RoaringBitmap>();
        let viewers = DailySets::from_days([(d(2), users(&[1, 2]))]);
        let active = DailySets::from_days([(d(2), users(&[1, 2, 3])), (d(4), users(&[1]))]);
        fill_days(&mut days, &by_day, &viewers, &active);
        let column = |f: fn(&CourseDay) -> i64| days.iter().map(f).collect::<Vec<_>>();
        assert_eq!(column(|d| d.enrolled_by), [1, 2, 2]);
        assert_eq!(column(|d| d.completed_by), [0, 0, 1]);
        assert_eq!(column(|d| d.unique_viewers), [2, 0, 0]);
        assert_eq!(column(|d| d.active_learners), [3, 0, 1]);
        assert_eq!(
            days.iter().map(|d| d.avg_time_spent_s).collect::<Vec<_>>(),
            [Some(200.0), None, Some(90.0)]
        );
        assert_eq!(
            days.iter().map(|d| d.completion_rate).collect::<Vec<_>>(),
            [Some(0.0), Some(0.0), Some(0.5)]
        );
        let totals = totals(&days, 2, 3);
        assert_eq!(
            (
                totals.views,
                totals.time_spent_s,
                totals.avg_time_spent_s,
                totals.completion_rate
            ),
            (3, 690, Some(230.0), Some(0.5))
        );
        assert_eq!(
            serde_json::to_value(&days[2]).unwrap()["completed_by_end_of_day"],
            serde_json::json!(1)
        );
    }

    #[test]
    fn a_learners_status_is_completed_then_in_progress_then_enrolled() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let row = |completed: bool, touched: i64, total: Option<i32>| {
            Progress {
                course_id: "c".into(),
                user_id: "u".into(),
                title: None,
                lessons_completed: 1,
                total_lessons: total,
                progress_pct: None,
                status: "",
                enrolled_at: Some(at),
                completed_at: completed.then_some(at),
                last_accessed_at: at,
                lessons_touched: touched,
            }
            .finish()
        };
        assert_eq!(row(true, 0, Some(4)).status, "completed");
        assert_eq!(row(false, 1, Some(4)).status, "in_progress");
        assert_eq!(row(false, 0, Some(4)).status, "enrolled");
        assert_eq!(row(false, 1, Some(4)).progress_pct, Some(25.0));
        assert_eq!(row(false, 1, Some(0)).progress_pct, None);
        assert_eq!(row(false, 1, None).progress_pct, None);
    }
}
