//! Publishing accepted events to JetStream. A request's events are packed into as few messages as
//! the server's payload limit allows (a JSON array of events each), all published at once, and the
//! request is answered only when JetStream has acknowledged every one of them: the double await of
//! a JetStream publish (send, then PubAck). Each message carries a fresh `Nats-Msg-Id`, so a
//! republished copy inside the stream's duplicate window is dropped by JetStream itself.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::{BufMut as _, Bytes, BytesMut};
use common::{event::Event, stream::Subjects};
use futures::future::try_join_all;

use crate::error::IngestError;

/// Room left in each message for the headers and framing the server counts against its limit.
const PAYLOAD_HEADROOM: usize = 4 * 1024;

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    subjects: Subjects,
    /// Largest payload the connected server accepts, less headroom.
    max_payload: usize,
    /// Longest to wait for every acknowledgement of one request.
    timeout: Duration,
}

impl Publisher {
    pub fn new(js: jetstream::Context, subjects: Subjects, server_max_payload: usize, timeout: Duration) -> Self {
        Self {
            js,
            subjects,
            max_payload: server_max_payload.saturating_sub(PAYLOAD_HEADROOM).max(64 * 1024),
            timeout,
        }
    }

    /// Publishes `events` (with their JSON encodings) for `project` and waits for JetStream to
    /// acknowledge all of them, or fails with a retryable error.
    pub async fn publish(&self, project: &str, events: &[(Event, Vec<u8>)]) -> Result<(), IngestError> {
        let subject = self.subjects.events(project);
        let started = Instant::now();
        let messages = pack(events, self.max_payload);
        let publishes = messages.into_iter().map(|(payload, count)| {
            let subject = subject.clone();
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| IngestError::Unavailable(e.to_string()))?;
                ack.await.map_err(|e| IngestError::Unavailable(e.to_string()))?;
                metrics::histogram!("ingest_jetstream_publish_batch_size").record(count as f64);
                Ok::<_, IngestError>(())
            }
        });
        let outcome = tokio::time::timeout(self.timeout, try_join_all(publishes)).await;
        metrics::histogram!("ingest_jetstream_publish_duration_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                metrics::counter!("ingest_jetstream_publish_failures_total", "reason" => "error").increment(1);
                tracing::warn!(%error, project, "JetStream did not acknowledge a publish");
                Err(error)
            }
            Err(_) => {
                metrics::counter!("ingest_jetstream_publish_failures_total", "reason" => "timeout").increment(1);
                tracing::warn!(timeout = ?self.timeout, project, "JetStream acknowledgement timed out");
                Err(IngestError::Unavailable(format!(
                    "no acknowledgement within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

/// Packs event encodings into JSON arrays of at most `max_payload` bytes (an event larger than
/// that travels alone), returning each payload with its event count.
fn pack(events: &[(Event, Vec<u8>)], max_payload: usize) -> Vec<(Bytes, usize)> {
    let mut messages = Vec::new();
    let mut current = BytesMut::new();
    let mut count = 0;
    for (_, json) in events {
        if count > 0 && current.len() + json.len() + 2 > max_payload {
            current.put_u8(b']');
            messages.push((current.split().freeze(), count));
            count = 0;
        }
        current.put_u8(if count == 0 { b'[' } else { b',' });
        current.extend_from_slice(json);
        count += 1;
    }
    if count > 0 {
        current.put_u8(b']');
        messages.push((current.freeze(), count));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> (Event, Vec<u8>) {
        let json = format!(
            r#"{{"project":"p","message_id":"{id}","type":"track","event":"e","user_id":"u","ts":"2026-01-01T00:00:00Z","day":"2026-01-01","received_at":"2026-01-01T00:00:00Z"}}"#
        );
        (serde_json::from_str(&json).unwrap(), json.into_bytes())
    }

    #[test]
    fn events_are_packed_into_json_arrays_under_the_payload_limit() {
        let events: Vec<_> = (0..10).map(|i| event(&format!("m{i}"))).collect();
        let one = events[0].1.len();
        let messages = pack(&events, one * 3 + 4);
        assert_eq!(messages.iter().map(|(_, n)| n).sum::<usize>(), 10);
        assert!(messages.iter().all(|(payload, _)| payload.len() <= one * 3 + 4));
        let decoded: Vec<Event> = messages
            .iter()
            .flat_map(|(payload, _)| serde_json::from_slice::<Vec<Event>>(payload).unwrap())
            .collect();
        assert_eq!(
            decoded.iter().map(|e| e.message_id.as_str()).collect::<Vec<_>>(),
            (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
    }
}
