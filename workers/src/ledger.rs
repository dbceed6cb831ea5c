//! The per-event ledger, PostgreSQL `event_log` (migrations/0004): why each event is counted
//! exactly once, whatever carries it and whatever fails.
//!
//! An event's identity is its project and messageId (the client's idempotency key), hashed to a
//! 128-bit [`event_key`]. A batch is processed in this order, and acknowledged only at the end:
//!
//! 1. In one PostgreSQL transaction, [`claim`] inserts one `event_log` row per event of the batch
//!    (`on conflict (id) do nothing returning id`). The rows it inserted are the events this
//!    batch counts; the same transaction adds exactly those to every rollup and commits. An
//!    event's row and its counts therefore exist together or not at all.
//! 2. The events the batch owns are inserted into MongoDB `events` (`_id` = project:messageId;
//!    a duplicate-key error means an earlier attempt stored it already).
//! 3. The messages are acknowledged.
//!
//! Each case of "the same event again" then comes out right:
//! - two copies inside one batch (a client's resend coalesced by ingest into the same message,
//!   or two messages fetched together): the batch keeps the first ([`first_occurrences`]);
//! - a resend inside another message: its row exists, owned by the first message: not counted,
//!   and not stored either, so MongoDB keeps the copy that was counted;
//! - a redelivery after the commit (the worker died before or during step 2 or 3): the rows
//!   exist, owned by this very message ([`Claim::Mine`]): not counted again, but stored, which
//!   finishes step 2;
//! - a crash before the commit: nothing was claimed; the redelivery claims and counts;
//! - two workers racing on copies of one event: the unique index makes the second insert wait
//!   for the first transaction and then do nothing;
//! - a dead letter replayed after a fix: it keeps its message's key (the `Analytics-Message-Key`
//!   header), so it is `Mine` where it had been claimed, `New` where not.
//!
//! Rows older than the retention (by event time) are pruned in bounded batches; a client
//! resending an event that old would be counted again, which is why the retention is long.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::event::Event;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::WorkerError;

/// The ledger id of an event.
pub fn event_key(project: &str, message_id: &str) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(project.as_bytes());
    hash.update([0u8]);
    hash.update(message_id.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// The owner id of a message key.
pub fn owner_of(message_key: &str) -> i64 {
    let digest = Sha256::digest(message_key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// What the ledger says of one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed now: count it and store it.
    New,
    /// Claimed earlier by this same message (a redelivery): store it, do not count it.
    Mine,
    /// Claimed by another message (a client's resend): neither.
    Theirs,
}

impl Claim {
    /// Whether this batch stores the event in MongoDB.
    pub fn stores(self) -> bool {
        matches!(self, Claim::New | Claim::Mine)
    }
}

/// One event to claim, with the owner id of the message carrying it.
pub struct Entry<'a> {
    pub event: &'a Event,
    pub owner: i64,
    pub user_ord: i32,
}

/// The positions of the first occurrence of each event id in `ids`; later copies are dropped.
pub fn first_occurrences(ids: &[Uuid]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    (0..ids.len()).filter(|i| seen.insert(ids[*i])).collect()
}

/// Claims every entry (their ids distinct) in `tx`; one [`Claim`] per entry, in order.
pub async fn claim(tx: &mut Transaction<'_, Postgres>, entries: &[Entry<'_>]) -> Result<Vec<Claim>, WorkerError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let n = entries.len();
    let ids: Vec<Uuid> = entries
        .iter()
        .map(|e| event_key(&e.event.project, &e.event.message_id))
        .collect();
    // Rows are inserted in id order, so two transactions claiming overlapping sets wait for each
    // other rather than deadlock.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|i| ids[*i]);
    let mut sorted_ids = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut projects = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut ords = Vec::with_capacity(n);
    let mut courses: Vec<Option<String>> = Vec::with_capacity(n);
    let mut props: Vec<Option<String>> = Vec::with_capacity(n);
    for &i in &order {
        let (entry, event) = (&entries[i], entries[i].event);
        sorted_ids.push(ids[i]);
        owners.push(entry.owner);
        projects.push(event.project.as_str());
        names.push(event.event.as_str());
        times.push(event.ts);
        ords.push(entry.user_ord);
        courses.push(crate::rollup::delta::property_id(event, "course_id"));
        props.push(scalar_properties(event));
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into event_log (id, owner, project, event, ts, user_ord, course_id, props)
         select id, owner, project, event, ts, user_ord, course_id, props::jsonb
           from unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::timestamptz[], $6::int4[], $7::text[], $8::text[])
                as t(id, owner, project, event, ts, user_ord, course_id, props)
         on conflict (id) do nothing
         returning id",
    )
    .bind(&sorted_ids)
    .bind(&owners)
    .bind(&projects)
    .bind(&names)
    .bind(&times)
    .bind(&ords)
    .bind(&courses)
    .bind(&props)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| WorkerError::postgres(e, "claiming events in the ledger"))?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let mut claims = vec![Claim::Theirs; n];
    let mut conflicting = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if inserted.contains(id) {
            claims[i] = Claim::New;
        } else {
            conflicting.push(*id);
        }
    }
    if !conflicting.is_empty() {
        // Only real duplicates are read back: who owns them?
        let owners_found: HashMap<Uuid, i64> =
            sqlx::query_as::<_, (Uuid, i64)>("select id, owner from event_log where id = any($1)")
                .bind(&conflicting)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| WorkerError::postgres(e, "reading the owners of duplicate events"))?
                .into_iter()
                .collect();
        for (i, id) in ids.iter().enumerate() {
            if claims[i] != Claim::New && owners_found.get(id) == Some(&entries[i].owner) {
                claims[i] = Claim::Mine;
            }
        }
    }
    Ok(claims)
}

/// Largest property value kept for funnel filters; longer strings are left out of `props`.
const MAX_FILTER_VALUE: usize = 1_024;

/// The event's top-level scalar properties as a JSON object (funnel step filters compare them),
/// or None when it has none.
fn scalar_properties(event: &Event) -> Option<String> {
    let scalars: serde_json::Map<String, Value> = event
        .properties
        .iter()
        .filter(|(key, value)| {
            key.as_str() != "course_id"
                && match value {
                    Value::String(s) => s.len() <= MAX_FILTER_VALUE,
                    Value::Number(_) | Value::Bool(_) => true,
                    _ => false,
                }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!scalars.is_empty()).then(|| Value::Object(scalars).to_string())
}

/// Deletes up to `limit` ledger rows of events older than `cutoff`; how many it deleted.
pub async fn prune(pool: &sqlx::PgPool, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("delete from event_log where ctid in (select ctid from event_log where ts < $1 limit $2)")
        .bind(cutoff)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_identified_by_project_and_message_id_only() {
        assert_eq!(event_key("p", "m1"), event_key("p", "m1"));
        assert_ne!(event_key("p", "m1"), event_key("q", "m1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(event_key("ab", "c"), event_key("a", "bc"));
        assert_ne!(owner_of("id:1"), owner_of("id:2"));
    }

    #[test]
    fn only_the_first_copy_of_an_event_in_a_batch_is_kept() {
        let (a, b) = (event_key("p", "a"), event_key("p", "b"));
        assert_eq!(first_occurrences(&[a, b, a, a, b]), vec![0, 1]);
        assert!(first_occurrences(&[]).is_empty());
    }
}
