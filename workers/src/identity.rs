//! Identity stitching (docs/contract.md §6, "One person"; migrations/0013): the links that
//! `identify` and `alias` calls make between ids, and the partition of ids into persons that they
//! imply, kept in the rollup transaction.
//!
//! The partition is a pure function of the links and of when each id was first a `userId`
//! ([`replay`]): the links of a connected component are applied in event-time order (then
//! messageId, bytewise), each merging its two persons unless the merge is refused:
//!
//! - an `identify` (anonymousId → userId) is refused when the anonymous id's person is already
//!   identified (one of its ids was the `userId` of an earlier event): a shared device where a
//!   second learner signs in does not merge the two learners;
//! - an `alias` (previousId → userId) is refused when both persons are already identified: it may
//!   give an identified person a new id (anon → user → renamed user resolves), but not merge two
//!   learners.
//!
//! A link or an identification that arrives late changes what the replay of its component
//! decides, so every commit that adds either replays the components it touches, whole, under a
//! per-project advisory lock. The api maps ordinals to persons when it reads distinct counts, so
//! the outcome applies to all of a person's events, before and after the link.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::rollup::delta::{Delta, LinkKind};

/// The most ids one person may have: a link that would make a person larger is refused
/// (`too_many_ids`), so that no client can make every commit replay an unbounded component.
pub const MAX_PERSON_IDS: usize = 1_000;

/// Ids that no two persons may share: placeholders that SDKs and applications send when they have
/// no real id (PostHog refuses to merge on the same list). Compared trimmed and case-insensitively.
const INVALID_IDS: [&str; 20] = [
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
    "null",
    "0",
    "-1",
    "[object object]",
    "nan",
    "none",
    "user_id",
    "user id",
    "anonymous_id",
    "",
];

/// Refusals (`identity_links.refused`).
pub const REFUSED_IDENTIFIED: &str = "identified";
pub const REFUSED_INVALID_ID: &str = "invalid_id";
pub const REFUSED_TOO_MANY_IDS: &str = "too_many_ids";

/// Whether `key` is a placeholder rather than an id (see [`INVALID_IDS`]).
pub fn invalid_id(key: &str) -> bool {
    let key = key.trim().to_lowercase();
    INVALID_IDS.contains(&key.as_str())
}

/// A link as the replay reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub message_id: String,
    pub ts: DateTime<Utc>,
    pub kind: LinkKind,
    pub from: String,
    pub to: String,
}

/// An `identity_links` row: (messageId, time, kind, from, to, refusal).
pub type LinkRecord = (String, DateTime<Utc>, i16, String, String, Option<String>);

/// What a replay decides for one component.
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    /// Every id's person, as the person's smallest ordinal, for the ids of persons of more than
    /// one id that have an ordinal (ids of persons of their own have no row).
    pub persons: BTreeMap<i32, i32>,
    /// messageId → `None` (applied) or the refusal.
    pub outcomes: BTreeMap<String, Option<&'static str>>,
}

/// Replays `links` (any order; the final ones, `invalid_id` and `too_many_ids`, excluded) given
/// the first identification of each id and the ordinals of the ids.
pub fn replay(
    links: &[StoredLink],
    identified: &HashMap<String, (DateTime<Utc>, String)>,
    ords: &HashMap<String, i32>,
) -> Replay {
    let mut order: Vec<&StoredLink> = links.iter().collect();
    order.sort_by(|a, b| (a.ts, &a.message_id).cmp(&(b.ts, &b.message_id)));
    let mut index: HashMap<&str, usize> = HashMap::new();
    for link in &order {
        for key in [&link.from, &link.to] {
            let next = index.len();
            index.entry(key.as_str()).or_insert(next);
        }
    }
    let mut keys: Vec<&str> = vec![""; index.len()];
    for (key, i) in &index {
        keys[*i] = key;
    }
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    // Per root: the earliest identification of any of its ids.
    let mut since: Vec<Option<(DateTime<Utc>, &str)>> = keys
        .iter()
        .map(|k| identified.get(*k).map(|(at, m)| (*at, m.as_str())))
        .collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut outcomes = BTreeMap::new();
    for link in order {
        let (from, to) = (
            find(&mut parent, index[link.from.as_str()]),
            find(&mut parent, index[link.to.as_str()]),
        );
        let at = (link.ts, link.message_id.as_str());
        let before = |root: usize| since[root].is_some_and(|first| first < at);
        let refused = from != to
            && match link.kind {
                LinkKind::Identify => before(from),
                LinkKind::Alias => before(from) && before(to),
            };
        if refused {
            outcomes.insert(link.message_id.clone(), Some(REFUSED_IDENTIFIED));
            continue;
        }
        outcomes.insert(link.message_id.clone(), None);
        if from != to {
            let first = match (since[from], since[to]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            parent[from] = to;
            since[to] = first;
        }
    }
    let mut members: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(ord) = ords.get(*key) {
            members.entry(find(&mut parent, i)).or_default().push(*ord);
        }
    }
    let mut persons = BTreeMap::new();
    for ords in members.values().filter(|o| o.len() > 1) {
        let person = ords.iter().copied().min().unwrap_or_default();
        for ord in ords {
            persons.insert(*ord, person);
        }
    }
    Replay { persons, outcomes }
}

