//! The distinct-count rollups as bitmaps (`activity_bitmaps`, `user_first_day`), merged in the
//! rollup transaction. A bitmap is a set, so merging the same users twice changes nothing; what
//! needs care is two workers merging into one row at once, which is why every merge is
//! "make sure the row exists, lock it, read it, write the union": without the first step two
//! transactions could both insert the row and the second would overwrite the first's users.
//!
//! Cohorts (kind [`Kind::Cohort`]) hold each user under their first active day. A late event can
//! move that day earlier: the user then leaves the later cohort and joins the earlier one, both in
//! the same transaction, under the lock of the user's `user_first_day` row.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use common::bitmap::{self, Kind, RoaringBitmap};
use sqlx::{Postgres, Transaction};

use super::Delta;
use crate::ordinals::Ordinals;

/// A row of `activity_bitmaps`: (project, kind, course_id or "", day).
pub type Key = (String, i16, String, NaiveDate);

/// What a transaction does to the bitmaps: users added to and removed from each row.
#[derive(Debug, Default)]
pub struct Changes {
    pub add: BTreeMap<Key, RoaringBitmap>,
    pub remove: BTreeMap<Key, RoaringBitmap>,
}

impl Changes {
    fn add(&mut self, key: Key, ord: i32) {
        self.add.entry(key).or_default().insert(bitmap::member(ord));
    }

    fn remove(&mut self, key: Key, ord: i32) {
        self.remove.entry(key).or_default().insert(bitmap::member(ord));
    }
}

/// The bitmaps of users active, learning and viewing, as the delta's sets say.
pub fn from_delta(delta: &Delta, ords: &Ordinals) -> Changes {
    let mut changes = Changes::default();
    let ord = |project: &str, user: &str| ords.get(&(project.to_owned(), user.to_owned())).copied();
    for (project, day, user) in &delta.active {
        if let Some(ord) = ord(project, user) {
            changes.add((project.clone(), Kind::Active.code(), String::new(), *day), ord);
        }
    }
    for ((project, course, day, user), viewer) in &delta.course_users {
        if let Some(ord) = ord(project, user) {
            changes.add((project.clone(), Kind::CourseActive.code(), course.clone(), *day), ord);
            if *viewer {
                changes.add((project.clone(), Kind::CourseViewers.code(), course.clone(), *day), ord);
            }
        }
    }
    changes
}

/// Moves users to the cohort of their first active day, given the days of the delta, and adds
/// the moves to `changes`.
pub async fn first_days(
    tx: &mut Transaction<'_, Postgres>,
    delta: &Delta,
    ords: &Ordinals,
    changes: &mut Changes,
) -> sqlx::Result<()> {
    // (project, ord) → the earliest day of the delta.
    let mut earliest: BTreeMap<(&str, i32), NaiveDate> = BTreeMap::new();
    for (project, day, user) in &delta.active {
        if let Some(ord) = ords.get(&(project.clone(), user.clone())) {
            let entry = earliest.entry((project.as_str(), *ord)).or_insert(*day);
            *entry = (*entry).min(*day);
        }
    }
    if earliest.is_empty() {
        return Ok(());
    }
    let (projects, users, days) = columns(earliest.iter().map(|((p, o), d)| (*p, *o, *d)));
    let inserted: Vec<(String, i32)> = sqlx::query_as(
        "insert into user_first_day (project, ord, first_day)
         select * from unnest($1::text[], $2::int4[], $3::date[])
         on conflict (project, ord) do nothing
         returning project, ord",
    )
    .bind(&projects)
    .bind(&users)
    .bind(&days)
    .fetch_all(&mut **tx)
    .await?;
    for (project, ord) in &inserted {
        if let Some(day) = earliest.remove(&(project.as_str(), *ord)) {
            changes.add((project.clone(), Kind::Cohort.code(), String::new(), day), *ord);
        }
    }
    if earliest.is_empty() {
        return Ok(());
    }
    let (projects, users, _) = columns(earliest.iter().map(|((p, o), d)| (*p, *o, *d)));
    let current: Vec<(String, i32, NaiveDate)> = sqlx::query_as(
        "select f.project, f.ord, f.first_day
           from user_first_day f join unnest($1::text[], $2::int4[]) as t(project, ord)
             on f.project = t.project and f.ord = t.ord
          order by f.project, f.ord
            for update of f",
    )
    .bind(&projects)
    .bind(&users)
    .fetch_all(&mut **tx)
    .await?;
    let mut moved = Vec::new();
    for (project, ord, first) in current {
        let Some(day) = earliest.get(&(project.as_str(), ord)).copied() else {
            continue;
        };
        if day < first {
            changes.remove((project.clone(), Kind::Cohort.code(), String::new(), first), ord);
            changes.add((project.clone(), Kind::Cohort.code(), String::new(), day), ord);
            moved.push((project, ord, day));
        }
    }
    if !moved.is_empty() {
        let (projects, users, days) = columns(moved.iter().map(|(p, o, d)| (p.as_str(), *o, *d)));
        sqlx::query(
            "update user_first_day f set first_day = t.first_day
               from unnest($1::text[], $2::int4[], $3::date[]) as t(project, ord, first_day)
              where f.project = t.project and f.ord = t.ord",
        )
        .bind(&projects)
        .bind(&users)
        .bind(&days)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn columns<'a>(rows: impl Iterator<Item = (&'a str, i32, NaiveDate)>) -> (Vec<&'a str>, Vec<i32>, Vec<NaiveDate>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, z) in rows {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    (a, b, c)
}

