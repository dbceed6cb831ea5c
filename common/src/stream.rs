//! Names and settings of the JetStream stream and the NATS subjects the pipeline uses, in one place
//! so ingest, workers and api cannot disagree about them.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::config::NatsConfig;

/// How long JetStream remembers a published message id to drop a republished copy. Ingest retries
/// a publish well within it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The subjects of one pipeline, derived from its prefix.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Where ingest publishes a project's events. Projects are validated to be subject-safe tokens.
    pub fn events(&self, project: &str) -> String {
        format!("{}.events.{project}", self.prefix)
    }

    /// Every project's events: the stream's subject filter.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// Where workers copy messages they gave up on (the dead-letter stream's subjects).
    pub fn dead_letter(&self) -> String {
        format!("{}.dead_letter", self.prefix)
    }

    /// Where workers announce what each commit changed, for the api's cache and live streams.
    pub fn changes(&self) -> String {
        format!("{}.changes", self.prefix)
    }
}

/// `get_or_create_stream`, safe when several processes start at once: the one whose create loses
/// the race (JetStream answers "subjects overlap" or "name in use") opens the winner's stream.
async fn get_or_create(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, async_nats::jetstream::context::CreateStreamError> {
    let mut attempt = 0;
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) if attempt < 5 => {
                if let Ok(stream) = js.get_stream(&config.name).await {
                    return Ok(stream);
                }
                tracing::debug!(%error, "creating the stream raced another process; retrying");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Creates the events stream if it is missing, or returns the existing one; both ingest and workers
/// call this at startup so either may start first.
pub async fn ensure_events_stream(js: &jetstream::Context, config: &NatsConfig) -> anyhow::Result<stream::Stream> {
    let subjects = Subjects::new(&config.subject_prefix);
    get_or_create(
        js,
        stream::Config {
            name: config.stream.clone(),
            subjects: vec![subjects.all_events()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            max_age: config.stream_max_age,
            max_bytes: config.stream_max_bytes,
            num_replicas: config.stream_replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("cannot create or open JetStream stream {}", config.stream))
}

/// The dead-letter stream: messages workers gave up on, with the reason in their headers, kept
/// for inspection and replay (`<events stream>_DLQ`).
pub async fn ensure_dead_letter_stream(js: &jetstream::Context, config: &NatsConfig) -> anyhow::Result<stream::Stream> {
    let subjects = Subjects::new(&config.subject_prefix);
    let name = format!("{}_DLQ", config.stream);
    get_or_create(
        js,
        stream::Config {
            name: name.clone(),
            subjects: vec![subjects.dead_letter()],
            storage: stream::StorageType::File,
            max_age: config.stream_max_age * 4,
            num_replicas: config.stream_replicas,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("cannot create or open the dead-letter stream {name}"))
}

/// Checks that a project id is a safe NATS subject token and database key (see
/// [`crate::project::ProjectId`], which callers keep once checked).
pub fn is_valid_project(project: &str) -> bool {
    crate::project::is_valid(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_share_the_prefix() {
        let subjects = Subjects::new("t1");
        assert_eq!(subjects.events("acme"), "t1.events.acme");
        assert_eq!(subjects.all_events(), "t1.events.>");
        assert_eq!(subjects.changes(), "t1.changes");
    }

    #[test]
    fn projects_are_subject_safe() {
        assert!(is_valid_project("acme-learning_2"));
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(!is_valid_project(bad), "{bad}");
        }
    }
}
