//! Publishing accepted events to JetStream, coalesced across requests.
//!
//! Small requests (one event from a browser, a handful from a mobile SDK) are most of the traffic;
//! one JetStream message and one acknowledgement round trip each would make the server's per-message
//! cost the bottleneck. So requests do not publish themselves:
//!
//! 1. A request hands its encoded events and a oneshot to a bounded queue ([`Publisher::publish`])
//!    and waits on the oneshot for at most the publish timeout (then 503). A full queue is 503 at
//!    once: the memory held by waiting requests is bounded.
//! 2. One batcher task takes the first queued request, then everything else already queued, and,
//!    when the queue runs dry while messages are waiting for their acknowledgement, what arrives
//!    next until one of them is settled, for at most the linger (1 ms by default); until a message
//!    would exceed its event count or the server's payload limit. Under load the queue is never
//!    dry, so messages fill without waiting; many small requests fill them while the previous
//!    ones are acknowledged (group commit); with nothing outstanding a request does not wait.
//! 3. The events are grouped by project (a message goes to its project's subject) and packed, in
//!    order, into JSON arrays; a request may span several messages and a message several requests.
//! 4. Each message is published by a task of its own with a fresh `Nats-Msg-Id` (a UUIDv7). When the
//!    publish fails before the deadline it is retried with the same id, so a copy JetStream did
//!    store is dropped by its duplicate window. At most `max_unacked` messages are outstanding; the
//!    batcher waits for a slot, which back-pressures into the bounded queue.
//! 5. When a message's PubAck arrives, every request in it counts one message done; a request whose
//!    messages are all acknowledged is told Ok and only then answered 2xx. A failed or timed-out
//!    message fails every request in it (503, retry: nothing was acknowledged to the client).
//!
//! Duplicates of one project+messageId across messages (a client's retry) are the workers' job.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use bytes::{BufMut as _, Bytes, BytesMut};
use common::{project::ProjectId, stream::Subjects};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::{config::Coalescing, decode::EncodedEvents, error::IngestError};

/// Room left in each message for the headers and framing the server counts against its limit.
const PAYLOAD_HEADROOM: usize = 4 * 1024;
/// Pause before republishing a message whose publish failed (NATS reconnecting, say).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

type Outcome = Result<(), IngestError>;

/// The handle requests publish through; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Job>,
    /// Longest a request waits for every acknowledgement of its events.
    timeout: Duration,
}

/// One request's events, waiting to be published.
struct Job {
    project: ProjectId,
    events: EncodedEvents,
    waiter: Arc<Waiter>,
}

/// Completes a request once every message holding its events is acknowledged, or at the first
/// failure.
struct Waiter {
    /// Messages holding some of the request's events and not yet acknowledged.
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
}

impl Waiter {
    fn finish(&self, outcome: Outcome) {
        if let Some(done) = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            done.send(outcome).ok();
        }
    }

    fn message_done(&self, outcome: &Result<(), String>) {
        match outcome {
            Err(reason) => self.finish(Err(IngestError::Unavailable(reason.clone()))),
            Ok(()) => {
                if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish(Ok(()));
                }
            }
        }
    }
}

/// What the batcher needs.
struct Batcher {
    js: jetstream::Context,
    subjects: Subjects,
    /// Largest payload of one message.
    max_payload: usize,
    max_events: usize,
    linger: Duration,
    timeout: Duration,
    /// One permit per message published and not yet acknowledged.
    unacked: Arc<Semaphore>,
    max_unacked: usize,
    /// Told each time a message is settled (acknowledged or failed).
    settled: Arc<Notify>,
}

impl Publisher {
    /// Starts the batcher task; it runs until every `Publisher` clone is dropped and the messages
    /// in flight are settled.
    pub fn start(
        js: jetstream::Context,
        subjects: Subjects,
        server_max_payload: usize,
        timeout: Duration,
        settings: &Coalescing,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(settings.queue.max(1));
        let batcher = Batcher {
            js,
            subjects,
            max_payload: server_max_payload.saturating_sub(PAYLOAD_HEADROOM).max(64 * 1024),
            max_events: settings.max_events.max(1),
            linger: settings.linger,
            timeout,
            unacked: Arc::new(Semaphore::new(settings.max_unacked.max(1))),
            max_unacked: settings.max_unacked.max(1),
            settled: Arc::new(Notify::new()),
        };
        tokio::spawn(batcher.run(receiver));
        Self { queue, timeout }
    }

