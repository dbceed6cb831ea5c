//! One learner: their stats (docs/contract.md §6 "User learning stats"), their progress overall
//! and per course, and their learning path in a course, read from `lesson_progress` (the rows the
//! workers project into MongoDB's `student_learning_paths`, without the flush delay). Each answer
//! is a document about the learner, so it names them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::{
    query::courses::{user_progress, Progress},
    ApiError,
};

/// A learner's stats.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub project: String,
    pub user_id: String,
    pub courses_enrolled: i64,
    pub courses_completed: i64,
    pub learning_time_s: i64,
    pub quizzes_taken: i64,
    pub quizzes_passed: i64,
    pub average_quiz_score: Option<f64>,
    pub points: i64,
    pub badges: i64,
    pub current_streak_days: i64,
    pub longest_streak_days: i64,
    pub active_days: usize,
    pub first_seen_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

/// `user`'s stats, with streaks as of `today`; `None` for a learner never seen.
pub async fn stats(
    pool: &sqlx::PgPool,
    project: &str,
    user: &str,
    today: NaiveDate,
) -> Result<Option<Stats>, ApiError> {
    let totals: Option<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select learning_time_s, first_seen_at, last_activity_at from user_stats
          where project = $1 and user_key = $2",
    )
    .bind(project)
    .bind(user)
    .fetch_optional(pool)
    .await?;
    let Some((learning_time_s, first_seen_at, last_activity_at)) = totals else {
        return Ok(None);
    };
    let (enrolled, completed): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where enrolled_at is not null), count(*) filter (where completed_at is not null)
           from enrollments where project = $1 and user_key = $2",
    )
    .bind(project)
    .bind(user)
    .fetch_one(pool)
    .await?;
    let (taken, passed, score_sum, attempts): (i64, i64, Option<f64>, Option<i64>) = sqlx::query_as(
        "select count(*), count(*) filter (where passed), sum(score_pct_sum), sum(attempts)::bigint
           from user_quizzes where project = $1 and user_key = $2",
    )
    .bind(project)
    .bind(user)
    .fetch_one(pool)
    .await?;
    let (points, badges): (Option<i64>, i64) =
        sqlx::query_as("select sum(points)::bigint, count(*) from user_badges where project = $1 and user_key = $2")
            .bind(project)
            .bind(user)
            .fetch_one(pool)
            .await?;
    let days: Vec<NaiveDate> =
        sqlx::query_scalar("select day from daily_active_users where project = $1 and user_key = $2 order by day")
            .bind(project)
            .bind(user)
            .fetch_all(pool)
            .await?;
    let (current, longest) = streaks(&days, today);
    Ok(Some(Stats {
        project: project.to_owned(),
        user_id: user.to_owned(),
        courses_enrolled: enrolled,
        courses_completed: completed,
        learning_time_s,
        quizzes_taken: taken,
        quizzes_passed: passed,
        average_quiz_score: average(score_sum, attempts),
        points: points.unwrap_or(0),
        badges,
        current_streak_days: current,
        longest_streak_days: longest,
        active_days: days.len(),
        first_seen_at,
        last_activity_at,
    }))
}

/// The mean quiz score over every attempt: the sum of their percentages over their number.
fn average(score_sum: Option<f64>, attempts: Option<i64>) -> Option<f64> {
    match (score_sum, attempts) {
        (Some(sum), Some(n)) if n > 0 => Some(sum / n as f64),
        _ => None,
    }
}

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

/// A learner's progress over all their courses.
#[derive(Debug, PartialEq, Serialize)]
pub struct Overall {
    pub courses: usize,
    pub enrolled: usize,
    pub in_progress: usize,
    pub completed: usize,
    pub lessons_completed: i64,
    /// Over the courses whose lesson count the catalog knows.
    pub progress_pct: Option<f64>,
}

/// A learner's progress, overall and per course.
#[derive(Debug, PartialEq, Serialize)]
pub struct UserProgress {
    pub project: String,
    pub user_id: String,
    pub overall: Overall,
    pub courses: Vec<Progress>,
}

/// `user`'s progress (an unknown learner has no courses).
pub async fn progress(pool: &sqlx::PgPool, project: &str, user: &str) -> Result<UserProgress, ApiError> {
    let courses = user_progress(pool, project, user).await?;
    Ok(UserProgress {
        project: project.to_owned(),
        user_id: user.to_owned(),
        overall: overall(&courses),
        courses,
    })
}

