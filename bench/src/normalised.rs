//! A workload as ingest normalises it, by ingest's own decoder (what a JetStream message carries):
//! the input of the drains and the workers' benchmarks, which publish or decode events without
//! going through HTTP.

use std::time::Duration;

use common::event::Event;
use serde_json::Value;

/// `raw` (Segment events) accepted into `project` as ingest would, received now; fails if ingest
/// rejects any of them.
pub fn events(project: &str, raw: &[Value]) -> anyhow::Result<Vec<Event>> {
    let limits = ingest::Limits::default();
    let mut out = Vec::with_capacity(raw.len());
    for chunk in raw.chunks(limits.max_batch_events) {
        let mut body = serde_json::to_vec(&serde_json::json!({"batch": chunk}))?;
        let envelope =
            ingest::decode_batch(&mut body, ingest::Endpoint::Batch, &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
        let decoded = envelope.validate(&ingest::Normalisation {
            project,
            received_at: chrono::Utc::now(),
            max_clock_skew: Duration::from_secs(60),
            historical_horizon: Duration::from_secs(30 * 86_400),
            limits: &limits,
        });
        anyhow::ensure!(
            decoded.rejected.is_empty(),
            "the workload has invalid events: {:?}",
            decoded.rejected
        );
        out.extend(decoded.accepted.into_iter().map(|(event, _)| event));
    }
    Ok(out)
}
