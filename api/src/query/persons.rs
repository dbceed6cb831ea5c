//! Persons (docs/contract.md §6, "One person"): the workers keep, in `persons`, every ordinal of
//! a person of more than one id with the person's smallest ordinal (workers/src/identity.rs).
//! Distinct counts map the ordinals of their bitmaps to persons when they read them, so a link
//! counts a person once on every day, before and after it was made, without any bitmap being
//! rewritten.

use std::{collections::HashMap, sync::Arc};

use chrono::NaiveDate;
use common::bitmap::RoaringBitmap;

use crate::ApiError;

/// One project's partition of ordinals into persons.
#[derive(Debug, Default)]
pub struct Persons {
    /// Ordinals that are not their person's representative.
    others: RoaringBitmap,
    /// Every ordinal of a person of more than one id → the person's representative.
    person_of: HashMap<u32, u32>,
    /// The representatives' ordinals.
    representatives: RoaringBitmap,
}

impl Persons {
    pub fn from_rows(rows: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut persons = Self::default();
        for (ord, person) in rows {
            persons.person_of.insert(ord, person);
            if ord == person {
                persons.representatives.insert(ord);
            } else {
                persons.others.insert(ord);
            }
        }
        persons
    }

    async fn load(pool: &sqlx::PgPool, project: &str) -> Result<Self, ApiError> {
        let rows: Vec<(i32, i32)> = sqlx::query_as("select ord, person_ord from persons where project = $1")
            .bind(project)
            .fetch_all(pool)
            .await?;
        let ord = |o: i32| u32::try_from(o).unwrap_or(0);
        Ok(Self::from_rows(rows.into_iter().map(|(o, p)| (ord(o), ord(p)))))
    }

    /// The person of an ordinal (itself when it is a person of one id).
    pub fn person(&self, ord: u32) -> u32 {
        self.person_of.get(&ord).copied().unwrap_or(ord)
    }

    /// The persons of a set of ordinals.
    pub fn map(&self, users: &RoaringBitmap) -> RoaringBitmap {
        if self.others.is_disjoint(users) {
            return users.clone();
        }
        let mut persons = users - &self.others;
        persons.extend((users & &self.others).iter().map(|o| self.person(o)));
        persons
    }

    /// Every ordinal of the given persons (for filters over raw ordinals: the ledger, rows by id).
    pub fn expand(&self, persons: &RoaringBitmap) -> RoaringBitmap {
        if self.representatives.is_disjoint(persons) {
            return persons.clone();
        }
        let mut ords = persons.clone();
        ords.extend(
            self.person_of
                .iter()
                .filter(|(_, person)| persons.contains(**person))
                .map(|(ord, _)| *ord),
        );
        ords
    }

    /// Whether no two ids of the project are one person.
    pub fn is_empty(&self) -> bool {
        self.person_of.is_empty()
    }

    /// The first active day of each person of more than one id: the earliest of its ids'.
    pub async fn first_days(&self, pool: &sqlx::PgPool, project: &str) -> Result<HashMap<u32, NaiveDate>, ApiError> {
        if self.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i32, NaiveDate)> = sqlx::query_as(
            "select p.person_ord, min(f.first_day) from persons p
               join user_first_day f on f.project = p.project and f.ord = p.ord
              where p.project = $1 group by p.person_ord",
        )
        .bind(project)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(p, d)| (u32::try_from(p).unwrap_or(0), d))
            .collect())
    }

    /// Cohorts of persons from cohorts of ordinals (each id under its own first day): a person of
    /// several ids belongs to the cohort of its earliest, `first_days`.
    pub fn cohort(&self, day: NaiveDate, users: &RoaringBitmap, first_days: &HashMap<u32, NaiveDate>) -> RoaringBitmap {
        let mut persons = self.map(users);
        if self.is_empty() {
            return persons;
        }
        let several = &persons & &self.representatives;
        for person in &several {
            if first_days.get(&person).is_some_and(|first| *first != day) {
                persons.remove(person);
            }
        }
        persons
    }
}

/// The partition of each project, read again only when the workers change it (they bump
/// `persons_versions`; one primary-key read per request checks it).
#[derive(Clone)]
pub struct PersonsCache {
    entries: moka::future::Cache<String, (i64, Arc<Persons>)>,
}

impl PersonsCache {
    pub fn new(projects: u64) -> Self {
        Self {
            entries: moka::future::Cache::new(projects),
        }
    }

    /// The current persons of `project`.
    pub async fn get(&self, pool: &sqlx::PgPool, project: &str) -> Result<Arc<Persons>, ApiError> {
        let version: i64 = sqlx::query_scalar("select version from persons_versions where project = $1")
            .bind(project)
            .fetch_optional(pool)
            .await?
            .unwrap_or(0);
        if version == 0 {
            return Ok(Arc::default());
        }
        if let Some((cached, persons)) = self.entries.get(project).await {
            if cached == version {
                return Ok(persons);
            }
        }
        let persons = Arc::new(Persons::load(pool, project).await?);
        self.entries
            .insert(project.to_owned(), (version, persons.clone()))
            .await;
        Ok(persons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ords: &[u32]) -> RoaringBitmap {
        ords.iter().copied().collect()
    }

    #[test]
    fn ids_of_one_person_count_once_and_expand_back() {
        // Persons {1, 4, 7} (representative 1) and {2, 9}.
        let persons = Persons::from_rows([(1, 1), (4, 1), (7, 1), (2, 2), (9, 2)]);
        assert_eq!(persons.map(&set(&[3, 4, 7])), set(&[1, 3]));
        assert_eq!(persons.map(&set(&[9, 5])), set(&[2, 5]));
        assert_eq!(persons.map(&set(&[5, 6])), set(&[5, 6]));
        assert_eq!(persons.expand(&set(&[1, 5])), set(&[1, 4, 5, 7]));
        let d = |n| NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        let first = HashMap::from([(1, d(2)), (2, d(5))]);
        // Ordinal 4's own first day is the 5th, its person's the 2nd.
        assert_eq!(persons.cohort(d(5), &set(&[4, 9, 8]), &first), set(&[2, 8]));
        assert_eq!(persons.cohort(d(2), &set(&[7]), &first), set(&[1]));
    }
}
