//! The `_id` lookup index the workers add to FerretDB's PostgreSQL backend (workers/src/ferretdb.rs):
//! created once, idempotent, and used by the query FerretDB sends for a lookup by `_id`. Runs
//! where the servers are FerretDB on PostgreSQL (`./scripts/services`' default), which sets
//! `WORKERS_FERRETDB_POSTGRESQL_URL`; with mongod or FerretDB on SQLite there is nothing to test.

use common::documents::LEARNING_PATHS;
use mongodb::bson::{doc, Document};
use sqlx::Connection as _;
use test_support::TestEnv;

#[tokio::test]
async fn lookups_by_id_use_the_gin_index_on_the_postgresql_backend() {
    let Ok(url) = std::env::var("WORKERS_FERRETDB_POSTGRESQL_URL") else {
        eprintln!("WORKERS_FERRETDB_POSTGRESQL_URL is unset: not FerretDB on PostgreSQL; nothing to test");
        return;
    };
    let env = TestEnv::new().await;
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let db = mongo.database(&env.mongo_db);
    // Twice, and two at once: starting workers race on it.
    let (a, b) = tokio::join!(
        workers::ferretdb::index_id_lookups(&url, &db, &[LEARNING_PATHS]),
        workers::ferretdb::index_id_lookups(&url, &db, &[LEARNING_PATHS]),
    );
    a.unwrap();
    b.unwrap();
    workers::ferretdb::index_id_lookups(&url, &db, &[LEARNING_PATHS])
        .await
        .unwrap();

    let paths = db.collection::<Document>(LEARNING_PATHS);
    let docs: Vec<Document> = (0..2_000).map(|i| doc! {"_id": format!("p:u{i}:c1"), "n": i}).collect();
    paths.insert_many(docs).await.unwrap();

    let mut pg = sqlx::PgConnection::connect(&url).await.unwrap();
    let table: String = sqlx::query_scalar(&format!(
        r#"select _jsonb->>'table' from "{}"._ferretdb_database_metadata where _jsonb->>'_id' = $1"#,
        env.mongo_db
    ))
    .bind(LEARNING_PATHS)
    .fetch_one(&mut pg)
    .await
    .unwrap();
    let indexes: Vec<String> =
        sqlx::query_scalar("select indexname from pg_indexes where schemaname = $1 and tablename = $2")
            .bind(&env.mongo_db)
            .bind(&table)
            .fetch_all(&mut pg)
            .await
            .unwrap();
    assert_eq!(
        indexes.iter().filter(|i| i.ends_with("_id_gin")).count(),
        1,
        "one GIN index, whatever the races: {indexes:?}"
    );
    sqlx::query(&format!(r#"analyze "{}"."{table}""#, env.mongo_db))
        .execute(&mut pg)
        .await
        .unwrap();
    // The statement FerretDB 1.24 sends for find({_id: X}) (query.go, filterEqual), parameters
    // bound as PostgreSQL plans it.
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        r#"explain select _jsonb from "{}"."{table}" where _jsonb->'_id' @> '"p:u1234:c1"'"#,
        env.mongo_db
    ))
    .fetch_all(&mut pg)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("_id_gin"), "the lookup does not use the index:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "the lookup scans:\n{plan}");
    // And FerretDB itself still answers it right.
    let found = paths.find_one(doc! {"_id": "p:u1234:c1"}).await.unwrap().unwrap();
    assert_eq!(found.get_i32("n").unwrap(), 1234);
    pg.close().await.ok();
    db.drop().await.ok();
    env.cleanup().await;
}
