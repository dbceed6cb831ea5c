//! The dead-letter stream `<stream>_DLQ`: what the workers gave up on, kept with the reason until
//! an operator replays it (after a fix) or drops it (`workers dlq list|replay|drop`).
//!
//! A dead letter is a JetStream message whose payload is a JSON array of events (the format of
//! the events stream), so a replay is a plain republish. Its headers say why and where from:
//! `Dead-Letter-Reason` (a stable code: [`Reason`]), `Dead-Letter-Detail` (the error),
//! `Dead-Letter-Subject` (where the events were published), `Dead-Letter-Events` (how many) and
//! `Analytics-Message-Key`, the key of the message the events came from. A replay carries that
//! key, so the ledger treats replayed events as the same message's (ledger.rs): nothing that was
//! already counted or stored is counted or stored again.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::{jetstream, HeaderMap};
use bytes::Bytes;
use common::stream::Subjects;
use sha2::{Digest as _, Sha256};

/// The header carrying a message's key across a dead letter and its replay.
pub const MESSAGE_KEY_HEADER: &str = "Analytics-Message-Key";

/// Why something was dead-lettered (the `Dead-Letter-Reason` header and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The message is not a JSON array of events.
    Undecodable,
    /// One event a store refuses (PostgreSQL in the rollup, or its MongoDB document cannot be
    /// built); the other events of its message were counted.
    PoisonEvent,
    /// MongoDB refused an event's document after the rollups counted it.
    Unstorable,
    /// Delivered more than `WORKERS_MAX_DELIVERIES` times without being acknowledged (a message
    /// that keeps killing workers): set aside unprocessed.
    MaxDeliveries,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::PoisonEvent => "poison_event",
            Reason::Unstorable => "unstorable",
            Reason::MaxDeliveries => "max_deliveries",
        }
    }
}

/// Publishes dead letters; cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    subject: String,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, subjects: &Subjects) -> Self {
        Self {
            js,
            subject: subjects.dead_letter(),
        }
    }

    /// Stores one dead letter and waits for JetStream's acknowledgement; only then may the
    /// caller settle what it came from. Retried copies within the stream's duplicate window are
    /// dropped by their `Nats-Msg-Id`.
    pub async fn publish(
        &self,
        reason: Reason,
        detail: &str,
        subject: &str,
        message_key: &str,
        events: usize,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert("Dead-Letter-Reason", reason.code());
        headers.insert("Dead-Letter-Detail", truncate(detail, 1_000).as_str());
        headers.insert("Dead-Letter-Subject", subject);
        headers.insert("Dead-Letter-Events", events.to_string().as_str());
        headers.insert(MESSAGE_KEY_HEADER, message_key);
        let digest = Sha256::digest(&payload);
        let id = format!("dlq:{message_key}:{}", hex(&digest[..12]));
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .context("cannot publish to the dead-letter stream")?;
        ack.await.context("the dead-letter stream did not acknowledge")?;
        metrics::counter!("workers_dead_letters_total", "reason" => reason.code()).increment(1);
        metrics::counter!("workers_dead_letter_events_total", "reason" => reason.code()).increment(events as u64);
        Ok(())
    }
}

/// At most `max` bytes of `text`, on a character boundary, with no control characters (a header
/// value must not hold a line break).
fn truncate(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One stored dead letter, as `workers dlq list` shows it.
#[derive(Debug, Clone)]
pub struct Record {
    pub sequence: u64,
    pub time: String,
    pub reason: String,
    pub detail: String,
    pub subject: String,
    pub events: String,
    pub message_key: String,
    pub payload: Bytes,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}\t{} event(s)\t{}",
            self.sequence, self.time, self.reason, self.subject, self.events, self.detail
        )
    }
}

/// Every dead letter in the stream, oldest first.
pub async fn list(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<Record>> {
    let mut dlq = js
        .get_stream(stream)
        .await
        .with_context(|| format!("there is no dead-letter stream {stream}"))?;
    let state = dlq
        .info()
        .await
        .context("cannot read the dead-letter stream")?
        .state
        .clone();
    let mut records = Vec::new();
    if state.messages == 0 {
        return Ok(records);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = match dlq.get_raw_message(sequence).await {
            Ok(message) => message,
            // Deleted (replayed or dropped) sequences leave gaps.
            Err(error) if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => continue,
            Err(error) => return Err(anyhow::Error::new(error).context(format!("cannot read dead letter {sequence}"))),
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        records.push(Record {
            sequence,
            time: message.time.to_string(),
            reason: header("Dead-Letter-Reason"),
            detail: header("Dead-Letter-Detail"),
            subject: header("Dead-Letter-Subject"),
            events: header("Dead-Letter-Events"),
            message_key: header(MESSAGE_KEY_HEADER),
            payload: message.payload.clone(),
        });
    }
    Ok(records)
}

/// Republishes `record` to its original subject with its message key, then deletes it from
/// the dead-letter stream.
pub async fn replay(js: &jetstream::Context, stream: &str, record: &Record) -> anyhow::Result<()> {
    anyhow::ensure!(
        !record.subject.is_empty(),
        "dead letter {} has no Dead-Letter-Subject: cannot tell where to replay it",
        record.sequence
    );
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_KEY_HEADER, record.message_key.as_str());
    headers.insert("Nats-Msg-Id", format!("replay:{stream}:{}", record.sequence).as_str());
    let ack = js
        .publish_with_headers(record.subject.clone(), headers, record.payload.clone())
        .await
        .with_context(|| format!("cannot replay dead letter {}", record.sequence))?;
    tokio::time::timeout(Duration::from_secs(10), ack)
        .await
        .context("no acknowledgement for the replay within 10 s")?
        .with_context(|| format!("the events stream refused dead letter {}", record.sequence))?;
    drop_one(js, stream, record.sequence).await
}

/// Deletes one dead letter.
pub async fn drop_one(js: &jetstream::Context, stream: &str, sequence: u64) -> anyhow::Result<()> {
    let dlq = js
        .get_stream(stream)
        .await
        .context("cannot open the dead-letter stream")?;
    dlq.delete_message(sequence)
        .await
        .with_context(|| format!("cannot delete dead letter {sequence}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_short_and_single_line() {
        assert_eq!(truncate("a\nb\r\nc", 100), "a b  c");
        assert_eq!(truncate("ééé", 5), "éé");
    }
}
