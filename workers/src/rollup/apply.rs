//! Writes a [`Delta`] into PostgreSQL inside the caller's transaction: one bulk statement per table
//! (`insert … select from unnest(…) on conflict do update`), merging exactly as [`Delta::add`]
//! does — counters add, earliest/latest times take the min/max, flags OR — so applying the deltas
//! of two halves equals applying the delta of the whole.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, Transaction};

use super::{bitmaps, Delta};
use crate::identity;
use crate::ordinals::Ordinals;

/// Applies `delta` (the users in it have ordinals in `ords`, and so have the other ids of its
/// links). The distinct-count bitmaps come after the other rows: they are the most contended
/// between workers; identities (`crate::identity`) come last, under their project lock.
pub async fn apply(tx: &mut Transaction<'_, Postgres>, delta: &Delta, ords: &Ordinals) -> sqlx::Result<()> {
    apply_known(tx, delta, ords, None).await
}

/// [`apply`], skipping the identifications `known` shows cannot move.
pub async fn apply_known(
    tx: &mut Transaction<'_, Postgres>,
    delta: &Delta,
    ords: &Ordinals,
    known: Option<&identity::Known>,
) -> sqlx::Result<()> {
    apply_rows(tx, delta).await?;
    let mut changes = bitmaps::from_delta(delta, ords);
    bitmaps::first_days(tx, delta, ords, &mut changes).await?;
    bitmaps::merge(tx, &changes).await?;
    identity::update(tx, delta, known).await?;
    Ok(())
}

