//! Course endpoints: the catalog (`GET /v1/courses`, `PUT /v1/courses/{id}`), a course's daily
//! analytics and its learners with their progress; and the progress rows the user endpoints share.

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::Response,
    Json,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use common::bitmap::Kind;

use crate::{
    activity::DailySets,
    auth::{Principal, Role},
    routes::{path_id, JsonBody, Page, Range, RangeQuery},
    ApiError, App,
};

/// One learner's progress in one course (docs/contract.md §6 "Course progress").
#[derive(Debug, Serialize, sqlx::FromRow)]
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
pub async fn user_progress(app: &App, project: &str, user: &str) -> Result<Vec<Progress>, ApiError> {
    let rows: Vec<Progress> = sqlx::query_as(&format!("{PROGRESS_SELECT} and e.user_key = $2 order by e.course_id"))
        .bind(project)
        .bind(user)
        .fetch_all(&app.pool)
        .await?;
    Ok(rows.into_iter().map(Progress::finish).collect())
}

/// `GET /v1/courses/{id}/learners?limit&offset`: the course's learners by user id.
pub async fn learners(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Path(course): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    path_id("id", &course)?;
    principal.require_course(&course)?;
    let page = Page::parse(&query)?;
    let project = principal.project;
    let key = format!("learners:{course}:{}:{}", page.limit, page.offset);
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let rows: Vec<Progress> = sqlx::query_as(&format!(
                "{PROGRESS_SELECT} and e.course_id = $2 order by e.user_key limit $3 offset $4"
            ))
            .bind(&project)
            .bind(&course)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&app.pool)
            .await?;
            let total: i64 = sqlx::query_scalar(&format!(
                "select count(*) from ({PROGRESS_SELECT} and e.course_id = $2) as learners"
            ))
            .bind(&project)
            .bind(&course)
            .fetch_one(&app.pool)
            .await?;
            let items: Vec<Progress> = rows.into_iter().map(Progress::finish).collect();
            let mut body = page.envelope(serde_json::to_value(items).map_err(anyhow::Error::from)?, total);
            body["course_id"] = course.into();
            Ok(body)
        })
        .await)
}

