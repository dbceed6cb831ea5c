//! MongoDB `student_learning_paths`: one document per (project, student, course), shaped as in the
//! seeds (`studentId`, `courseId`, `learningPath: [{moduleId, lessonId, completed, timeSpent,
//! lastAccessed}]`, `preferences`), a projection of `lesson_progress` in PostgreSQL.
//!
//! The rollup transaction only marks the pairs it changed (`learning_path_dirty`); this flusher
//! rewrites each marked document whole every flush interval, so a learner who completes forty
//! lessons in a minute costs one upsert a interval, not forty, and the write path stays close to
//! one MongoDB insert per event. One flusher runs at a time across all workers (a PostgreSQL
//! advisory lock): two of them could otherwise write an older snapshot over a newer one. A mark
//! is deleted only if its version is still the one read, so a pair marked again meanwhile is
//! rewritten at the next flush; a crash between the upsert and the delete only rewrites it again.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use common::documents::{learning_path_id, LEARNING_PATHS};
use futures::{stream, StreamExt as _, TryStreamExt as _};
use mongodb::{
    bson::{self, doc, Document},
    Collection, Database,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Upserts in flight at once.
const CONCURRENCY: usize = 8;
/// The advisory lock that makes one flusher run at a time (an arbitrary constant).
const FLUSH_LOCK: i64 = 0x6c70_6174_6873; // "lpaths"

type LessonRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    i64,
    DateTime<Utc>,
);

/// Flushes every `interval` until `shutdown`.
pub async fn run(pool: PgPool, db: Database, interval: Duration, max: i64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        match flush(&pool, &db, max).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("workers_learning_paths_written_total").increment(n as u64);
                metrics::histogram!("workers_stage_duration_seconds", "stage" => "paths")
                    .record(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot rewrite learning paths; retrying at the next flush"
                )
            }
        }
    }
}

/// Rewrites up to `max` marked learning paths; how many marks it cleared (0 when none are left
/// or another worker holds the flush lock).
pub async fn flush(pool: &PgPool, db: &Database, max: i64) -> anyhow::Result<usize> {
    // A transaction-scoped lock: released at commit, rollback or a dropped connection, so no
    // error path can hand a pooled connection back to the pool still holding it.
    let mut lock = pool
        .begin()
        .await
        .context("no PostgreSQL connection for the flush lock")?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(FLUSH_LOCK)
        .fetch_one(&mut *lock)
        .await
        .context("cannot take the learning-path flush lock")?;
    if !locked {
        return Ok(0);
    }
    let written = flush_locked(pool, db, max).await?;
    lock.commit()
        .await
        .context("cannot release the learning-path flush lock")?;
    Ok(written)
}

async fn flush_locked(pool: &PgPool, db: &Database, max: i64) -> anyhow::Result<usize> {
    let marked: Vec<(String, String, String, i64)> = sqlx::query_as(
        "select project, user_key, course_id, version from learning_path_dirty order by version limit $1",
    )
    .bind(max)
    .fetch_all(pool)
    .await
    .context("cannot read the learning paths to rewrite")?;
    if marked.is_empty() {
        return Ok(0);
    }
    let (mut projects, mut users, mut courses, mut versions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (project, user, course, version) in &marked {
        projects.push(project.as_str());
        users.push(user.as_str());
        courses.push(course.as_str());
        versions.push(*version);
    }
    let rows: Vec<LessonRow> = sqlx::query_as(
        "select l.project, l.user_key, l.course_id, l.lesson_id, l.module_id, l.completed_at, l.time_spent_s, l.last_accessed_at
           from lesson_progress l
           join unnest($1::text[], $2::text[], $3::text[]) as t(project, user_key, course_id)
             on (l.project, l.user_key, l.course_id) = (t.project, t.user_key, t.course_id)
          order by l.project, l.user_key, l.course_id, l.module_id nulls first, l.lesson_id",
    )
    .bind(&projects)
    .bind(&users)
    .bind(&courses)
    .fetch_all(pool)
    .await
    .context("cannot read lesson progress")?;
    let documents = documents(rows);
    write(db, &documents).await?;
    sqlx::query(
        "delete from learning_path_dirty d
          using unnest($1::text[], $2::text[], $3::text[], $4::int8[]) as t(project, user_key, course_id, version)
          where (d.project, d.user_key, d.course_id, d.version) = (t.project, t.user_key, t.course_id, t.version)",
    )
    .bind(&projects)
    .bind(&users)
    .bind(&courses)
    .bind(&versions)
    .execute(pool)
    .await
    .context("cannot clear the rewritten learning paths' marks")?;
    Ok(marked.len())
}

/// The `learningPath` array of each (project, student, course), in module then lesson order.
pub fn documents(rows: Vec<LessonRow>) -> BTreeMap<(String, String, String), Vec<Document>> {
    let mut documents: BTreeMap<(String, String, String), Vec<Document>> = BTreeMap::new();
    for (project, user, course, lesson, module, completed_at, time_spent, last_accessed) in rows {
        documents.entry((project, user, course)).or_default().push(doc! {
            "moduleId": module,
            "lessonId": lesson,
            "completed": completed_at.is_some(),
            "timeSpent": time_spent,
            "lastAccessed": bson::DateTime::from_millis(last_accessed.timestamp_millis()),
        });
    }
    documents
}

/// Upserts each document whole (`$set`), by its structured `_id`.
async fn write(db: &Database, documents: &BTreeMap<(String, String, String), Vec<Document>>) -> anyhow::Result<()> {
    let paths: Collection<Document> = db.collection(LEARNING_PATHS);
    let writes: Vec<_> = documents
        .iter()
        .map(|((project, user, course), path)| upsert(&paths, project, user, course, path))
        .collect();
    stream::iter(writes)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn upsert(
    paths: &Collection<Document>,
    project: &str,
    user: &str,
    course: &str,
    path: &[Document],
) -> anyhow::Result<()> {
    let now = bson::DateTime::from_millis(Utc::now().timestamp_millis());
    paths
        .update_one(
            doc! {"_id": learning_path_id(project, user, course)},
            doc! {
                "$set": {"project": project, "studentId": user, "courseId": course, "learningPath": path, "updatedAt": now},
                "$setOnInsert": {"preferences": {}},
            },
        )
        .upsert(true)
        .await
        .with_context(|| format!("cannot update the learning path of {user} in {course}"))?;
    Ok(())
}
