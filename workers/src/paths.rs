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
//!
//! A pair's first document is inserted with the other new ones in one bulk `insert_many` (an
//! upsert costs the MongoDB server a lookup and a write per document) and recorded in
//! `learning_paths_written` (migrations/0007); recorded pairs are upserted. A document that
//! exists unrecorded (a crash between the insert and the record, an earlier version's document)
//! meets a duplicate key on insert and is upserted instead. The flusher runs every interval while
//! events keep coming, and 200 ms after the worker's pipeline empties (workers/tests/paths.rs).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use common::documents::{learning_path_id, LEARNING_PATHS};
use futures::{stream, StreamExt as _, TryStreamExt as _};
use mongodb::{
    bson::{self, doc, Document},
    error::ErrorKind,
    Collection, Database,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::DUPLICATE_KEY;

/// Upserts in flight at once.
const CONCURRENCY: usize = 8;
/// New documents per `insert_many`.
const INSERT_CHUNK: usize = 1_000;

/// (project, student, course).
type Pair = (String, String, String);
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

/// When the flusher writes.
pub struct Schedule<Q> {
    /// At most once per interval while events keep coming.
    pub interval: Duration,
    /// Marks read per flush.
    pub max: i64,
    /// How long the worker's pipeline has been empty, if it is: once it has been for
    /// [`QUIET`], the flusher writes at once rather than at the end of the interval, so a
    /// stream that goes quiet leaves no learning path out of date for long.
    pub quiet: Q,
}

/// How long the pipeline must be empty before a quiet flush.
const QUIET: Duration = Duration::from_millis(200);

/// Flushes on `schedule` until `shutdown`.
pub async fn run<Q>(pool: PgPool, db: Database, schedule: Schedule<Q>, shutdown: CancellationToken)
where
    Q: Fn() -> Option<Duration>,
{
    let mut poll = tokio::time::interval(QUIET / 2);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    // One quiet flush per quiet period: set once it ran, cleared when messages come again.
    let mut flushed_quiet = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = poll.tick() => {}
        }
        let quiet = (schedule.quiet)();
        if quiet.is_none() {
            flushed_quiet = false;
        }
        let due = last.elapsed() >= schedule.interval;
        let quiet_due = !flushed_quiet && quiet.is_some_and(|q| q >= QUIET);
        if !due && !quiet_due {
            continue;
        }
        last = tokio::time::Instant::now();
        flushed_quiet |= quiet_due;
        let max = schedule.max;
        let started = std::time::Instant::now();
        match flush(&pool, &db, max).await {
            Ok(0) => {}
            Ok(n) => {
                // More marks than one flush reads: go on at the next poll while quiet.
                if n as i64 >= max {
                    flushed_quiet = false;
                }
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
    let written: HashSet<Pair> = sqlx::query_as(
        "select w.project, w.user_key, w.course_id
           from learning_paths_written w
           join unnest($1::text[], $2::text[], $3::text[]) as t(project, user_key, course_id)
             on (w.project, w.user_key, w.course_id) = (t.project, t.user_key, t.course_id)",
    )
    .bind(&projects)
    .bind(&users)
    .bind(&courses)
    .fetch_all(pool)
    .await
    .context("cannot read which learning paths have a document")?
    .into_iter()
    .collect();
    let documents = documents(rows);
    let inserted = write(db, &documents, &written).await?;
    if !inserted.is_empty() {
        let (mut projects, mut users, mut courses) = (Vec::new(), Vec::new(), Vec::new());
        for (project, user, course) in inserted {
            projects.push(project.as_str());
            users.push(user.as_str());
            courses.push(course.as_str());
        }
        sqlx::query(
            "insert into learning_paths_written (project, user_key, course_id)
             select * from unnest($1::text[], $2::text[], $3::text[])
             on conflict do nothing",
        )
        .bind(&projects)
        .bind(&users)
        .bind(&courses)
        .execute(pool)
        .await
        .context("cannot record the learning paths inserted")?;
    }
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
pub fn documents(rows: Vec<LessonRow>) -> BTreeMap<Pair, Vec<Document>> {
    let mut documents: BTreeMap<Pair, Vec<Document>> = BTreeMap::new();
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

/// Writes each document whole: the pairs without a document yet (not in `written`) in bulk
/// inserts, the others (and any insert that meets an existing document) by an upsert on their
/// structured `_id`. Returns the pairs it inserted.
async fn write<'a>(
    db: &Database,
    documents: &'a BTreeMap<Pair, Vec<Document>>,
    written: &HashSet<Pair>,
) -> anyhow::Result<Vec<&'a Pair>> {
    let paths: Collection<Document> = db.collection(LEARNING_PATHS);
    let now = bson::DateTime::from_millis(Utc::now().timestamp_millis());
    let (known, fresh): (Vec<_>, Vec<_>) = documents.iter().partition(|(pair, _)| written.contains(*pair));
    let mut upserts: Vec<(&Pair, &[Document])> = known.into_iter().map(|(p, d)| (p, d.as_slice())).collect();
    let mut inserted = Vec::with_capacity(fresh.len());
    for chunk in fresh.chunks(INSERT_CHUNK) {
        let whole: Vec<Document> = chunk
            .iter()
            .map(|((project, user, course), path)| {
                doc! {
                    "_id": learning_path_id(project, user, course),
                    "project": project, "studentId": user, "courseId": course,
                    "learningPath": path, "updatedAt": now, "preferences": {},
                }
            })
            .collect();
        let existing: HashSet<usize> = match paths.insert_many(whole).ordered(false).await {
            Ok(_) => HashSet::new(),
            Err(error) => match *error.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_deref()
                            .unwrap_or_default()
                            .iter()
                            .all(|e| e.code == DUPLICATE_KEY) =>
                {
                    failure.write_errors.iter().flatten().map(|e| e.index).collect()
                }
                _ => return Err(anyhow::Error::new(error).context("cannot insert learning paths")),
            },
        };
        for (n, (pair, path)) in chunk.iter().enumerate() {
            if existing.contains(&n) {
                upserts.push((pair, path.as_slice()));
            } else {
                inserted.push(*pair);
            }
        }
    }
    let upserts: Vec<_> = upserts
        .into_iter()
        .map(|((project, user, course), path)| upsert(&paths, project, user, course, path, now))
        .collect();
    stream::iter(upserts)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(inserted)
}

async fn upsert(
    paths: &Collection<Document>,
    project: &str,
    user: &str,
    course: &str,
    path: &[Document],
    now: bson::DateTime,
) -> anyhow::Result<()> {
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
