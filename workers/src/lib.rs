//! The workers service: pulls accepted events from the JetStream stream through a durable
//! consumer, counts each exactly once in the PostgreSQL rollups (ledger.rs says how), stores each
//! raw event once in MongoDB `events`, keeps `student_learning_paths` up to date, acknowledges
//! only after both stores committed, and announces what changed so the api can refresh.
//! docs/architecture.md draws the whole data flow.

mod changes;
mod config;
pub mod dead_letter;
mod error;
pub mod ferretdb;
pub mod identity;
pub mod instruments;
pub mod ledger;
pub mod ordinals;
pub mod paths;
pub mod reconcile;
pub mod rollup;
pub mod store;
mod worker;

pub use config::{Config, DlqCommand, DlqConfig, DlqSelect, Failpoint, ReconcileConfig};
pub use error::WorkerError;
pub use reconcile::{reconcile, Difference};
pub use worker::{decode, prune_raw_events_once, Worker};
