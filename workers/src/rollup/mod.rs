//! The rollups of docs/contract.md §6. [`Delta`] is what a set of events adds to every rollup, computed
//! by one pure function ([`Delta::add`]) that both the incremental path (one batch at a time) and
//! `workers reconcile` (everything, recomputed from MongoDB) use, so the two cannot disagree on a
//! definition. [`apply`] writes a delta inside the caller's transaction.

/// Columns of one bulk statement, pushed row by row (for `apply` and `learning`, which follow).
macro_rules! columns {
    ($($name:ident : $ty:ty),* $(,)?) => {{
        #[derive(Default)]
        #[allow(non_camel_case_types)]
        struct Columns<'a> { $($name: Vec<$ty>),* }
        Columns::default()
    }};
}

mod apply;
pub mod bitmaps;
pub mod delta;
pub mod learning;

pub use apply::{apply, apply_known, apply_rows};
pub use delta::Delta;

use std::collections::BTreeMap;

use common::change::Change;

impl Delta {
    /// The projects, days, users and courses this delta changes, for the change notification.
    pub fn touched(&self) -> Vec<Change> {
        let mut by_project: BTreeMap<&str, Change> = BTreeMap::new();
        for (project, day, user) in &self.active {
            let change = by_project.entry(project).or_default();
            change.days.insert(*day);
            change.users.insert(user.clone());
        }
        let courses = self
            .course_days
            .keys()
            .map(|(p, c, _)| (p, c))
            .chain(self.catalog.keys().map(|(p, c)| (p, c)));
        for (project, course) in courses {
            by_project.entry(project).or_default().courses.insert(course.clone());
        }
        by_project
            .into_iter()
            .map(|(project, change)| Change {
                project: project.to_owned(),
                ..change
            })
            .collect()
    }
}