/// The sums of `courses`: how many in each status, lessons completed, and the share of lessons
/// completed in the courses whose total is known.
pub fn overall(courses: &[Progress]) -> Overall {
    let count = |status: &str| courses.iter().filter(|c| c.status == status).count();
    let known: Vec<_> = courses
        .iter()
        .filter(|c| c.total_lessons.is_some_and(|t| t > 0))
        .collect();
    let known_total: i64 = known.iter().map(|c| i64::from(c.total_lessons.unwrap_or(0))).sum();
    let known_done: i64 = known.iter().map(|c| c.lessons_completed).sum();
    Overall {
        courses: courses.len(),
        enrolled: count("enrolled"),
        in_progress: count("in_progress"),
        completed: count("completed"),
        lessons_completed: courses.iter().map(|c| c.lessons_completed).sum(),
        progress_pct: (known_total > 0).then(|| known_done as f64 / known_total as f64 * 100.0),
    }
}

/// A lesson of a learning path.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lesson {
    pub module_id: Option<String>,
    pub lesson_id: String,
    pub completed: bool,
    /// Seconds.
    pub time_spent: i64,
    pub last_accessed: DateTime<Utc>,
}

/// A learner's path in a course, shaped as MongoDB's `student_learning_paths` documents.
/// `preferences` is the seeds' field, which no event sets: always `{}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LearningPath {
    pub project: String,
    pub student_id: String,
    pub course_id: String,
    pub learning_path: Vec<Lesson>,
    pub preferences: serde_json::Map<String, serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

/// A lesson of a learning path: module, lesson, completed, seconds spent, last accessed.
type LessonRow = (Option<String>, String, bool, i64, DateTime<Utc>);

/// `user`'s path in `course`, in module then lesson order; `None` when they have no lesson there.
pub async fn learning_path(
    pool: &sqlx::PgPool,
    project: &str,
    user: &str,
    course: &str,
) -> Result<Option<LearningPath>, ApiError> {
    let lessons: Vec<LessonRow> = sqlx::query_as(
        "select module_id, lesson_id, completed_at is not null, time_spent_s, last_accessed_at
           from lesson_progress where project = $1 and user_key = $2 and course_id = $3
          order by module_id nulls first, lesson_id",
    )
    .bind(project)
    .bind(user)
    .bind(course)
    .fetch_all(pool)
    .await?;
    let Some(updated_at) = lessons.iter().map(|l| l.4).max() else {
        return Ok(None);
    };
    Ok(Some(LearningPath {
        project: project.to_owned(),
        student_id: user.to_owned(),
        course_id: course.to_owned(),
        learning_path: lessons
            .into_iter()
            .map(|(module_id, lesson_id, completed, time_spent, last_accessed)| Lesson {
                module_id,
                lesson_id,
                completed,
                time_spent,
                last_accessed,
            })
            .collect(),
        preferences: serde_json::Map::new(),
        updated_at,
    }))
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

    #[test]
    fn the_average_quiz_score_is_over_attempts_and_unknown_without_any() {
        assert_eq!(average(Some(150.0), Some(3)), Some(50.0));
        assert_eq!(average(None, None), None);
        assert_eq!(average(Some(0.0), Some(0)), None);
    }

    #[test]
    fn overall_progress_counts_statuses_and_only_known_totals() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let course = |status: &'static str, done: i64, total: Option<i32>| Progress {
            course_id: "c".into(),
            user_id: "u".into(),
            title: None,
            lessons_completed: done,
            total_lessons: total,
            progress_pct: None,
            status,
            enrolled_at: None,
            completed_at: None,
            last_accessed_at: at,
            lessons_touched: 0,
        };
        let courses = [
            course("completed", 4, Some(4)),
            course("in_progress", 1, Some(4)),
            course("in_progress", 3, None),
            course("enrolled", 0, Some(0)),
        ];
        assert_eq!(
            overall(&courses),
            Overall {
                courses: 4,
                enrolled: 1,
                in_progress: 2,
                completed: 1,
                lessons_completed: 8,
                progress_pct: Some(62.5),
            }
        );
        assert_eq!(overall(&[]).progress_pct, None);
    }
}