#[derive(Debug, sqlx::FromRow)]
struct CourseDay {
    date: NaiveDate,
    views: i64,
    #[sqlx(skip)]
    unique_viewers: i64,
    #[sqlx(skip)]
    active_learners: i64,
    interactions: i64,
    enrollments: i64,
    lesson_completions: i64,
    course_completions: i64,
    time_spent_s: i64,
    #[sqlx(skip)]
    enrolled_by: i64,
    #[sqlx(skip)]
    completed_by: i64,
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// `GET /v1/courses/{id}/analytics?from&to`: the daily series, range totals, and the five most
/// popular modules (by lesson completions) over the range.
pub async fn analytics(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Path(course): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    path_id("id", &course)?;
    principal.require_course(&course)?;
    let range = Range::parse(query.from.as_deref(), query.to.as_deref(), app.config.max_range_days)?;
    let project = principal.project;
    let key = format!("analytics:{course}:{}", range.key());
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let mut days: Vec<CourseDay> = sqlx::query_as(
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
            .bind(&project)
            .bind(&course)
            .bind(range.from)
            .bind(range.to)
            .fetch_all(&app.pool)
            .await?;
            // Distinct learners and viewers: the course's daily bitmaps, unions for the range.
            let viewers = DailySets::load(
                &app.pool,
                &project,
                Kind::CourseViewers,
                Some(&course),
                range.from,
                range.to,
            )
            .await?;
            let active = DailySets::load(
                &app.pool,
                &project,
                Kind::CourseActive,
                Some(&course),
                range.from,
                range.to,
            )
            .await?;
            // Enrolled (and completed) by the end of each day: one grouped read, summed up.
            let by_day: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
                "select day, count(*) filter (where enrolled), count(*) filter (where not enrolled)
                   from (select enrolled_at::date as day, true as enrolled from enrollments
                          where project = $1 and course_id = $2 and enrolled_at::date <= $3
                         union all
                         select greatest(enrolled_at, completed_at)::date, false from enrollments
                          where project = $1 and course_id = $2 and enrolled_at is not null and completed_at is not null
                            and greatest(enrolled_at, completed_at)::date <= $3) as e
                  group by day order by day",
            )
            .bind(&project)
            .bind(&course)
            .bind(range.to)
            .fetch_all(&app.pool)
            .await?;
            let (mut enrolled, mut completed, mut changes) = (0, 0, by_day.iter().peekable());
            for day in &mut days {
                while let Some((_, e, c)) = changes.next_if(|(d, _, _)| *d <= day.date) {
                    enrolled += e;
                    completed += c;
                }
                day.unique_viewers = viewers.count(day.date) as i64;
                day.active_learners = active.count(day.date) as i64;
                day.enrolled_by = enrolled;
                day.completed_by = completed;
            }
            let viewers = viewers.union(range.from, range.to).len() as i64;
            let learners = active.union(range.from, range.to).len() as i64;
            let modules: Vec<(String, i64)> = sqlx::query_as(
                "select module_id, sum(lesson_completions)::bigint as n from course_module_daily
                  where project = $1 and course_id = $2 and day between $3 and $4
                  group by module_id order by n desc, module_id limit 5",
            )
            .bind(&project)
            .bind(&course)
            .bind(range.from)
            .bind(range.to)
            .fetch_all(&app.pool)
            .await?;
            let catalog: Option<(Option<String>, Option<i32>, Option<String>)> = sqlx::query_as(
                "select title, total_lessons, instructor_id from course_catalog where project = $1 and course_id = $2",
            )
            .bind(&project)
            .bind(&course)
            .fetch_optional(&app.pool)
            .await?;
            let series: Vec<serde_json::Value> = days
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "date": d.date, "views": d.views, "unique_viewers": d.unique_viewers,
                        "active_learners": d.active_learners, "interactions": d.interactions,
                        "enrollments": d.enrollments, "lesson_completions": d.lesson_completions,
                        "course_completions": d.course_completions, "time_spent_s": d.time_spent_s,
                        "avg_time_spent_s": ratio(d.time_spent_s, d.active_learners),
                        "enrolled_by_end_of_day": d.enrolled_by, "completed_by_end_of_day": d.completed_by,
                        "completion_rate": ratio(d.completed_by, d.enrolled_by),
                    })
                })
                .collect();
            let sum = |f: fn(&CourseDay) -> i64| days.iter().map(f).sum::<i64>();
            let time = sum(|d| d.time_spent_s);
            let last = days.last();
            let (title, total_lessons, instructor_id) = catalog.unwrap_or_default();
            Ok(serde_json::json!({
                "project": project, "course_id": course, "title": title, "total_lessons": total_lessons,
                "instructor_id": instructor_id, "from": range.from, "to": range.to,
                "totals": {
                    "views": sum(|d| d.views), "unique_viewers": viewers, "active_learners": learners,
                    "interactions": sum(|d| d.interactions), "enrollments": sum(|d| d.enrollments),
                    "lesson_completions": sum(|d| d.lesson_completions),
                    "course_completions": sum(|d| d.course_completions),
                    "time_spent_s": time, "avg_time_spent_s": ratio(time, learners),
                    "completion_rate": last.and_then(|d| ratio(d.completed_by, d.enrolled_by)),
                },
                "popular_modules": modules.into_iter()
                    .map(|(m, n)| serde_json::json!({"module_id": m, "lesson_completions": n}))
                    .collect::<Vec<_>>(),
                "series": series,
            }))
        })
        .await)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct CourseRow {
    course_id: String,
    title: Option<String>,
    total_lessons: Option<i32>,
    instructor_id: Option<String>,
    enrolled: i64,
    completed: i64,
    #[sqlx(skip)]
    completion_rate: Option<f64>,
}

