//! The PostgreSQL schema (`migrations/`), owned here so that exactly one service applies it (the
//! workers, at startup) and the others wait for it (the api): two services migrating at once
//! would race on the migrations table.

use std::time::Duration;

use anyhow::Context as _;

/// Every migration of `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies the migrations that are missing (the workers do this at startup).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("cannot apply the PostgreSQL migrations")
}

/// Whether every migration this build knows has been applied.
pub async fn is_current(pool: &sqlx::PgPool) -> anyhow::Result<bool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> = sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
        .map_err(anyhow::Error::from)
        .or_else(|error| {
            // The table does not exist yet: nothing is applied.
            match error.downcast_ref::<sqlx::Error>() {
                Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(error),
            }
        })
        .context("cannot read the applied migrations")?;
    Ok(applied.is_some_and(|v| v >= latest))
}

/// Waits until the workers have applied every migration, polling, for at most `timeout`.
pub async fn wait_until_current(pool: &sqlx::PgPool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match is_current(pool).await {
            Ok(true) => return Ok(()),
            Ok(false) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(false) => anyhow::bail!("the PostgreSQL schema is not up to date after {timeout:?}: start the workers, which apply the migrations"),
            Err(error) => return Err(error),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
