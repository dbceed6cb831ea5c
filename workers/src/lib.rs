//! The workers service: pulls accepted events from the JetStream stream through a durable consumer,
//! stores each raw event once in MongoDB `events`, rolls it up into PostgreSQL, acknowledges only
//! after both stores committed, and announces what changed so the api can refresh.

mod changes;
mod config;
mod consumer;
pub mod instruments;
mod paths;
pub mod reconcile;
pub mod rollup;
pub mod store;

pub use config::{Config, ReconcileConfig};
pub use consumer::App;
pub use reconcile::{reconcile, Difference};

/// The PostgreSQL schema, applied by workers at startup (and by tests).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
