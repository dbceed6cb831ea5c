//! The learning-path flusher (workers/src/paths.rs) against the real servers: a pair's first
//! document goes in a bulk insert, later ones are upserts, and a document that exists without the
//! flusher's record of it (a crash between the insert and the record, or a deployment of an
//! earlier version) is rewritten all the same.

use common::documents::{learning_path_id, LEARNING_PATHS};
use mongodb::bson::{doc, Document};
use test_support::TestEnv;

async fn progress(pool: &sqlx::PgPool, user: &str, course: &str, lessons: &[(&str, bool, i64)]) {
    for (lesson, completed, spent) in lessons {
        sqlx::query(
            "insert into lesson_progress (project, user_key, course_id, lesson_id, module_id, completed_at, time_spent_s, last_accessed_at)
             values ('p1', $1, $2, $3, 'm1', case when $4 then now() end, $5, now())
             on conflict (project, user_key, course_id, lesson_id) do update
               set completed_at = excluded.completed_at, time_spent_s = excluded.time_spent_s",
        )
        .bind(user)
        .bind(course)
        .bind(lesson)
        .bind(completed)
        .bind(spent)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "insert into learning_path_dirty (project, user_key, course_id) values ('p1', $1, $2)
         on conflict (project, user_key, course_id) do update set version = nextval('learning_path_dirty_version')",
    )
    .bind(user)
    .bind(course)
    .execute(pool)
    .await
    .unwrap();
}

async fn path(paths: &mongodb::Collection<Document>, user: &str, course: &str) -> Vec<(String, bool, i64)> {
    let document = paths
        .find_one(doc! {"_id": learning_path_id("p1", user, course)})
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{user} has no learning path in {course}"));
    assert_eq!(document.get_str("studentId").unwrap(), user);
    assert!(document.get_document("preferences").is_ok());
    document
        .get_array("learningPath")
        .unwrap()
        .iter()
        .map(|l| {
            let l = l.as_document().unwrap();
            (
                l.get_str("lessonId").unwrap().to_owned(),
                l.get_bool("completed").unwrap(),
                l.get_i64("timeSpent").unwrap(),
            )
        })
        .collect()
}

async fn recorded(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from learning_paths_written")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn first_documents_are_inserted_later_ones_upserted_and_unrecorded_ones_rewritten() {
    let env = TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::migrate(&pool).await.unwrap();
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let db = mongo.database(&env.mongo_db);
    let paths = db.collection::<Document>(LEARNING_PATHS);

    // A document the flusher has no record of: left by an earlier version, or by a crash after
    // the insert and before the record.
    paths
        .insert_one(doc! {"_id": learning_path_id("p1", "u3", "c1"), "studentId": "u3", "learningPath": [], "preferences": {"theme": "dark"}})
        .await
        .unwrap();
    progress(&pool, "u1", "c1", &[("l1", true, 60), ("l2", false, 5)]).await;
    progress(&pool, "u2", "c1", &[("l1", false, 10)]).await;
    progress(&pool, "u3", "c1", &[("l1", true, 30)]).await;
    assert_eq!(workers::paths::flush(&pool, &db, 100).await.unwrap(), 3);
    assert_eq!(
        path(&paths, "u1", "c1").await,
        [("l1".into(), true, 60), ("l2".into(), false, 5)]
    );
    assert_eq!(path(&paths, "u2", "c1").await, [("l1".into(), false, 10)]);
    assert_eq!(path(&paths, "u3", "c1").await, [("l1".into(), true, 30)]);
    // The existing document was updated, not replaced: what the flusher does not own stays.
    let u3 = paths
        .find_one(doc! {"_id": learning_path_id("p1", "u3", "c1")})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        u3.get_document("preferences").unwrap().get_str("theme").unwrap(),
        "dark"
    );
    // u1 and u2 were inserted (recorded); u3 went through the upsert (not recorded: harmless).
    assert_eq!(recorded(&pool).await, 2);
    assert_eq!(
        workers::paths::flush(&pool, &db, 100).await.unwrap(),
        0,
        "every mark cleared"
    );

    // More progress: the recorded pair is upserted in place.
    progress(&pool, "u1", "c1", &[("l2", true, 40), ("l3", false, 1)]).await;
    assert_eq!(workers::paths::flush(&pool, &db, 100).await.unwrap(), 1);
    assert_eq!(
        path(&paths, "u1", "c1").await,
        [
            ("l1".into(), true, 60),
            ("l2".into(), true, 40),
            ("l3".into(), false, 1)
        ]
    );
    assert_eq!(paths.count_documents(doc! {}).await.unwrap(), 3);
    env.cleanup().await;
}
