//! The rollups of CONTRACT.md §6. [`Delta`] is what a set of events adds to every rollup, computed
//! by one pure function ([`Delta::add`]) that both the incremental path (one batch at a time) and
//! `workers reconcile` (everything, recomputed from MongoDB) use, so the two cannot disagree on a
//! definition. [`apply`] writes a delta inside the caller's transaction.

mod apply;
pub mod delta;

pub use apply::apply;
pub use delta::Delta;

use std::collections::BTreeSet;

use chrono::NaiveDate;

/// What one commit touched in one project, for the change notification.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Touched {
    pub project: String,
    pub days: BTreeSet<NaiveDate>,
    pub users: BTreeSet<String>,
    pub courses: BTreeSet<String>,
}

impl Delta {
    /// The projects, days, users and courses this delta changes.
    pub fn touched(&self) -> Vec<Touched> {
        let mut by_project: std::collections::BTreeMap<&str, Touched> = std::collections::BTreeMap::new();
        for (project, day, user) in &self.active {
            let touched = by_project.entry(project).or_default();
            touched.days.insert(*day);
            touched.users.insert(user.clone());
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
            .map(|(project, touched)| Touched {
                project: project.to_owned(),
                ..touched
            })
            .collect()
    }
}