    /// Queues `events` (JSON encodings) of `project` and waits until JetStream has acknowledged all
    /// of them, or fails with a retryable error (queue full, publish failed, timeout).
    pub async fn publish(&self, project: &ProjectId, events: EncodedEvents) -> Result<(), IngestError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, outcome) = oneshot::channel();
        let job = Job {
            project: project.clone(),
            events,
            waiter: Arc::new(Waiter {
                remaining: AtomicUsize::new(0),
                done: Mutex::new(Some(done)),
            }),
        };
        self.queue.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IngestError::Unavailable("ingest is shutting down".into()),
        })?;
        match tokio::time::timeout(self.timeout, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(IngestError::Unavailable("the publisher stopped".into())),
            Err(_) => {
                metrics::counter!("ingest_jetstream_publish_failures_total", "reason" => "timeout").increment(1);
                tracing::warn!(timeout = ?self.timeout, project = %project, "JetStream acknowledgement timed out");
                Err(IngestError::Unavailable(format!(
                    "no acknowledgement within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

/// A message being packed: a JSON array of events and the requests they come from.
struct Message {
    project: ProjectId,
    payload: BytesMut,
    events: usize,
    waiters: Vec<Arc<Waiter>>,
}

impl Batcher {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match queue.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut events = first.events.len();
            let mut bytes: usize = first.events.total_bytes();
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + self.linger;
            while events < self.max_events && bytes < self.max_payload {
                let next = match queue.try_recv() {
                    Ok(job) => job,
                    Err(_) if self.linger.is_zero() => break,
                    // Nothing is waiting for an acknowledgement: the server is idle, waiting
                    // would only add the linger to every request's latency.
                    Err(_) if self.unacked.available_permits() == self.max_unacked => break,
                    // Otherwise what arrives until a message is settled (or the linger is over)
                    // rides along: under load, messages fill while the previous ones are acked.
                    Err(_) => tokio::select! {
                        next = queue.recv() => match next {
                            Some(job) => job,
                            None => break,
                        },
                        () = tokio::time::sleep_until(deadline) => break,
                        () = self.settled.notified() => continue,
                    },
                };
                let next_bytes: usize = next.events.total_bytes();
                if events + next.events.len() > self.max_events || bytes + next_bytes > self.max_payload {
                    // Starts the next round, so messages stay under their caps where possible.
                    carried = Some(next);
                    break;
                }
                events += next.events.len();
                bytes += next_bytes;
                jobs.push(next);
            }
            for message in self.pack(jobs) {
                let Ok(permit) = self.unacked.clone().acquire_owned().await else {
                    return;
                };
                let js = self.js.clone();
                let subject = self.subjects.events(&message.project);
                let deadline = Instant::now() + self.timeout;
                let settled = self.settled.clone();
                tokio::spawn(async move {
                    send(js, subject, message, deadline).await;
                    drop(permit);
                    settled.notify_one();
                });
            }
        }
    }

    /// Packs the jobs' events, grouped by project and in order, into messages under the caps, and
    /// counts on each request the messages it waits for (before any is published).
    fn pack(&self, jobs: Vec<Job>) -> Vec<Message> {
        let mut messages: Vec<Message> = Vec::new();
        let mut open: Vec<usize> = Vec::new(); // index in `messages` of each project's open message
                                               // Bytes still to pack (with the separators): a new message is sized for them at once,
                                               // rather than grown (and copied) event by event.
        let mut left: usize = jobs.iter().map(|job| job.events.total_bytes() + 2).sum();
        for job in jobs {
            let mut slot = open.iter().position(|&i| messages[i].project == job.project);
            for event in job.events.iter() {
                let full = slot.is_some_and(|s| {
                    let m = &messages[open[s]];
                    m.events >= self.max_events || m.payload.len() + event.len() + 2 > self.max_payload
                });
                let index = match slot {
                    Some(s) if !full => open[s],
                    _ => {
                        messages.push(Message {
                            project: job.project.clone(),
                            payload: BytesMut::with_capacity(
                                left.clamp(event.len() + 2, self.max_payload.max(event.len() + 2)),
                            ),
                            events: 0,
                            waiters: Vec::new(),
                        });
                        let index = messages.len() - 1;
                        match slot {
                            Some(s) => open[s] = index,
                            None => {
                                open.push(index);
                                slot = Some(open.len() - 1);
                            }
                        }
                        index
                    }
                };
                left = left.saturating_sub(event.len() + 1);
                let message = &mut messages[index];
                message.payload.put_u8(if message.events == 0 { b'[' } else { b',' });
                message.payload.extend_from_slice(event);
                message.events += 1;
                if !message.waiters.last().is_some_and(|w| Arc::ptr_eq(w, &job.waiter)) {
                    job.waiter.remaining.fetch_add(1, Ordering::AcqRel);
                    message.waiters.push(job.waiter.clone());
                }
            }
        }
        for message in &mut messages {
            message.payload.put_u8(b']');
        }
        messages
    }
}

/// Publishes one message and settles its requests: the double await of a JetStream publish (send,
/// then PubAck), retried with the same message id until `deadline`.
async fn send(js: jetstream::Context, subject: String, message: Message, deadline: Instant) {
    let started = Instant::now();
    let payload: Bytes = message.payload.freeze();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    let outcome = loop {
        let attempt = async {
            let ack = js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(drop).map_err(|e| e.to_string())
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(())) => break Ok(()),
            Ok(Err(error)) if deadline.saturating_duration_since(Instant::now()) > RETRY_PAUSE * 2 => {
                tracing::debug!(%error, subject, "JetStream publish failed; retrying with the same message id");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Err(error)) => {
                metrics::counter!("ingest_jetstream_publish_failures_total", "reason" => "error").increment(1);
                tracing::warn!(%error, subject, "JetStream did not acknowledge a message");
                break Err(format!("the event stream refused the events: {error}"));
            }
            Err(_) => break Err("no acknowledgement from the event stream in time".to_owned()),
        }
    };
    metrics::histogram!("ingest_jetstream_publish_duration_seconds").record(started.elapsed().as_secs_f64());
    if outcome.is_ok() {
        metrics::histogram!("ingest_jetstream_publish_batch_size").record(message.events as f64);
    }
    for waiter in &message.waiters {
        waiter.message_done(&outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(project: &str, events: &[&str]) -> Job {
        let (done, _) = oneshot::channel();
        Job {
            project: ProjectId::parse(project).unwrap(),
            events: events.iter().fold(EncodedEvents::default(), |mut encoded, e| {
                encoded.push(format!("{{\"id\":\"{e}\"}}").as_bytes());
                encoded
            }),
            waiter: Arc::new(Waiter {
                remaining: AtomicUsize::new(0),
                done: Mutex::new(Some(done)),
            }),
        }
    }

    async fn batcher(max_events: usize, max_payload: usize) -> Batcher {
        // `pack` needs no server; a context over an unconnected client is enough.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        Batcher {
            js: jetstream::new(client),
            subjects: Subjects::new("t"),
            max_payload,
            max_events,
            linger: Duration::ZERO,
            timeout: Duration::from_secs(1),
            unacked: Arc::new(Semaphore::new(1)),
            max_unacked: 1,
            settled: Arc::new(Notify::new()),
        }
    }

    #[tokio::test]
    async fn requests_are_packed_by_project_in_order_under_the_caps() {
        let batcher = batcher(3, 1_000).await;
        let jobs = vec![
            job("a", &["1", "2"]),
            job("b", &["x"]),
            job("a", &["3", "4"]),
            job("b", &["y"]),
        ];
        let waiters: Vec<_> = jobs.iter().map(|j| j.waiter.clone()).collect();
        let messages = batcher.pack(jobs);
        let shapes: Vec<_> = messages
            .iter()
            .map(|m| (m.project.to_string(), String::from_utf8(m.payload.to_vec()).unwrap()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("a".into(), r#"[{"id":"1"},{"id":"2"},{"id":"3"}]"#.to_owned()),
                ("b".into(), r#"[{"id":"x"},{"id":"y"}]"#.to_owned()),
                ("a".into(), r#"[{"id":"4"}]"#.to_owned()),
            ]
        );
        let remaining: Vec<_> = waiters.iter().map(|w| w.remaining.load(Ordering::Acquire)).collect();
        assert_eq!(remaining, [1, 1, 2, 1]);
    }

    #[tokio::test]
    async fn a_request_is_done_when_all_its_messages_are_and_fails_with_any() {
        let (done, outcome) = oneshot::channel();
        let waiter = Waiter {
            remaining: AtomicUsize::new(2),
            done: Mutex::new(Some(done)),
        };
        waiter.message_done(&Ok(()));
        waiter.message_done(&Ok(()));
        assert!(outcome.await.unwrap().is_ok());
        let (done, outcome) = oneshot::channel();
        let waiter = Waiter {
            remaining: AtomicUsize::new(2),
            done: Mutex::new(Some(done)),
        };
        waiter.message_done(&Err("down".into()));
        waiter.message_done(&Ok(()));
        assert!(outcome.await.unwrap().is_err());
    }
}
