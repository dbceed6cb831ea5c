//! A learner's own endpoints: stats, progress (overall and per course), the live progress stream,
//! and their learning path in a course (MongoDB `student_learning_paths`).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse as _, Response,
    },
};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    auth::{authenticate, Principal},
    courses::user_progress,
    routes::path_id,
    ApiError, App,
};

/// (current, longest) streaks of consecutive active days; the current one ends today or yesterday.
pub fn streaks(days: &[NaiveDate], today: NaiveDate) -> (i64, i64) {
    let (mut longest, mut run) = (0i64, 0i64);
    let mut previous: Option<NaiveDate> = None;
    for day in days {
        run = match previous {
            Some(p) if *day == p + chrono::Days::new(1) => run + 1,
            Some(p) if *day == p => run,
            _ => 1,
        };
        longest = longest.max(run);
        previous = Some(*day);
    }
    let current = match previous {
        Some(last) if last == today || last + chrono::Days::new(1) == today => run,
        _ => 0,
    };
    (current, longest)
}

/// `GET /v1/users/{id}/stats`.
pub async fn stats(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    path_id("id", &user)?;
    principal.require_user(&user)?;
    let project = principal.project;
    // The current streak depends on today's date: part of the key.
    let today = Utc::now().date_naive();
    let key = format!("stats:{user}:{today}");
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let totals: Option<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
                "select learning_time_s, first_seen_at, last_activity_at from user_stats
                  where project = $1 and user_key = $2",
            )
            .bind(&project)
            .bind(&user)
            .fetch_optional(&app.pool)
            .await?;
            let Some((learning_time_s, first_seen_at, last_activity_at)) = totals else {
                return Err(ApiError::NotFound);
            };
            let (enrolled, completed): (i64, i64) = sqlx::query_as(
                "select count(*) filter (where enrolled_at is not null), count(*) filter (where completed_at is not null)
                   from enrollments where project = $1 and user_key = $2",
            )
            .bind(&project)
            .bind(&user)
            .fetch_one(&app.pool)
            .await?;
            let (taken, passed, score_sum, attempts): (i64, i64, Option<f64>, Option<i64>) = sqlx::query_as(
                "select count(*), count(*) filter (where passed), sum(score_pct_sum), sum(attempts)::bigint
                   from user_quizzes where project = $1 and user_key = $2",
            )
            .bind(&project)
            .bind(&user)
            .fetch_one(&app.pool)
            .await?;
            let (points, badges): (Option<i64>, i64) = sqlx::query_as(
                "select sum(points)::bigint, count(*) from user_badges where project = $1 and user_key = $2",
            )
            .bind(&project)
            .bind(&user)
            .fetch_one(&app.pool)
            .await?;
            let days: Vec<NaiveDate> = sqlx::query_scalar(
                "select day from daily_active_users where project = $1 and user_key = $2 order by day",
            )
            .bind(&project)
            .bind(&user)
            .fetch_all(&app.pool)
            .await?;
            let (current, longest) = streaks(&days, today);
            let average = match (score_sum, attempts) {
                (Some(sum), Some(n)) if n > 0 => Some(sum / n as f64),
                _ => None,
            };
            Ok(serde_json::json!({
                "project": project, "user_id": user,
                "courses_enrolled": enrolled, "courses_completed": completed,
                "learning_time_s": learning_time_s,
                "quizzes_taken": taken, "quizzes_passed": passed, "average_quiz_score": average,
                "points": points.unwrap_or(0), "badges": badges,
                "current_streak_days": current, "longest_streak_days": longest,
                "active_days": days.len(),
                "first_seen_at": first_seen_at, "last_activity_at": last_activity_at,
            }))
        })
        .await)
}

/// A learner's progress, overall and per course; None when the learner is unknown.
async fn progress_value(app: &App, project: &str, user: &str) -> Result<serde_json::Value, ApiError> {
    let courses = user_progress(app, project, user).await?;
    let count = |status: &str| courses.iter().filter(|c| c.status == status).count();
    let lessons: i64 = courses.iter().map(|c| c.lessons_completed).sum();
    let known: Vec<_> = courses
        .iter()
        .filter(|c| c.total_lessons.is_some_and(|t| t > 0))
        .collect();
    let known_total: i64 = known.iter().map(|c| i64::from(c.total_lessons.unwrap_or(0))).sum();
    let known_done: i64 = known.iter().map(|c| c.lessons_completed).sum();
    Ok(serde_json::json!({
        "project": project, "user_id": user,
        "overall": {
            "courses": courses.len(), "enrolled": count("enrolled"), "in_progress": count("in_progress"),
            "completed": count("completed"), "lessons_completed": lessons,
            // Over the courses whose lesson count the catalog knows.
            "progress_pct": (known_total > 0).then(|| known_done as f64 / known_total as f64 * 100.0),
        },
        "courses": courses,
    }))
}

