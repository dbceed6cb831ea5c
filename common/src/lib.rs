//! What every service of the activity pipeline shares: the event model that travels from ingest to
//! workers, the names of streams and subjects, configuration pieces, telemetry, the admin endpoints
//! (`/metrics`, `/healthz`, `/readyz`) and the shutdown signal.

pub mod admin;
pub mod bitmap;
pub mod change;
pub mod config;
pub mod documents;
pub mod event;
pub mod keys;
pub mod origins;
pub mod project;
pub mod raw_bson;
pub mod schema;
pub mod serve;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod wire_time;
