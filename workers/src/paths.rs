//! MongoDB `student_learning_paths`: one document per (project, student, course), shaped as in the
//! seeds (`studentId`, `courseId`, `learningPath: [{moduleId, lessonId, completed, timeSpent,
//! lastAccessed}]`, `preferences`). It is a projection of `lesson_progress` in PostgreSQL, rewritten
//! whole (`$set`) after each commit for the pairs a batch touched: idempotent, and repaired by any
//! later batch or redelivery if a worker dies between the commit and this write.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::{stream, StreamExt as _, TryStreamExt as _};
use mongodb::{
    bson::{self, doc, Document},
    Collection, Database,
};

/// The MongoDB collection.
pub const COLLECTION: &str = "student_learning_paths";
use sqlx::PgPool;

/// Updates in flight at once. One `update` command carrying many upserts would save round trips,
/// but two of them from two workers at once deadlock FerretDB 1.24 (SQLite); single-document
/// upserts do not.
const CONCURRENCY: usize = 16;

type Row = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    i64,
    DateTime<Utc>,
);

/// Rewrites the learning paths of the given (project, student, course) triples from PostgreSQL.
pub async fn refresh(pool: &PgPool, db: &Database, pairs: &BTreeSet<(String, String, String)>) -> anyhow::Result<()> {
    let paths: Collection<Document> = db.collection(COLLECTION);
    let paths = &paths;
    if pairs.is_empty() {
        return Ok(());
    }
    let (mut projects, mut users, mut courses) = (Vec::new(), Vec::new(), Vec::new());
    for (project, user, course) in pairs {
        projects.push(project.as_str());
        users.push(user.as_str());
        courses.push(course.as_str());
    }
    let rows: Vec<Row> = sqlx::query_as(
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
    stream::iter(documents)
        .map(|((project, user, course), path)| async move {
            let now = bson::DateTime::from_millis(Utc::now().timestamp_millis());
            paths
                .update_one(
                    doc! {"_id": format!("{project}:{user}:{course}")},
                    doc! {
                        "$set": {"project": &project, "studentId": &user, "courseId": &course, "learningPath": path, "updatedAt": now},
                        "$setOnInsert": {"preferences": {}},
                    },
                )
                .upsert(true)
                .await
                .with_context(|| format!("cannot update the learning path of {user} in {course}"))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}