/// Merges `changes` into `activity_bitmaps`: rows locked in key order, rewritten only where the
/// set changes.
pub async fn merge(tx: &mut Transaction<'_, Postgres>, changes: &Changes) -> sqlx::Result<()> {
    let mut keys: Vec<&Key> = changes.add.keys().chain(changes.remove.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let mut projects = Vec::with_capacity(keys.len());
    let mut kinds = Vec::with_capacity(keys.len());
    let mut courses = Vec::with_capacity(keys.len());
    let mut days = Vec::with_capacity(keys.len());
    for (project, kind, course, day) in &keys {
        projects.push(project.as_str());
        kinds.push(*kind);
        courses.push(course.as_str());
        days.push(*day);
    }
    let empty = bitmap::encode(&RoaringBitmap::new());
    sqlx::query(
        "insert into activity_bitmaps (project, kind, course_id, day, users)
         select project, kind, course_id, day, $5::bytea from unnest($1::text[], $2::int2[], $3::text[], $4::date[])
                as t(project, kind, course_id, day)
         on conflict do nothing",
    )
    .bind(&projects)
    .bind(&kinds)
    .bind(&courses)
    .bind(&days)
    .bind(&empty)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(String, i16, String, NaiveDate, Vec<u8>)> = sqlx::query_as(
        "select b.project, b.kind, b.course_id, b.day, b.users
           from activity_bitmaps b
           join unnest($1::text[], $2::int2[], $3::text[], $4::date[]) as t(project, kind, course_id, day)
             on (b.project, b.kind, b.course_id, b.day) = (t.project, t.kind, t.course_id, t.day)
          order by b.project, b.kind, b.course_id, b.day
            for update of b",
    )
    .bind(&projects)
    .bind(&kinds)
    .bind(&courses)
    .bind(&days)
    .fetch_all(&mut **tx)
    .await?;
    let mut changed: Vec<(Key, Vec<u8>)> = Vec::new();
    for (project, kind, course, day, stored) in rows {
        let key = (project, kind, course, day);
        let old = bitmap::decode(&stored).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let mut new = old.clone();
        if let Some(add) = changes.add.get(&key) {
            new |= add;
        }
        if let Some(remove) = changes.remove.get(&key) {
            new -= remove;
        }
        if new != old {
            changed.push((key, bitmap::encode(&new)));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    let mut projects = Vec::with_capacity(changed.len());
    let mut kinds = Vec::with_capacity(changed.len());
    let mut courses = Vec::with_capacity(changed.len());
    let mut days = Vec::with_capacity(changed.len());
    let mut blobs = Vec::with_capacity(changed.len());
    for ((project, kind, course, day), blob) in &changed {
        projects.push(project.as_str());
        kinds.push(*kind);
        courses.push(course.as_str());
        days.push(*day);
        blobs.push(blob.as_slice());
    }
    sqlx::query(
        "update activity_bitmaps b set users = t.users
           from unnest($1::text[], $2::int2[], $3::text[], $4::date[], $5::bytea[]) as t(project, kind, course_id, day, users)
          where (b.project, b.kind, b.course_id, b.day) = (t.project, t.kind, t.course_id, t.day)",
    )
    .bind(&projects)
    .bind(&kinds)
    .bind(&courses)
    .bind(&days)
    .bind(&blobs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
