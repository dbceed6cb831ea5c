//! The ingest service: a minimal hyper server that accepts Segment-compatible event batches,
//! validates and normalises every event on its own (one bad event never fails the others), publishes
//! the accepted ones to JetStream (coalescing concurrent requests into few messages) and answers 2xx
//! only once JetStream has acknowledged all of them. Write keys come from PostgreSQL (through a
//! cache) or, for bootstrapping, from the configuration. xAPI statements (`POST`/`PUT
//! /xAPI/statements`) become the same learning events, all or nothing per request (`xapi`).

mod auth;
mod body;
mod config;
mod decode;
mod error;
mod fast;
pub mod instruments;
mod limiter;
mod publisher;
mod response;
mod routes;
mod server;
mod xapi;

pub use config::{Coalescing, Config, Limits, RateLimit};
pub use decode::{
    body_write_key, decode_batch, Decoded, Encoded, EncodedEvents, Endpoint, Envelope, Normalisation, RejectedEvent,
    Rejection,
};
pub use error::IngestError;
pub use server::App;
