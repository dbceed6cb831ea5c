//! The change notification: after each rollup commit the workers publish, on `<prefix>.changes`
//! (`stream::Subjects::changes`), what the commit touched, so the api can drop the cached answers
//! of that project and push live progress to the learners concerned. Core NATS is enough: a lost
//! notification only delays freshness until the api's cache TTL.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// What one commit changed in one project.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub project: String,
    /// Days whose daily rollups changed.
    #[serde(default)]
    pub days: BTreeSet<NaiveDate>,
    /// Users whose stats, progress or activity changed.
    #[serde(default)]
    pub users: BTreeSet<String>,
    /// Courses whose analytics or catalog entry changed.
    #[serde(default)]
    pub courses: BTreeSet<String>,
}
