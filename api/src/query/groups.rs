//! A group (a class, cohort or organisation) as `group` calls describe it: its traits, as the
//! latest call that carried any left them, and how many learners it has. The workers keep both
//! (`groups` and `group_members`, migrations/0009); docs/contract.md §6 defines them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ApiError;

/// One group of a project.
#[derive(Debug, PartialEq, Serialize)]
pub struct Group {
    pub group_id: String,
    /// The traits of the latest `group` call (by event time) that carried any; `null` when no
    /// call did.
    pub traits: Option<serde_json::Value>,
    /// The event time of that call.
    pub traits_updated_at: Option<DateTime<Utc>>,
    /// Users put in the group by any `group` call (no call removes one).
    pub members: i64,
}

/// `group` of `project`, or None when no `group` call has named it.
pub async fn group(pool: &sqlx::PgPool, project: &str, group: &str) -> Result<Option<Group>, ApiError> {
    let (traits, updated_at, members): (Option<String>, Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "select (select traits::text from groups where project = $1 and group_id = $2),
                (select updated_at from groups where project = $1 and group_id = $2),
                (select count(*) from group_members where project = $1 and group_id = $2)",
    )
    .bind(project)
    .bind(group)
    .fetch_one(pool)
    .await?;
    let traits = traits
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((traits.is_some() || members > 0).then(|| Group {
        group_id: group.to_owned(),
        traits,
        traits_updated_at: updated_at,
        members,
    }))
}
