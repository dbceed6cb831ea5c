//! Dense per-project user ordinals (`user_ordinals`), the members of every bitmap
//! (`common::bitmap`). An ordinal is assigned once, in a short transaction of its own before the
//! rollup transaction (so that the project's counter row is locked only for that moment), and
//! never changes, so every worker may cache it. A rolled-back rollup leaves its new ordinals
//! assigned and unused: a gap, which costs nothing.

use std::collections::{BTreeSet, HashMap};

use crate::error::WorkerError;

/// (project, user key) → ordinal, for the users of one batch.
pub type Ordinals = HashMap<(String, String), i32>;

#[derive(Clone)]
pub struct OrdinalCache {
    cache: moka::sync::Cache<(String, String), i32>,
}

impl OrdinalCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: moka::sync::Cache::new(capacity),
        }
    }

    /// The ordinal of every (project, user) given, assigning new ones as needed.
    pub async fn resolve(&self, pool: &sqlx::PgPool, users: BTreeSet<(&str, &str)>) -> Result<Ordinals, WorkerError> {
        let mut found = Ordinals::with_capacity(users.len());
        let mut missing: HashMap<&str, Vec<&str>> = HashMap::new();
        for (project, user) in users {
            let key = (project.to_owned(), user.to_owned());
            match self.cache.get(&key) {
                Some(ord) => {
                    found.insert(key, ord);
                }
                None => missing.entry(project).or_default().push(user),
            }
        }
        // Projects in order, so two workers lock counters in the same order.
        let mut projects: Vec<&str> = missing.keys().copied().collect();
        projects.sort_unstable();
        for project in projects {
            let users = &missing[project];
            let known: Vec<(String, i32)> =
                sqlx::query_as("select user_key, ord from user_ordinals where project = $1 and user_key = any($2)")
                    .bind(project)
                    .bind(users)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| WorkerError::postgres(e, "reading user ordinals"))?;
            let mut known: HashMap<String, i32> = known.into_iter().collect();
            let mut new: Vec<&str> = users.iter().copied().filter(|u| !known.contains_key(*u)).collect();
            if !new.is_empty() {
                new.sort_unstable();
                known.extend(assign(pool, project, &new).await?);
            }
            for user in users {
                let ord = *known
                    .get(*user)
                    .ok_or_else(|| WorkerError::Transient(anyhow::anyhow!("no ordinal for a user after assigning")))?;
                let key = (project.to_owned(), (*user).to_owned());
                self.cache.insert(key.clone(), ord);
                found.insert(key, ord);
            }
        }
        Ok(found)
    }
}

/// Assigns ordinals to `users` of `project` that have none, in one short transaction; returns
/// the ordinal of each (another worker may have assigned some meanwhile: those are read back).
async fn assign(pool: &sqlx::PgPool, project: &str, users: &[&str]) -> Result<HashMap<String, i32>, WorkerError> {
    let count = i32::try_from(users.len()).unwrap_or(i32::MAX);
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| WorkerError::postgres(e, "starting to assign user ordinals"))?;
    let first: i32 = sqlx::query_scalar(
        "insert into project_counters (project, next_user_ord) values ($1, $2)
         on conflict (project) do update set next_user_ord = project_counters.next_user_ord + $2
         returning next_user_ord - $2",
    )
    .bind(project)
    .bind(count)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| WorkerError::postgres(e, "reserving user ordinals"))?;
    let ords: Vec<i32> = (0..count).map(|i| first + i).collect();
    sqlx::query(
        "insert into user_ordinals (project, user_key, ord)
         select $1, user_key, ord from unnest($2::text[], $3::int4[]) as t(user_key, ord)
         on conflict (project, user_key) do nothing",
    )
    .bind(project)
    .bind(users)
    .bind(&ords)
    .execute(&mut *tx)
    .await
    .map_err(|e| WorkerError::postgres(e, "assigning user ordinals"))?;
    let assigned: Vec<(String, i32)> =
        sqlx::query_as("select user_key, ord from user_ordinals where project = $1 and user_key = any($2)")
            .bind(project)
            .bind(users)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| WorkerError::postgres(e, "reading assigned user ordinals"))?;
    tx.commit()
        .await
        .map_err(|e| WorkerError::postgres(e, "committing user ordinals"))?;
    Ok(assigned.into_iter().collect())
}

/// Every ordinal of a project's users (reconcile maps the raw events' users with it).
pub async fn all(pool: &sqlx::PgPool, project: &str) -> sqlx::Result<HashMap<String, i32>> {
    let rows: Vec<(String, i32)> = sqlx::query_as("select user_key, ord from user_ordinals where project = $1")
        .bind(project)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}
