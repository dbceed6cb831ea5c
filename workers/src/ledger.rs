//! The per-event ledger, PostgreSQL `event_ids` and `event_chunks` (migrations/0012): why each
//! event is counted exactly once, whatever carries it and whatever fails.
//!
//! An event's identity is its project and messageId (the client's idempotency key), hashed to a
//! 128-bit [`event_key`]. A batch is processed in this order, and acknowledged only at the end:
//!
//! 1. In one PostgreSQL transaction, [`claim`] inserts one `event_ids` row per event of the batch
//!    (`on conflict (id) do nothing returning id`). The rows it inserted are the events this
//!    batch counts; it [`record`]s exactly those in `event_chunks` (what funnels and reconcile
//!    read), the same transaction adds them to every rollup and commits. An event's claim, its
//!    chunk entry and its counts therefore exist together or not at all.
//! 2. The events the batch owns are inserted into MongoDB `events` (`_id` = project:messageId;
//!    a duplicate-key error means an earlier attempt stored it already).
//! 3. The messages are acknowledged.
//!
//! Each case of "the same event again" then comes out right:
//! - two copies inside one batch (a client's resend coalesced by ingest into the same message,
//!   or two messages fetched together): the batch claims the event once, with the owners of all
//!   its copies ([`group_copies`]). Keeping only the first copy's owner loses events: message B
//!   claims and commits event e, the worker dies before storing it, and B's redelivery is fetched
//!   behind a resend of e in message A. Claimed as A's, e is `Theirs`, nobody stores it, and B is
//!   acknowledged. With every copy's owner, B's copy is `Mine` and is the one stored;
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
//! Chunks of days older than the retention (by event time) are pruned in bounded batches with
//! their claims; a client resending an event that old would be counted again, which is why the
//! retention is long.

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
    /// Claimed earlier by the message of one of its copies (a redelivery): store that copy
    /// (0: the entry's event, k: the k-th of `others`), do not count it.
    Mine { copy: usize },
    /// Claimed by another message (a client's resend): neither.
    Theirs,
}

impl Claim {
    /// Whether this batch stores the event in MongoDB.
    pub fn stores(self) -> bool {
        matches!(self, Claim::New | Claim::Mine { .. })
    }
}

/// One event to claim: its first copy in the batch, the owner id of the message carrying that
/// copy, and the owners of the messages carrying its later copies (usually none).
pub struct Entry<'a> {
    pub event: &'a Event,
    pub owner: i64,
    pub others: &'a [i64],
    pub user_ord: i32,
}

/// The copies of one event in a batch: where the first is, and where the later copies carried by
/// other messages are (copies inside the same message add nothing and are dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct Copies {
    pub first: usize,
    pub others: Vec<usize>,
}

/// Groups the positions of `ids` (with the owner of the message carrying each) by event, in the
/// order of first occurrence.
pub fn group_copies(ids: &[Uuid], owners: &[i64]) -> Vec<Copies> {
    let mut groups: Vec<Copies> = Vec::with_capacity(ids.len());
    let mut index: HashMap<Uuid, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        match index.get(id) {
            None => {
                index.insert(*id, groups.len());
                groups.push(Copies {
                    first: i,
                    others: Vec::new(),
                });
            }
            Some(&g) => {
                let group = &mut groups[g];
                let known = std::iter::once(group.first)
                    .chain(group.others.iter().copied())
                    .any(|j| owners[j] == owners[i]);
                if !known {
                    group.others.push(i);
                }
            }
        }
    }
    groups
}

/// Claims every entry (their ids distinct) in `tx`, under the owner of its first copy; one
/// [`Claim`] per entry, in order.
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
    let sorted_ids: Vec<Uuid> = order.iter().map(|&i| ids[i]).collect();
    let owners: Vec<i64> = order.iter().map(|&i| entries[i].owner).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into event_ids (id, owner) select * from unnest($1::uuid[], $2::int8[])
         on conflict (id) do nothing
         returning id",
    )
    .bind(&sorted_ids)
    .bind(&owners)
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
            sqlx::query_as::<_, (Uuid, i64)>("select id, owner from event_ids where id = any($1)")
                .bind(&conflicting)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| WorkerError::postgres(e, "reading the owners of duplicate events"))?
                .into_iter()
                .collect();
        for (i, id) in ids.iter().enumerate() {
            if claims[i] == Claim::New {
                continue;
            }
            let Some(found) = owners_found.get(id) else { continue };
            let entry = &entries[i];
            if let Some(copy) = std::iter::once(&entry.owner)
                .chain(entry.others)
                .position(|owner| owner == found)
            {
                claims[i] = Claim::Mine { copy };
            }
        }
    }
    let claimed: Vec<(Uuid, &Entry<'_>)> = ids
        .iter()
        .zip(entries)
        .zip(&claims)
        .filter(|(_, claim)| **claim == Claim::New)
        .map(|((id, entry), _)| (*id, entry))
        .collect();
    record_keyed(tx, claimed).await?;
    Ok(claims)
}

/// Adds `entries` to `event_chunks`, grouped into one chunk per (project, event name, day).
pub async fn record(tx: &mut Transaction<'_, Postgres>, entries: &[&Entry<'_>]) -> Result<(), WorkerError> {
    let keyed = entries
        .iter()
        .map(|entry| (event_key(&entry.event.project, &entry.event.message_id), *entry))
        .collect();
    record_keyed(tx, keyed).await
}

