//! One person as identity stitching made it (docs/contract.md §6, "One person"): its ids and
//! every link that touches one of them, applied or refused, as the workers recorded them
//! (`identity_links`, `persons`, migrations/0013).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ApiError;

/// A link between two ids.
#[derive(Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Link {
    pub message_id: String,
    /// `identify` or `alias`.
    pub kind: String,
    pub from: String,
    pub to: String,
    pub at: DateTime<Utc>,
    /// Null when applied; else `identified`, `invalid_id` or `too_many_ids`.
    pub refused: Option<String>,
}

/// The person of one id.
#[derive(Debug, PartialEq, Serialize)]
pub struct Person {
    pub id: String,
    /// Every id of the person, bytewise order (the id alone when nothing links it).
    pub ids: Vec<String>,
    pub links: Vec<Link>,
}

/// The person of `id`, or None when no event has carried it.
pub async fn person(pool: &sqlx::PgPool, project: &str, id: &str) -> Result<Option<Person>, ApiError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "with me as (select ord from user_ordinals where project = $1 and user_key = $2),
              person as (select coalesce((select p.person_ord from persons p, me
                                           where p.project = $1 and p.ord = me.ord), (select ord from me)) as ord)
         select o.user_key from user_ordinals o
          where o.project = $1 and o.ord in (
                select p.ord from persons p, person where p.project = $1 and p.person_ord = person.ord
                union select ord from person)
          order by o.user_key collate \"C\"",
    )
    .bind(project)
    .bind(id)
    .fetch_all(pool)
    .await?;
    if ids.is_empty() {
        return Ok(None);
    }
    let links: Vec<Link> = sqlx::query_as(
        "select message_id, case kind when 0 then 'identify' else 'alias' end as kind,
                from_key as from, to_key as to, ts as at, refused
           from identity_links where project = $1 and (from_key = any($2) or to_key = any($2))
          order by ts, message_id collate \"C\"",
    )
    .bind(project)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(Some(Person {
        id: id.to_owned(),
        ids,
        links,
    }))
}
