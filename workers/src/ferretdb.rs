//! Indexes FerretDB 1.24's PostgreSQL backend needs but does not create, made by the workers when
//! they are told where that backend keeps its data (`WORKERS_FERRETDB_POSTGRESQL_URL`).
//!
//! FerretDB pushes an equality filter down to SQL as containment, `_jsonb->'_id' @> '"x"'`
//! (internal/backends/postgresql/query.go, `filterEqual`, at v1.24.2), while the `_id` index it
//! creates is a B-tree on `(_jsonb->'_id')`, which `@>` cannot use. So every lookup by `_id`
//! (each learning-path upsert reads its document first) scans the whole collection, detoasting
//! every document: on the 100k-event benchmark that scan was 8% of the machine's CPU. A GIN
//! index on the same expression serves `@>`; PostgreSQL plans FerretDB's statements with their
//! parameters bound, so the key becomes the constant `'_id'` and matches the index expression.
//!
//! The index is an addition FerretDB does not know about: it does not list it, never drops it
//! (dropping the collection drops the table and the index with it), and every write maintains
//! it. With `mongod` or FerretDB on SQLite the setting stays unset and nothing happens.

use anyhow::Context as _;
use mongodb::Database;
use sqlx::{Connection as _, PgConnection};

/// The collections whose `_id` lookups sit on the write path.
pub const LOOKED_UP_BY_ID: &[&str] = &[common::documents::LEARNING_PATHS];

/// Creates, if missing, a GIN index on `_id` for each of `collections` of `db` (creating the
/// collection first if needed) in FerretDB's PostgreSQL database at `url`.
pub async fn index_id_lookups(url: &str, db: &Database, collections: &[&str]) -> anyhow::Result<()> {
    let mut pg = PgConnection::connect(url).await.with_context(|| {
        format!(
            "cannot connect to FerretDB's PostgreSQL database at {}",
            common::config::redact(url)
        )
    })?;
    let existing = db
        .list_collection_names()
        .await
        .context("listing MongoDB collections")?;
    for &name in collections {
        if !existing.iter().any(|c| c == name) {
            // Another worker may create it meanwhile: "already exists" is success.
            if let Err(error) = db.create_collection(name).await {
                if !error.to_string().contains("already exists") {
                    return Err(error).with_context(|| format!("creating MongoDB collection {name}"));
                }
            }
        }
        // FerretDB keeps one schema per MongoDB database, and there a metadata table mapping
        // each collection to its table (internal/backends/postgresql/metadata/registry.go).
        let table: Option<String> = sqlx::query_scalar(&format!(
            r#"select _jsonb->>'table' from "{}"._ferretdb_database_metadata where _jsonb->>'_id' = $1"#,
            db.name().replace('"', "\"\"")
        ))
        .bind(name)
        .fetch_optional(&mut pg)
        .await
        .with_context(|| format!("reading FerretDB's table name of {name}"))?;
        let Some(table) = table else {
            anyhow::bail!("FerretDB has no table for collection {name} of database {}", db.name());
        };
        let index = format!("{table}_id_gin");
        let created = sqlx::query(&format!(
            r#"create index if not exists "{index}" on "{schema}"."{table}" using gin ((_jsonb->'_id') jsonb_path_ops)"#,
            index = index.replace('"', "\"\""),
            schema = db.name().replace('"', "\"\""),
            table = table.replace('"', "\"\""),
        ))
        .execute(&mut pg)
        .await;
        if let Err(error) = created {
            // Two workers starting together race on the catalog; the loser finds the index made.
            let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_class where relname = $1)")
                .bind(&index)
                .fetch_one(&mut pg)
                .await
                .unwrap_or(false);
            if !exists {
                return Err(error).with_context(|| format!("creating the _id lookup index of {name}"));
            }
        }
        tracing::info!(collection = name, index, "FerretDB _id lookups indexed");
    }
    pg.close().await.ok();
    Ok(())
}