/// Every rollup of `delta` but the bitmaps.
pub async fn apply_rows(tx: &mut Transaction<'_, Postgres>, delta: &Delta) -> sqlx::Result<()> {
    if !delta.active.is_empty() {
        let mut c = columns!(project: &'a str, day: NaiveDate, user: &'a str);
        for (project, day, user) in &delta.active {
            c.project.push(project);
            c.day.push(*day);
            c.user.push(user);
        }
        sqlx::query(
            "insert into daily_active_users (project, day, user_key)
             select * from unnest($1::text[], $2::date[], $3::text[])
             on conflict do nothing",
        )
        .bind(&c.project)
        .bind(&c.day)
        .bind(&c.user)
        .execute(&mut **tx)
        .await?;
    }

    for (table, column, counts) in [
        ("daily_event_counts", "event", &delta.event_counts),
        ("daily_page_views", "page", &delta.page_views),
    ] {
        if counts.is_empty() {
            continue;
        }
        let value = if table == "daily_event_counts" {
            "events"
        } else {
            "views"
        };
        let mut c = columns!(project: &'a str, day: NaiveDate, key: &'a str, n: i64);
        for ((project, day, key), n) in counts {
            c.project.push(project);
            c.day.push(*day);
            c.key.push(key);
            c.n.push(*n);
        }
        sqlx::query(&format!(
            "insert into {table} (project, day, {column}, {value})
             select * from unnest($1::text[], $2::date[], $3::text[], $4::bigint[])
             on conflict (project, day, {column}) do update set {value} = {table}.{value} + excluded.{value}"
        ))
        .bind(&c.project)
        .bind(&c.day)
        .bind(&c.key)
        .bind(&c.n)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.course_days.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, day: NaiveDate, views: i64, interactions: i64, enrollments: i64,
            lessons: i64, completions: i64, time: i64);
        for ((project, course, day), d) in &delta.course_days {
            c.project.push(project);
            c.course.push(course);
            c.day.push(*day);
            c.views.push(d.views);
            c.interactions.push(d.interactions);
            c.enrollments.push(d.enrollments);
            c.lessons.push(d.lesson_completions);
            c.completions.push(d.course_completions);
            c.time.push(d.time_spent_s);
        }
        sqlx::query(
            "insert into course_daily (project, course_id, day, views, interactions, enrollments, lesson_completions,
                                       course_completions, time_spent_s)
             select * from unnest($1::text[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[],
                                  $7::bigint[], $8::bigint[], $9::bigint[])
             on conflict (project, course_id, day) do update set
                views = course_daily.views + excluded.views,
                interactions = course_daily.interactions + excluded.interactions,
                enrollments = course_daily.enrollments + excluded.enrollments,
                lesson_completions = course_daily.lesson_completions + excluded.lesson_completions,
                course_completions = course_daily.course_completions + excluded.course_completions,
                time_spent_s = course_daily.time_spent_s + excluded.time_spent_s",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.day)
        .bind(&c.views)
        .bind(&c.interactions)
        .bind(&c.enrollments)
        .bind(&c.lessons)
        .bind(&c.completions)
        .bind(&c.time)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.module_completions.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, day: NaiveDate, module: &'a str, n: i64);
        for ((project, course, day, module), n) in &delta.module_completions {
            c.project.push(project);
            c.course.push(course);
            c.day.push(*day);
            c.module.push(module);
            c.n.push(*n);
        }
        sqlx::query(
            "insert into course_module_daily (project, course_id, day, module_id, lesson_completions)
             select * from unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::bigint[])
             on conflict (project, course_id, day, module_id) do update
                set lesson_completions = course_module_daily.lesson_completions + excluded.lesson_completions",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.day)
        .bind(&c.module)
        .bind(&c.n)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.enrollments.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, user: &'a str, enrolled: Option<DateTime<Utc>>,
            completed: Option<DateTime<Utc>>, first: DateTime<Utc>, last: DateTime<Utc>);
        for ((project, course, user), e) in &delta.enrollments {
            c.project.push(project);
            c.course.push(course);
            c.user.push(user);
            c.enrolled.push(e.enrolled_at);
            c.completed.push(e.completed_at);
            c.first.push(e.first_activity_at);
            c.last.push(e.last_accessed_at);
        }
        sqlx::query(
            "insert into enrollments (project, course_id, user_key, enrolled_at, completed_at, first_activity_at,
                                      last_accessed_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                                  $6::timestamptz[], $7::timestamptz[])
             on conflict (project, course_id, user_key) do update set
                enrolled_at = least(enrollments.enrolled_at, excluded.enrolled_at),
                completed_at = least(enrollments.completed_at, excluded.completed_at),
                first_activity_at = least(enrollments.first_activity_at, excluded.first_activity_at),
                last_accessed_at = greatest(enrollments.last_accessed_at, excluded.last_accessed_at)",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.user)
        .bind(&c.enrolled)
        .bind(&c.completed)
        .bind(&c.first)
        .bind(&c.last)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.lessons.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, course: &'a str, lesson: &'a str, module: Option<&'a str>,
            completed: Option<DateTime<Utc>>, time: i64, percent: Option<f64>, last: DateTime<Utc>);
        for ((project, user, course, lesson), l) in &delta.lessons {
            c.project.push(project);
            c.user.push(user);
            c.course.push(course);
            c.lesson.push(lesson);
            c.module.push(l.module_id.as_deref());
            c.completed.push(l.completed_at);
            c.time.push(l.time_spent_s);
            c.percent.push(l.video_percent);
            c.last.push(l.last_accessed_at);
        }
        sqlx::query(
            "insert into lesson_progress (project, user_key, course_id, lesson_id, module_id, completed_at,
                                          time_spent_s, video_percent, last_accessed_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                                  $7::bigint[], $8::float8[], $9::timestamptz[])
             on conflict (project, user_key, course_id, lesson_id) do update set
                module_id = greatest(lesson_progress.module_id, excluded.module_id),
                completed_at = least(lesson_progress.completed_at, excluded.completed_at),
                time_spent_s = lesson_progress.time_spent_s + excluded.time_spent_s,
                video_percent = greatest(lesson_progress.video_percent, excluded.video_percent),
                last_accessed_at = greatest(lesson_progress.last_accessed_at, excluded.last_accessed_at)",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.course)
        .bind(&c.lesson)
        .bind(&c.module)
        .bind(&c.completed)
        .bind(&c.time)
        .bind(&c.percent)
        .bind(&c.last)
        .execute(&mut **tx)
        .await?;
    }

    // The learning paths these lessons belong to are now out of date (paths.rs rewrites them).
    let pairs: std::collections::BTreeSet<(&str, &str, &str)> = delta
        .lessons
        .keys()
        .map(|(project, user, course, _)| (project.as_str(), user.as_str(), course.as_str()))
        .collect();
    if !pairs.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, course: &'a str);
        for (project, user, course) in pairs {
            c.project.push(project);
            c.user.push(user);
            c.course.push(course);
        }
        sqlx::query(
            "insert into learning_path_dirty (project, user_key, course_id)
             select * from unnest($1::text[], $2::text[], $3::text[])
             on conflict (project, user_key, course_id) do update set version = excluded.version",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.course)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.quizzes.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, quiz: &'a str, course: Option<&'a str>, attempts: i64, score: f64, passed: bool);
        for ((project, user, quiz), q) in &delta.quizzes {
            c.project.push(project);
            c.user.push(user);
            c.quiz.push(quiz);
            c.course.push(q.course_id.as_deref());
            c.attempts.push(q.attempts);
            c.score.push(q.score_pct_sum);
            c.passed.push(q.passed);
        }
        sqlx::query(
            "insert into user_quizzes (project, user_key, quiz_id, course_id, attempts, score_pct_sum, passed)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[], $7::bool[])
             on conflict (project, user_key, quiz_id) do update set
                course_id = coalesce(user_quizzes.course_id, excluded.course_id),
                attempts = user_quizzes.attempts + excluded.attempts,
                score_pct_sum = user_quizzes.score_pct_sum + excluded.score_pct_sum,
                passed = user_quizzes.passed or excluded.passed",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.quiz)
        .bind(&c.course)
        .bind(&c.attempts)
        .bind(&c.score)
        .bind(&c.passed)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.badges.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, badge: &'a str, points: i64, earned: DateTime<Utc>);
        for ((project, user, badge), b) in &delta.badges {
            c.project.push(project);
            c.user.push(user);
            c.badge.push(badge);
            c.points.push(b.points);
            c.earned.push(b.earned_at);
        }
        sqlx::query(
            "insert into user_badges (project, user_key, badge_id, points, earned_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
             on conflict (project, user_key, badge_id) do update
                set points = excluded.points, earned_at = excluded.earned_at
                where excluded.earned_at < user_badges.earned_at",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.badge)
        .bind(&c.points)
        .bind(&c.earned)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.users.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, time: i64, events: i64, first: DateTime<Utc>, last: DateTime<Utc>);
        for ((project, user), u) in &delta.users {
            c.project.push(project);
            c.user.push(user);
            c.time.push(u.learning_time_s);
            c.events.push(u.events);
            c.first.push(u.first_seen_at);
            c.last.push(u.last_activity_at);
        }
        sqlx::query(
            "insert into user_stats (project, user_key, learning_time_s, events, first_seen_at, last_activity_at)
             select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
             on conflict (project, user_key) do update set
                learning_time_s = user_stats.learning_time_s + excluded.learning_time_s,
                events = user_stats.events + excluded.events,
                first_seen_at = least(user_stats.first_seen_at, excluded.first_seen_at),
                last_activity_at = greatest(user_stats.last_activity_at, excluded.last_activity_at)",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.time)
        .bind(&c.events)
        .bind(&c.first)
        .bind(&c.last)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.catalog.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, title: Option<&'a str>, title_at: Option<DateTime<Utc>>,
            total: Option<i32>, total_at: Option<DateTime<Utc>>, instructor: Option<&'a str>,
            instructor_at: Option<DateTime<Utc>>, items: Option<String>, items_at: Option<DateTime<Utc>>,
            updated: DateTime<Utc>);
        for ((project, course), e) in &delta.catalog {
            c.project.push(project);
            c.course.push(course);
            c.title.push(e.title.as_ref().map(|(t, _)| t.as_str()));
            c.title_at.push(e.title.as_ref().map(|(_, at)| *at));
            c.total.push(e.total_lessons.map(|(n, _)| n));
            c.total_at.push(e.total_lessons.map(|(_, at)| at));
            c.instructor.push(e.instructor_id.as_ref().map(|(i, _)| i.as_str()));
            c.instructor_at.push(e.instructor_id.as_ref().map(|(_, at)| *at));
            c.items
                .push(e.items.as_ref().map(|(items, _)| serde_json::json!(items).to_string()));
            c.items_at.push(e.items.as_ref().map(|(_, at)| *at));
            c.updated.push(e.updated_at);
        }
        // Each field: the later of the stored and the new (event time, then value, compared as
        // bytes like Rust's `Ord` for strings), as `CatalogEntry::merge` does within a batch. Every
        // right-hand side of an UPDATE sees the old row, so value and time move together.
        let later = |value: &str, at: &str, order: &str| {
            let newer = format!(
                "excluded.{at} is not null and (courses.{at} is null
                 or (excluded.{at}, excluded.{value}{order}) > (courses.{at}, courses.{value}{order}))"
            );
            format!(
                "{value} = case when {newer} then excluded.{value} else courses.{value} end,
                 {at} = case when {newer} then excluded.{at} else courses.{at} end"
            )
        };
        let sql = format!(
            "insert into courses (project, course_id, title, title_at, total_lessons, total_lessons_at,
                                  instructor_id, instructor_at, items, items_at, updated_at)
             select p, c, t, ta, n, na, i, ia,
                    array(select e from jsonb_array_elements_text(its::jsonb) with ordinality as x(e, o) order by o),
                    itsa, u
               from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::timestamptz[],
                           $7::text[], $8::timestamptz[], $9::text[], $10::timestamptz[], $11::timestamptz[])
                    as r(p, c, t, ta, n, na, i, ia, its, itsa, u)
             on conflict (project, course_id) do update set {}, {}, {}, {},
                updated_at = greatest(courses.updated_at, excluded.updated_at)",
            later("title", "title_at", r#" collate "C""#),
            later("total_lessons", "total_lessons_at", ""),
            later("instructor_id", "instructor_at", r#" collate "C""#),
            later("items", "items_at", r#"::text[] collate "C""#),
        );
        sqlx::query(&sql)
            .bind(&c.project)
            .bind(&c.course)
            .bind(&c.title)
            .bind(&c.title_at)
            .bind(&c.total)
            .bind(&c.total_at)
            .bind(&c.instructor)
            .bind(&c.instructor_at)
            .bind(&c.items)
            .bind(&c.items_at)
            .bind(&c.updated)
            .execute(&mut **tx)
            .await?;
    }
    if !delta.groups.is_empty() {
        let mut c =
            columns!(project: &'a str, group: &'a str, traits: String, updated: DateTime<Utc>, message: &'a str);
        for ((project, group), g) in &delta.groups {
            c.project.push(project);
            c.group.push(group);
            c.traits.push(serde_json::Value::Object(g.traits.clone()).to_string());
            c.updated.push(g.updated_at);
            c.message.push(&g.message_id);
        }
        // The latest call wins by (event time, messageId), compared bytewise as in the Delta.
        sqlx::query(
            "insert into groups (project, group_id, traits, updated_at, message_id)
             select p, g, t::jsonb, u, m
               from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) as x(p, g, t, u, m)
             on conflict (project, group_id) do update set
                traits = excluded.traits, updated_at = excluded.updated_at, message_id = excluded.message_id
                where (excluded.updated_at, excluded.message_id collate \"C\") > (groups.updated_at, groups.message_id collate \"C\")",
        )
        .bind(&c.project)
        .bind(&c.group)
        .bind(&c.traits)
        .bind(&c.updated)
        .bind(&c.message)
        .execute(&mut **tx)
        .await?;
    }

    if !delta.memberships.is_empty() {
        let mut c = columns!(project: &'a str, group: &'a str, user: &'a str, joined: DateTime<Utc>);
        for ((project, group, user), joined) in &delta.memberships {
            c.project.push(project);
            c.group.push(group);
            c.user.push(user);
            c.joined.push(*joined);
        }
        sqlx::query(
            "insert into group_members (project, group_id, user_key, joined_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
             on conflict (project, group_id, user_key) do update set joined_at = excluded.joined_at
                where excluded.joined_at < group_members.joined_at",
        )
        .bind(&c.project)
        .bind(&c.group)
        .bind(&c.user)
        .bind(&c.joined)
        .execute(&mut **tx)
        .await?;
    }
    super::learning::apply(tx, &delta.learning).await?;
    Ok(())
}
