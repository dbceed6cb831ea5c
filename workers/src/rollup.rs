//! PostgreSQL rollups, applied per batch in one transaction. Daily active users are a set of
//! (project, day, user) rows, so applying an event twice changes nothing.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use common::event::Event;
use sqlx::PgPool;

/// What one batch touched, for the change notification.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Touched {
    pub project: String,
    pub days: BTreeSet<NaiveDate>,
    pub users: BTreeSet<String>,
}

/// Applies `events` (all of one project or many) in one transaction; returns what changed, per project.
pub async fn apply(pool: &PgPool, events: &[Event]) -> sqlx::Result<Vec<Touched>> {
    let mut rows: BTreeSet<(&str, NaiveDate, &str)> = BTreeSet::new();
    for event in events {
        rows.insert((event.project.as_str(), event.day, event.user_key()));
    }
    let (mut projects, mut days, mut users) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for (project, day, user) in &rows {
        projects.push(*project);
        days.push(*day);
        users.push(*user);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into daily_active_users (project, day, user_key)
         select * from unnest($1::text[], $2::date[], $3::text[])
         on conflict do nothing",
    )
    .bind(&projects)
    .bind(&days)
    .bind(&users)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut touched: Vec<Touched> = Vec::new();
    for (project, day, user) in rows {
        if touched.last().is_none_or(|t| t.project != project) {
            touched.push(Touched {
                project: project.to_owned(),
                ..Touched::default()
            });
        }
        if let Some(current) = touched.last_mut() {
            current.days.insert(day);
            current.users.insert(user.to_owned());
        }
    }
    Ok(touched)
}
