//! The statement ids ingest has accepted, in PostgreSQL `xapi_statements` (migration 0015), and
//! the check xAPI asks of an LRS: a statement id stands for one statement. Each request's ids
//! are recorded in one transaction: inserted unless known, then read back with their content
//! hashes; if any known id holds other content, the transaction is rolled back (the request is
//! 409 and records nothing) and the caller publishes nothing. Inserts go in id order, so two
//! requests with overlapping ids wait for each other instead of deadlocking.

use sqlx::PgPool;
use uuid::Uuid;

/// One statement of a request: its id and its content hash.
pub struct Entry {
    pub id: Uuid,
    pub hash: [u8; 32],
}

/// Records `entries` for `project`. Returns the position in `entries` of the first whose id is
/// already recorded with another hash (nothing is then recorded), or `None` when every id is now
/// recorded with its own content.
pub async fn record(pool: &PgPool, project: &str, entries: &[Entry]) -> Result<Option<usize>, sqlx::Error> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_unstable_by_key(|entry| entry.id);
    let ids: Vec<Uuid> = sorted.iter().map(|entry| entry.id).collect();
    let hashes: Vec<Vec<u8>> = sorted.iter().map(|entry| entry.hash.to_vec()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into xapi_statements (project, statement_id, content_hash)
         select $1, id, hash from unnest($2::uuid[], $3::bytea[]) as s (id, hash)
         order by id
         on conflict (project, statement_id) do nothing",
    )
    .bind(project)
    .bind(&ids)
    .bind(&hashes)
    .execute(&mut *tx)
    .await?;
    let stored: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "select statement_id, content_hash from xapi_statements where project = $1 and statement_id = any($2)",
    )
    .bind(project)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let stored: std::collections::HashMap<Uuid, Vec<u8>> = stored.into_iter().collect();
    let conflict = entries
        .iter()
        .position(|entry| stored.get(&entry.id).is_none_or(|hash| hash[..] != entry.hash[..]));
    match conflict {
        // Dropping the transaction rolls it back.
        Some(_) => drop(tx),
        None => tx.commit().await?,
    }
    Ok(conflict)
}