/// [`record`] of entries whose ids are known already.
async fn record_keyed(
    tx: &mut Transaction<'_, Postgres>,
    mut order: Vec<(Uuid, &Entry<'_>)>,
) -> Result<(), WorkerError> {
    if order.is_empty() {
        return Ok(());
    }
    // Grouped here, sorted by chunk key: each chunk's fixed-width columns are a slice of the bound
    // arrays, so PostgreSQL neither unnests nor aggregates the batch's events (that cost 4.3 µs
    // per event). Its text columns come as one array literal per chunk: slicing a text array
    // walks it from the start to the slice, which cost 2.5 µs per event at 500 chunks of a
    // 5,000-event batch; parsing a literal is linear.
    order.sort_by(|(_, a), (_, b)| {
        (a.event.project.as_str(), a.event.event.as_str(), a.event.day).cmp(&(
            b.event.project.as_str(),
            b.event.event.as_str(),
            b.event.day,
        ))
    });
    let n = order.len();
    let (mut projects, mut names, mut days, mut lows, mut highs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut courses, mut props): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut ids = Vec::with_capacity(n);
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut ords = Vec::with_capacity(n);
    for (i, (id, entry)) in order.iter().enumerate() {
        let event = entry.event;
        // PostgreSQL arrays count from 1; a slice [lo:hi] includes both ends.
        let position = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let same = projects.last() == Some(&event.project.as_str())
            && names.last() == Some(&event.event.as_str())
            && days.last() == Some(&event.day);
        if same {
            *highs.last_mut().expect("a chunk is open") = position;
        } else {
            projects.push(event.project.as_str());
            names.push(event.event.as_str());
            days.push(event.day);
            lows.push(position);
            highs.push(position);
            courses.push(String::new());
            props.push(String::new());
        }
        ids.push(*id);
        times.push(event.ts);
        ords.push(entry.user_ord);
        let course = crate::rollup::delta::property_id(event, "course_id");
        array_element(courses.last_mut().expect("a chunk is open"), course.as_deref());
        array_element(
            props.last_mut().expect("a chunk is open"),
            scalar_properties(event).as_deref(),
        );
    }
    for literal in courses.iter_mut().chain(props.iter_mut()) {
        literal.push('}');
    }
    sqlx::query(
        "insert into event_chunks (project, event, day, ids, times, users, courses, props)
         select k.project, k.event, k.day, ($6::uuid[])[k.lo:k.hi], ($7::timestamptz[])[k.lo:k.hi],
                ($8::int4[])[k.lo:k.hi], k.courses::text[], k.props::text[]
           from unnest($1::text[], $2::text[], $3::date[], $4::int4[], $5::int4[], $9::text[], $10::text[])
             as k(project, event, day, lo, hi, courses, props)",
    )
    .bind(&projects)
    .bind(&names)
    .bind(&days)
    .bind(&lows)
    .bind(&highs)
    .bind(&ids)
    .bind(&times)
    .bind(&ords)
    .bind(&courses)
    .bind(&props)
    .execute(&mut **tx)
    .await
    .map_err(|e| WorkerError::postgres(e, "recording events for funnels"))?;
    Ok(())
}

/// Appends `value` to `literal`, a PostgreSQL text array literal being written (`{` opens it on
/// the first element; the caller closes it): every element quoted, `"` and `\\` escaped, so any
/// text comes back as it was; None is `NULL`.
fn array_element(literal: &mut String, value: Option<&str>) {
    literal.push(if literal.is_empty() { '{' } else { ',' });
    let Some(value) = value else {
        literal.push_str("NULL");
        return;
    };
    literal.reserve(value.len() + 2);
    literal.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            literal.push('\\');
        }
        literal.push(c);
    }
    literal.push('"');
}

/// Largest property value kept for funnel filters; longer strings are left out of `props`.
const MAX_FILTER_VALUE: usize = 1_024;

/// The event's top-level scalar properties as a JSON object (funnel step filters compare them),
/// or None when it has none.
pub fn scalar_properties(event: &Event) -> Option<String> {
    /// The filtered properties, serialised as they are iterated: no copy of the map.
    struct Scalars<'a>(&'a serde_json::Map<String, Value>);
    impl Scalars<'_> {
        fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
            self.0.iter().filter(|(key, value)| {
                key.as_str() != "course_id"
                    && match value {
                        Value::String(s) => s.len() <= MAX_FILTER_VALUE,
                        Value::Number(_) | Value::Bool(_) => true,
                        _ => false,
                    }
            })
        }
    }
    impl serde::Serialize for Scalars<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.entries())
        }
    }
    let scalars = Scalars(&event.properties);
    scalars.entries().next()?;
    serde_json::to_string(&scalars).ok()
}

/// Deletes up to `limit` chunks of events of days before `cutoff`'s, with their claims; how many
/// events it deleted.
pub async fn prune(pool: &sqlx::PgPool, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "with gone as (
             delete from event_chunks
              where ctid in (select ctid from event_chunks where day < $1 limit $2)
          returning ids)
         delete from event_ids where id in (select unnest(ids) from gone)",
    )
    .bind(cutoff.date_naive())
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
    fn copies_are_grouped_by_event_keeping_one_per_message() {
        let (a, b) = (event_key("p", "a"), event_key("p", "b"));
        // a in messages 1, 1, 2; b in messages 1, 1.
        let groups = group_copies(&[a, b, a, a, b], &[1, 1, 1, 2, 1]);
        assert_eq!(
            groups,
            vec![
                Copies {
                    first: 0,
                    others: vec![3]
                },
                Copies {
                    first: 1,
                    others: vec![]
                },
            ]
        );
        assert!(group_copies(&[], &[]).is_empty());
    }
}