/// `GET /v1/users/{id}/progress`.
pub async fn progress(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    path_id("id", &user)?;
    principal.require_user(&user)?;
    let project = principal.project;
    let key = format!("progress:{user}");
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            progress_value(&app, &project, &user).await
        })
        .await)
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// The credential, for clients that cannot set headers (the browser's `EventSource`).
    key: Option<String>,
}

/// `GET /v1/users/{id}/progress/stream`: server-sent events; a `progress` event with the
/// learner's progress at once, then again whenever a workers' commit changes it.
pub async fn progress_stream(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    let token = match (header_token, query.key) {
        (Some(token), _) => token,
        // URLs end up in logs and browser history: only a JWT, whose lifetime is bounded, may
        // travel in one, never a read key.
        (None, Some(key)) if key.matches('.').count() == 2 => key,
        (None, Some(_)) => {
            return Err(ApiError::Forbidden(
                "`?key=` takes a JWT only; send read keys as `Authorization: Bearer`".into(),
            ))
        }
        (None, None) => return Err(ApiError::Unauthorized),
    };
    let principal = authenticate(&app, &token).await?;
    path_id("id", &user)?;
    principal.require_user(&user)?;
    // The credential the stream counts against: a JWT's subject, or the read key itself.
    let holder = if principal.sub.is_empty() {
        common::keys::hash(&token)
    } else {
        format!("{}/{}", principal.project, principal.sub)
    };
    let slot = app.streams.open(holder)?;
    let project = principal.project;
    let changes = app.cache.subscribe();
    let first = progress_value(&app, &project, &user).await?;
    let shutdown = app.shutdown.clone();
    let state = (changes, app, project, user, first.clone());
    let updates = futures::stream::unfold(state, |(mut changes, app, project, user, last)| async move {
        loop {
            match changes.recv().await {
                Ok(change) if change.project != project || !change.users.contains(&user) => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
            match progress_value(&app, &project, &user).await {
                Ok(value) if value == last => continue,
                Ok(value) => {
                    let event = Event::default().event("progress").json_data(&value).ok()?;
                    return Some((event, (changes, app, project, user, value)));
                }
                Err(error) => {
                    tracing::warn!(?error, "cannot read progress for a live stream");
                    continue;
                }
            }
        }
    });
    let first = Event::default()
        .event("progress")
        .json_data(&first)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let stream = futures::stream::once(async move { first })
        .chain(updates)
        .map(move |event| {
            // Held as long as the stream is: dropped with it when the client goes away.
            let _held = &slot;
            Ok::<_, Infallible>(event)
        })
        .take_until(async move { shutdown.cancelled().await });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A lesson of a learning path: module, lesson, completed, seconds spent, last accessed.
type LessonRow = (Option<String>, String, bool, i64, DateTime<Utc>);

/// `GET /v1/users/{id}/learning-paths/{course_id}`: the learner's path in a course, in module then
/// lesson order, from `lesson_progress` in PostgreSQL: the rows the workers project into MongoDB's
/// `student_learning_paths` (workers/src/paths.rs), read here without the flush delay.
/// `preferences` is the seeds' field, which no event sets: always `{}`.
pub async fn learning_path(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    Path((user, course)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    path_id("id", &user)?;
    path_id("course_id", &course)?;
    principal.require_user_in_course(&user, &course)?;
    let project = principal.project;
    let key = format!("path:{}", serde_json::json!([user, course]));
    let cache = app.cache.clone();
    Ok(cache
        .respond(&project.clone(), key, &headers, || async move {
            let lessons: Vec<LessonRow> = sqlx::query_as(
                "select module_id, lesson_id, completed_at is not null, time_spent_s, last_accessed_at
                   from lesson_progress where project = $1 and user_key = $2 and course_id = $3
                  order by module_id nulls first, lesson_id",
            )
            .bind(&project)
            .bind(&user)
            .bind(&course)
            .fetch_all(&app.pool)
            .await?;
            let updated = lessons.iter().map(|l| l.4).max().ok_or(ApiError::NotFound)?;
            let path: Vec<serde_json::Value> = lessons
                .into_iter()
                .map(|(module, lesson, completed, time_spent, last_accessed)| {
                    serde_json::json!({"moduleId": module, "lessonId": lesson, "completed": completed,
                                       "timeSpent": time_spent, "lastAccessed": last_accessed})
                })
                .collect();
            Ok(serde_json::json!({
                "project": project, "studentId": user, "courseId": course,
                "learningPath": path, "preferences": {}, "updatedAt": updated,
            }))
        })
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, day).unwrap()
    }

    #[test]
    fn streaks_count_consecutive_days_and_the_current_one_ends_today_or_yesterday() {
        let days = [d(1), d(2), d(3), d(5), d(6)];
        assert_eq!(streaks(&days, d(6)), (2, 3));
        assert_eq!(streaks(&days, d(7)), (2, 3));
        assert_eq!(streaks(&days, d(8)), (0, 3));
        assert_eq!(streaks(&[], d(8)), (0, 0));
    }
}