/// `GET /v1/courses?limit&offset`: the catalog and every course with learners, with enrolments,
/// completions and the completion rate to date. Instructors see the courses they teach.
pub async fn list(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    if principal.role == Role::Student {
        return Err(ApiError::Forbidden(
            "students read only their own user endpoints".into(),
        ));
    }
    let page = Page::parse(&query)?;
    // None: every course (admins); Some: only these.
    let only: Option<Vec<String>> = (principal.role == Role::Instructor).then(|| principal.courses.to_vec());
    let project = principal.project;
    let key = format!("courses:{}:{}:{only:?}", page.limit, page.offset);
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
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
            .bind(&project)
            .bind(page.limit)
            .bind(page.offset)
            .bind(&only)
            .fetch_all(&app.pool)
            .await?;
            let total: i64 = sqlx::query_scalar(&format!(
                "{ids} select count(*) from ids where $2::text[] is null or course_id = any($2)"
            ))
            .bind(&project)
            .bind(&only)
            .fetch_one(&app.pool)
            .await?;
            let items: Vec<CourseRow> = rows
                .into_iter()
                .map(|mut r| {
                    r.completion_rate = ratio(r.completed, r.enrolled);
                    r
                })
                .collect();
            Ok(page.envelope(serde_json::to_value(items).map_err(anyhow::Error::from)?, total))
        })
        .await)
}

#[derive(Debug, Deserialize)]
pub struct CourseUpdate {
    title: Option<String>,
    total_lessons: Option<i32>,
    instructor_id: Option<String>,
}

/// `PUT /v1/courses/{id}` with `{title, total_lessons, instructor_id}` (admins): replaces the
/// catalog entry; the latest update wins, whether from here or a `course_published` event. The api
/// is the one writer of `course_overrides`, the workers of `courses`; readers see the
/// `course_catalog` view of both (migration 0011).
pub async fn put(
    State(app): State<App>,
    principal: Principal,
    Path(course): Path<String>,
    JsonBody(update): JsonBody<CourseUpdate>,
) -> Result<Json<serde_json::Value>, ApiError> {
    path_id("id", &course)?;
    principal.require_catalog_writer()?;
    if update.total_lessons.is_some_and(|n| n <= 0) {
        return Err(ApiError::Unprocessable(
            "`total_lessons` must be a positive integer".into(),
        ));
    }
    if update.title.as_ref().is_some_and(|t| t.len() > 500)
        || update.instructor_id.as_ref().is_some_and(|i| i.len() > 256)
    {
        return Err(ApiError::Unprocessable(
            "`title` has at most 500 characters and `instructor_id` at most 256".into(),
        ));
    }
    sqlx::query(
        "insert into course_overrides as o (project, course_id, title, total_lessons, instructor_id, updated_at)
         values ($1, $2, $3, $4, $5, now())
         on conflict (project, course_id) do update set title = excluded.title,
             total_lessons = excluded.total_lessons, instructor_id = excluded.instructor_id,
             updated_at = greatest(excluded.updated_at, o.updated_at)",
    )
    .bind(&principal.project)
    .bind(&course)
    .bind(&update.title)
    .bind(update.total_lessons)
    .bind(&update.instructor_id)
    .execute(&app.pool)
    .await?;
    // What readers now see: an event newer than this update still wins the fields it carries.
    let row: (String, Option<String>, Option<i32>, Option<String>, DateTime<Utc>) = sqlx::query_as(
        "select course_id, title, total_lessons, instructor_id, updated_at from course_catalog
          where project = $1 and course_id = $2",
    )
    .bind(&principal.project)
    .bind(&course)
    .fetch_one(&app.pool)
    .await?;
    app.cache.invalidate(&principal.project);
    Ok(Json(serde_json::json!({
        "course_id": row.0, "title": row.1, "total_lessons": row.2, "instructor_id": row.3, "updated_at": row.4,
    })))
}
