//! The ingest service: a minimal hyper server that accepts Segment-compatible event batches,
//! validates and normalises every event on its own (one bad event never fails the others), publishes
//! the accepted ones to JetStream and answers 2xx only once JetStream has acknowledged all of them.

mod config;
mod decode;
mod error;
pub mod instruments;
mod publisher;
mod server;

pub use config::{Config, Limits};
pub use decode::{decode_batch, Decoded, Endpoint, Envelope, Normalisation, Rejection};
pub use error::IngestError;
pub use server::App;
