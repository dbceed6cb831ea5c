//! `workers reconcile`: recomputes every rollup of a project from the raw events in MongoDB, with
//! the same [`Delta`] code the incremental path uses, and reports each row where PostgreSQL
//! differs. Day-keyed rollups are compared over the range; per-learner rollups (enrolments,
//! lessons, quizzes, badges, totals) for every learner active in the range, from all of that
//! learner's events. The catalog is left out: the api writes it too.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{doc, Bson};
use sqlx::PgPool;

use crate::{
    rollup::{
        delta::{Badge, CourseDay, Enrollment, Lesson, Quiz, UserTotals},
        Delta,
    },
    store::EventStore,
};

/// One row where the stored rollup differs from the recomputed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub table: &'static str,
    pub key: String,
    /// What the raw events say (`None`: no row should exist).
    pub expected: Option<String>,
    /// What PostgreSQL holds (`None`: no row).
    pub found: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(no row)".to_owned());
        write!(
            f,
            "{} {}: expected {}, found {}",
            self.table,
            self.key,
            show(&self.expected),
            show(&self.found)
        )
    }
}

/// Recomputes the rollups of `project` for `from..=to` and returns every difference.
pub async fn reconcile(
    pool: &PgPool,
    store: &EventStore,
    project: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<Difference>> {
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    let in_range = store
        .find(
            project,
            doc! {"day": {"$gte": from.to_string(), "$lte": to.to_string()}},
        )
        .await?;
    let days = Delta::from_events(&in_range);
    let users: BTreeSet<String> = in_range.iter().map(|e| e.user_key().to_owned()).collect();
    let user_list: Vec<Bson> = users.iter().map(|u| Bson::String(u.clone())).collect();
    let their_events = if users.is_empty() {
        Vec::new()
    } else {
        store
            .find(
                project,
                doc! {"$or": [{"user_id": {"$in": user_list.clone()}}, {"anonymous_id": {"$in": user_list}}]},
            )
            .await?
    };
    let learners = Delta::from_events(their_events.iter().filter(|e| users.contains(e.user_key())));
    let users: Vec<String> = users.into_iter().collect();

    let mut differences = Vec::new();
    let p = project;
    let active: Vec<(NaiveDate, String)> =
        sqlx::query_as("select day, user_key from daily_active_users where project = $1 and day between $2 and $3")
            .bind(p)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .context("cannot read daily_active_users")?;
    compare(
        &mut differences,
        "daily_active_users",
        days.active.iter().map(|(_, d, u)| ((*d, u.clone()), true)),
        active.into_iter().map(|k| (k, true)),
    );

    for (table, column, value, expected) in [
        ("daily_event_counts", "event", "events", &days.event_counts),
        ("daily_page_views", "page", "views", &days.page_views),
    ] {
        let rows: Vec<(NaiveDate, String, i64)> = sqlx::query_as(&format!(
            "select day, {column}, {value} from {table} where project = $1 and day between $2 and $3"
        ))
        .bind(p)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .with_context(|| format!("cannot read {table}"))?;
        compare(
            &mut differences,
            table,
            expected.iter().map(|((_, d, k), n)| ((*d, k.clone()), *n)),
            rows.into_iter().map(|(d, k, n)| ((d, k), n)),
        );
    }

    type CourseDayRow = (String, NaiveDate, i64, i64, i64, i64, i64, i64);
    let rows: Vec<CourseDayRow> = sqlx::query_as(
        "select course_id, day, views, interactions, enrollments, lesson_completions, course_completions, time_spent_s
           from course_daily where project = $1 and day between $2 and $3",
    )
    .bind(p)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .context("cannot read course_daily")?;
    compare(
        &mut differences,
        "course_daily",
        days.course_days.iter().map(|((_, c, d), v)| ((c.clone(), *d), *v)),
        rows.into_iter().map(
            |(c, d, views, interactions, enrollments, lesson_completions, course_completions, time_spent_s)| {
                (
                    (c, d),
                    CourseDay {
                        views,
                        interactions,
                        enrollments,
                        lesson_completions,
                        course_completions,
                        time_spent_s,
                    },
                )
            },
        ),
    );

    let rows: Vec<(String, NaiveDate, String, bool)> = sqlx::query_as(
        "select course_id, day, user_key, viewer from course_daily_users where project = $1 and day between $2 and $3",
    )
    .bind(p)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .context("cannot read course_daily_users")?;
    compare(
        &mut differences,
        "course_daily_users",
        days.course_users
            .iter()
            .map(|((_, c, d, u), v)| ((c.clone(), *d, u.clone()), *v)),
        rows.into_iter().map(|(c, d, u, v)| ((c, d, u), v)),
    );

    let rows: Vec<(String, NaiveDate, String, i64)> = sqlx::query_as(
        "select course_id, day, module_id, lesson_completions from course_module_daily
          where project = $1 and day between $2 and $3",
    )
    .bind(p)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .context("cannot read course_module_daily")?;
    compare(
        &mut differences,
        "course_module_daily",
        days.module_completions
            .iter()
            .map(|((_, c, d, m), n)| ((c.clone(), *d, m.clone()), *n)),
        rows.into_iter().map(|(c, d, m, n)| ((c, d, m), n)),
    );

    type EnrollmentRow = (
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<EnrollmentRow> = sqlx::query_as(
        "select course_id, user_key, enrolled_at, completed_at, first_activity_at, last_accessed_at
           from enrollments where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(&users)
    .fetch_all(pool)
    .await
    .context("cannot read enrollments")?;
    compare(
        &mut differences,
        "enrollments",
        learners
            .enrollments
            .iter()
            .map(|((_, c, u), v)| ((c.clone(), u.clone()), *v)),
        rows.into_iter().map(
            |(c, u, enrolled_at, completed_at, first_activity_at, last_accessed_at)| {
                (
                    (c, u),
                    Enrollment {
                        enrolled_at,
                        completed_at,
                        first_activity_at,
                        last_accessed_at,
                    },
                )
            },
        ),
    );

    type LessonRow = (
        String,
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        i64,
        Option<f64>,
        DateTime<Utc>,
    );
    let rows: Vec<LessonRow> = sqlx::query_as(
        "select user_key, course_id, lesson_id, module_id, completed_at, time_spent_s, video_percent, last_accessed_at
           from lesson_progress where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(&users)
    .fetch_all(pool)
    .await
    .context("cannot read lesson_progress")?;
    compare(
        &mut differences,
        "lesson_progress",
        learners
            .lessons
            .iter()
            .map(|((_, u, c, l), v)| ((u.clone(), c.clone(), l.clone()), v.clone())),
        rows.into_iter().map(
            |(u, c, l, module_id, completed_at, time_spent_s, video_percent, last_accessed_at)| {
                (
                    (u, c, l),
                    Lesson {
                        module_id,
                        completed_at,
                        time_spent_s,
                        video_percent,
                        last_accessed_at,
                    },
                )
            },
        ),
    );

    let rows: Vec<(String, String, Option<String>, i64, f64, bool)> = sqlx::query_as(
        "select user_key, quiz_id, course_id, attempts, score_pct_sum, passed from user_quizzes
          where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(&users)
    .fetch_all(pool)
    .await
    .context("cannot read user_quizzes")?;
    // Sums of floats may differ in their last bits with the order of addition.
    let rounded = |q: &Quiz| Quiz {
        score_pct_sum: (q.score_pct_sum * 1e6).round() / 1e6,
        ..q.clone()
    };
    compare(
        &mut differences,
        "user_quizzes",
        learners
            .quizzes
            .iter()
            .map(|((_, u, q), v)| ((u.clone(), q.clone()), rounded(v))),
        rows.into_iter()
            .map(|(u, q, course_id, attempts, score_pct_sum, passed)| {
                (
                    (u, q),
                    rounded(&Quiz {
                        course_id,
                        attempts,
                        score_pct_sum,
                        passed,
                    }),
                )
            }),
    );

    let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "select user_key, badge_id, points, earned_at from user_badges where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(&users)
    .fetch_all(pool)
    .await
    .context("cannot read user_badges")?;
    compare(
        &mut differences,
        "user_badges",
        learners
            .badges
            .iter()
            .map(|((_, u, b), v)| ((u.clone(), b.clone()), *v)),
        rows.into_iter()
            .map(|(u, b, points, earned_at)| ((u, b), Badge { points, earned_at })),
    );

    type UserRow = (String, i64, i64, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<UserRow> = sqlx::query_as(
        "select user_key, learning_time_s, events, first_seen_at, last_activity_at from user_stats
          where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(&users)
    .fetch_all(pool)
    .await
    .context("cannot read user_stats")?;
    compare(
        &mut differences,
        "user_stats",
        learners.users.iter().map(|((_, u), v)| (u.clone(), *v)),
        rows.into_iter()
            .map(|(u, learning_time_s, events, first_seen_at, last_activity_at)| {
                (
                    u,
                    UserTotals {
                        learning_time_s,
                        events,
                        first_seen_at,
                        last_activity_at,
                    },
                )
            }),
    );
    Ok(differences)
}

/// Appends a [`Difference`] for every key whose value differs between the two sides.
fn compare<K: Ord + Debug, V: PartialEq + Debug>(
    differences: &mut Vec<Difference>,
    table: &'static str,
    expected: impl IntoIterator<Item = (K, V)>,
    found: impl IntoIterator<Item = (K, V)>,
) {
    let expected: BTreeMap<K, V> = expected.into_iter().collect();
    let mut found: BTreeMap<K, V> = found.into_iter().collect();
    for (key, value) in &expected {
        match found.remove(key) {
            Some(stored) if stored == *value => {}
            stored => differences.push(Difference {
                table,
                key: format!("{key:?}"),
                expected: Some(format!("{value:?}")),
                found: stored.map(|v| format!("{v:?}")),
            }),
        }
    }
    for (key, stored) in found {
        differences.push(Difference {
            table,
            key: format!("{key:?}"),
            expected: None,
            found: Some(format!("{stored:?}")),
        });
    }
}