/// A worker's memory of committed identifications: (project, userId) → its first identification
/// (event time, messageId) as committed, or a later one. An event no earlier than it cannot move
/// `identified_users`, so the rollup skips its upsert (most events are by known learners).
#[derive(Clone)]
pub struct Known(moka::sync::Cache<(String, String), (DateTime<Utc>, String)>);

impl Known {
    pub fn new(capacity: u64) -> Self {
        Self(moka::sync::Cache::new(capacity))
    }

    fn covers(&self, key: &(String, String), first: &(DateTime<Utc>, String)) -> bool {
        self.0.get(key).is_some_and(|cached| cached <= *first)
    }

    /// After `delta` committed: what is stored is now no later than its identifications.
    pub fn committed(&self, delta: &Delta) {
        for (key, first) in &delta.identified {
            if self.0.get(key).is_none_or(|cached| *first < cached) {
                self.0.insert(key.clone(), first.clone());
            }
        }
    }
}

/// Records the delta's links and identifications (skipping those `known` shows cannot move) and
/// replays every component they change, inside the rollup transaction. Returns whether any
/// person changed.
pub async fn update(tx: &mut Transaction<'_, Postgres>, delta: &Delta, known: Option<&Known>) -> sqlx::Result<bool> {
    // (project → ids whose component must be replayed)
    let mut seeds: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let identified: Vec<_> = delta
        .identified
        .iter()
        .filter(|(k, v)| !known.is_some_and(|known| known.covers(k, v)))
        .collect();
    let mut moved: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !identified.is_empty() {
        let (mut p, mut u, mut at, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((project, user), (first, message)) in &identified {
            p.push(project.as_str());
            u.push(user.as_str());
            at.push(*first);
            m.push(message.as_str());
        }
        // Only rows inserted or moved earlier come back.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "insert into identified_users (project, user_key, first_at, first_message_id)
             select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
             on conflict (project, user_key) do update
                set first_at = excluded.first_at, first_message_id = excluded.first_message_id
                where (excluded.first_at, excluded.first_message_id collate \"C\")
                    < (identified_users.first_at, identified_users.first_message_id collate \"C\")
             returning project, user_key",
        )
        .bind(&p)
        .bind(&u)
        .bind(&at)
        .bind(&m)
        .fetch_all(&mut **tx)
        .await?;
        for (project, user) in rows {
            moved.entry(project).or_default().push(user);
        }
    }
    if !delta.links.is_empty() {
        let (mut p, mut id, mut at, mut kind, mut from, mut to, mut refused) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((project, message), link) in &delta.links {
            let invalid = invalid_id(&link.from) || invalid_id(&link.to);
            p.push(project.as_str());
            id.push(message.as_str());
            at.push(link.ts);
            kind.push(link.kind.code());
            from.push(link.from.as_str());
            to.push(link.to.as_str());
            refused.push(invalid.then_some(REFUSED_INVALID_ID));
            if invalid {
                metrics::counter!("workers_identity_links_refused_total", "reason" => REFUSED_INVALID_ID).increment(1);
            } else {
                let ids = seeds.entry(project.as_str()).or_default();
                ids.insert(link.from.clone());
                ids.insert(link.to.clone());
            }
        }
        sqlx::query(
            "insert into identity_links (project, message_id, ts, kind, from_key, to_key, refused)
             select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::int2[], $5::text[], $6::text[],
                                  $7::text[])
             on conflict do nothing",
        )
        .bind(&p)
        .bind(&id)
        .bind(&at)
        .bind(&kind)
        .bind(&from)
        .bind(&to)
        .bind(&refused)
        .execute(&mut **tx)
        .await?;
    }
    let projects: BTreeSet<&str> = seeds.keys().copied().chain(moved.keys().map(String::as_str)).collect();
    let mut changed = false;
    for project in projects {
        // Exclusive per project and taken last in the transaction, after every row lock, so two
        // replays of one project never interleave and never deadlock with other rollups.
        lock(tx, project).await?;
        let mut ids = seeds.remove(project).unwrap_or_default();
        if let Some(users) = moved.get(project) {
            // An identification changes nothing for an id that is in no link.
            let linked: Vec<String> = sqlx::query_scalar(
                "select from_key from identity_links where project = $1 and from_key = any($2)
                 union select to_key from identity_links where project = $1 and to_key = any($2)",
            )
            .bind(project)
            .bind(users)
            .fetch_all(&mut **tx)
            .await?;
            ids.extend(linked);
        }
        if !ids.is_empty() {
            changed |= replay_components(tx, project, ids).await?;
        }
    }
    Ok(changed)
}

/// Takes the project's identity lock until the end of the transaction.
pub async fn lock(tx: &mut Transaction<'_, Postgres>, project: &str) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 1))")
        .bind(project)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The graph reachable from some ids over the links that may still apply.
const REACHABLE: &str = "with recursive reach(k) as (
        select unnest($2::text[])
        union
        select case when l.from_key = reach.k then l.to_key else l.from_key end
          from reach join identity_links l
            on l.project = $1 and (l.from_key = reach.k or l.to_key = reach.k)
         where l.refused is null or l.refused = 'identified')
    select k from reach limit $3";

/// Replays the components of `ids` in `project` and writes what changed; the caller holds the
/// project's identity lock. Returns whether any person changed.
pub async fn replay_components(
    tx: &mut Transaction<'_, Postgres>,
    project: &str,
    ids: BTreeSet<String>,
) -> sqlx::Result<bool> {
    let seeds: Vec<String> = ids.into_iter().collect();
    let mut reach: Vec<String> = sqlx::query_scalar(REACHABLE)
        .bind(project)
        .bind(&seeds)
        .bind(i64::try_from(MAX_PERSON_IDS * seeds.len().min(16) + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
    if reach.len() > MAX_PERSON_IDS * seeds.len().min(16) {
        // Rare: a component at its bound, or a commit touching very many. One seed at a time, a
        // seed whose component is over the bound has its applicable links made final.
        reach.clear();
        for seed in &seeds {
            let one: Vec<String> = sqlx::query_scalar(REACHABLE)
                .bind(project)
                .bind(std::slice::from_ref(seed))
                .bind(i64::try_from(MAX_PERSON_IDS + 1).unwrap_or(i64::MAX))
                .fetch_all(&mut **tx)
                .await?;
            if one.len() > MAX_PERSON_IDS {
                refuse_too_large(tx, project, seed).await?;
                reach.push(seed.clone());
            } else {
                reach.extend(one);
            }
        }
        reach.sort_unstable();
        reach.dedup();
    }
    let links: Vec<LinkRecord> = sqlx::query_as(
        "select message_id, ts, kind, from_key, to_key, refused from identity_links
          where project = $1 and from_key = any($2) and (refused is null or refused = 'identified')
         union
         select message_id, ts, kind, from_key, to_key, refused from identity_links
          where project = $1 and to_key = any($2) and (refused is null or refused = 'identified')",
    )
    .bind(project)
    .bind(&reach)
    .fetch_all(&mut **tx)
    .await?;
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    let mut stored_outcomes: HashMap<&str, Option<&str>> = HashMap::new();
    let mut graph = Vec::with_capacity(links.len());
    for (message_id, ts, kind, from, to, refused) in &links {
        keys.insert(from);
        keys.insert(to);
        stored_outcomes.insert(message_id, refused.as_deref());
        graph.push(StoredLink {
            message_id: message_id.clone(),
            ts: *ts,
            kind: LinkKind::from_code(*kind).unwrap_or(LinkKind::Alias),
            from: from.clone(),
            to: to.clone(),
        });
    }
    let keys: Vec<&str> = keys.into_iter().collect();
    let identified: HashMap<String, (DateTime<Utc>, String)> = sqlx::query_as::<_, (String, DateTime<Utc>, String)>(
        "select user_key, first_at, first_message_id from identified_users where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(k, at, m)| (k, (at, m)))
    .collect();
    let ords: HashMap<String, i32> = sqlx::query_as::<_, (String, i32)>(
        "select user_key, ord from user_ordinals where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let outcome = replay(&graph, &identified, &ords);

    let mut refusals: (Vec<&str>, Vec<Option<&str>>) = (Vec::new(), Vec::new());
    for (message_id, refused) in &outcome.outcomes {
        if stored_outcomes.get(message_id.as_str()).copied() != Some(*refused) {
            refusals.0.push(message_id);
            refusals.1.push(*refused);
            if let Some(reason) = refused {
                metrics::counter!("workers_identity_links_refused_total", "reason" => *reason).increment(1);
            }
        }
    }
    if !refusals.0.is_empty() {
        sqlx::query(
            "update identity_links l set refused = t.refused
               from unnest($2::text[], $3::text[]) as t(message_id, refused)
              where l.project = $1 and l.message_id = t.message_id",
        )
        .bind(project)
        .bind(&refusals.0)
        .bind(&refusals.1)
        .execute(&mut **tx)
        .await?;
    }

    let all_ords: Vec<i32> = ords.values().copied().collect();
    let stored: BTreeMap<i32, i32> =
        sqlx::query_as::<_, (i32, i32)>("select ord, person_ord from persons where project = $1 and ord = any($2)")
            .bind(project)
            .bind(&all_ords)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    if stored == outcome.persons {
        return Ok(false);
    }
    let gone: Vec<i32> = stored
        .keys()
        .filter(|o| !outcome.persons.contains_key(o))
        .copied()
        .collect();
    let (mut set_ord, mut set_person) = (Vec::new(), Vec::new());
    for (ord, person) in &outcome.persons {
        if stored.get(ord) != Some(person) {
            set_ord.push(*ord);
            set_person.push(*person);
        }
    }
    if !gone.is_empty() {
        sqlx::query("delete from persons where project = $1 and ord = any($2)")
            .bind(project)
            .bind(&gone)
            .execute(&mut **tx)
            .await?;
    }
    if !set_ord.is_empty() {
        sqlx::query(
            "insert into persons (project, ord, person_ord) select $1, * from unnest($2::int4[], $3::int4[])
             on conflict (project, ord) do update set person_ord = excluded.person_ord",
        )
        .bind(project)
        .bind(&set_ord)
        .bind(&set_person)
        .execute(&mut **tx)
        .await?;
    }
    bump(tx, project).await?;
    Ok(true)
}

/// Makes the applicable links of `seed` that would grow its person past the bound final.
async fn refuse_too_large(tx: &mut Transaction<'_, Postgres>, project: &str, seed: &str) -> sqlx::Result<()> {
    let refused = sqlx::query(
        "update identity_links set refused = $3
          where project = $1 and (from_key = $2 or to_key = $2) and (refused is null or refused = 'identified')",
    )
    .bind(project)
    .bind(seed)
    .bind(REFUSED_TOO_MANY_IDS)
    .execute(&mut **tx)
    .await?;
    metrics::counter!("workers_identity_links_refused_total", "reason" => REFUSED_TOO_MANY_IDS)
        .increment(refused.rows_affected());
    Ok(())
}

/// Tells readers that the project's persons moved.
pub async fn bump(tx: &mut Transaction<'_, Postgres>, project: &str) -> sqlx::Result<()> {
    sqlx::query(
        "insert into persons_versions (project, version) values ($1, 1)
         on conflict (project) do update set version = persons_versions.version + 1",
    )
    .bind(project)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 10, minute, 0).unwrap()
    }

    fn link(message: &str, minute: u32, kind: LinkKind, from: &str, to: &str) -> StoredLink {
        StoredLink {
            message_id: message.into(),
            ts: at(minute),
            kind,
            from: from.into(),
            to: to.into(),
        }
    }

    fn ords(keys: &[&str]) -> HashMap<String, i32> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| ((*k).to_owned(), i as i32))
            .collect()
    }

    fn identified(ids: &[(&str, u32)]) -> HashMap<String, (DateTime<Utc>, String)> {
        ids.iter()
            .map(|(k, m)| ((*k).to_owned(), (at(*m), format!("{k}-first"))))
            .collect()
    }

    #[test]
    fn a_chain_from_an_anonymous_visitor_to_a_renamed_learner_is_one_person() {
        let links = [
            link("m1", 5, LinkKind::Identify, "a1", "u1"),
            link("m2", 9, LinkKind::Alias, "u1", "u2"),
        ];
        let out = replay(&links, &identified(&[("u1", 5), ("u2", 9)]), &ords(&["a1", "u1", "u2"]));
        assert_eq!(out.persons, BTreeMap::from([(0, 0), (1, 0), (2, 0)]));
        assert_eq!(out.outcomes.values().filter(|o| o.is_some()).count(), 0);
    }

    #[test]
    fn merging_two_identified_learners_is_refused_whatever_the_arrival_order() {
        // u2 was a learner before the alias: refused. A second learner signing in on a shared
        // device (a1 already identified as u1) is refused too.
        let mut links = vec![
            link("m1", 5, LinkKind::Identify, "a1", "u1"),
            link("m2", 9, LinkKind::Alias, "u1", "u2"),
            link("m3", 12, LinkKind::Identify, "a1", "u3"),
        ];
        let ids = identified(&[("u1", 5), ("u2", 1), ("u3", 12)]);
        let keys = ords(&["a1", "u1", "u2", "u3"]);
        let out = replay(&links, &ids, &keys);
        assert_eq!(out.persons, BTreeMap::from([(0, 0), (1, 0)]));
        assert_eq!(out.outcomes["m2"], Some(REFUSED_IDENTIFIED));
        assert_eq!(out.outcomes["m3"], Some(REFUSED_IDENTIFIED));
        links.reverse();
        assert_eq!(replay(&links, &ids, &keys), out);
    }

    #[test]
    fn a_late_link_is_applied_in_event_time_order() {
        // The visitor a1 signs up as u1 at minute 5; a link at minute 3 (arriving last) first
        // merged a1 into u0, so the sign-up as u1 is now the shared-device case and refused.
        let ids = identified(&[("u0", 3), ("u1", 5)]);
        let keys = ords(&["a1", "u0", "u1"]);
        let early = [link("m1", 5, LinkKind::Identify, "a1", "u1")];
        assert_eq!(replay(&early, &ids, &keys).persons, BTreeMap::from([(0, 0), (2, 0)]));
        let late = [early[0].clone(), link("m0", 3, LinkKind::Identify, "a1", "u0")];
        let out = replay(&late, &ids, &keys);
        assert_eq!(out.persons, BTreeMap::from([(0, 0), (1, 0)]));
        assert_eq!(out.outcomes["m1"], Some(REFUSED_IDENTIFIED));
    }

    #[test]
    fn ties_in_time_are_ordered_by_message_id() {
        let keys = ords(&["a1", "u1", "u2"]);
        // At the same millisecond, "m-a" comes first: a1 joins u1; "m-b" is the second sign-in.
        let links = [
            link("m-b", 5, LinkKind::Identify, "a1", "u2"),
            link("m-a", 5, LinkKind::Identify, "a1", "u1"),
        ];
        let ids = HashMap::from([
            ("u1".to_owned(), (at(5), "m-a".to_owned())),
            ("u2".to_owned(), (at(5), "m-b".to_owned())),
        ]);
        let out = replay(&links, &ids, &keys);
        assert_eq!(out.persons, BTreeMap::from([(0, 0), (1, 0)]));
        assert_eq!(out.outcomes["m-a"], None);
        assert_eq!(out.outcomes["m-b"], Some(REFUSED_IDENTIFIED));
    }

    #[test]
    fn placeholders_are_not_ids() {
        for placeholder in ["undefined", " NULL ", "[object Object]", "0", "Anonymous"] {
            assert!(invalid_id(placeholder), "{placeholder}");
        }
        for id in ["u-1", "a1b2", "nullable", "00"] {
            assert!(!invalid_id(id), "{id}");
        }
    }
}
