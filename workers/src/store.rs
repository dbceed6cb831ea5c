//! The raw event store: MongoDB `events`, one document per (project, messageId). The `_id` is
//! derived from both, so a redelivered message or a client's resend inserts nothing new; the
//! duplicate-key errors (code 11000) of an unordered bulk insert say exactly which events were
//! already there, and every other failure fails the whole batch so it is retried.

use anyhow::Context as _;
use common::event::Event;
use mongodb::{
    bson::{self, doc, Bson, Document},
    error::ErrorKind,
    options::{Acknowledgment, IndexOptions, WriteConcern},
    Collection, IndexModel,
};

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11_000;

#[derive(Clone)]
pub struct EventStore {
    events: Collection<Document>,
    write_concern: WriteConcern,
}

/// What one insert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub stored: usize,
    pub duplicates: usize,
}

impl EventStore {
    pub fn new(db: &mongodb::Database, write_concern: &str, journal: bool) -> Self {
        let w = match write_concern.parse::<u32>() {
            Ok(nodes) => Acknowledgment::Nodes(nodes),
            Err(_) if write_concern == "majority" => Acknowledgment::Majority,
            Err(_) => Acknowledgment::Custom(write_concern.to_owned()),
        };
        Self {
            events: db.collection("events"),
            write_concern: WriteConcern::builder().w(w).journal(journal).build(),
        }
    }

    /// Creates the indexes the analytics queries need; harmless when they exist.
    pub async fn create_indexes(&self) -> anyhow::Result<()> {
        let index = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        self.events
            .create_indexes([
                index(doc! {"ts": 1}, "ts"),
                index(doc! {"user_id": 1, "ts": 1}, "user_id_ts"),
                index(doc! {"event": 1, "ts": 1}, "event_ts"),
                index(doc! {"properties.course_id": 1, "ts": 1}, "course_id_ts"),
            ])
            .await
            .context("cannot create the indexes of MongoDB `events`")?;
        Ok(())
    }

    /// Inserts `events`, treating those already stored as duplicates.
    pub async fn insert(&self, events: &[Event]) -> anyhow::Result<Inserted> {
        if events.is_empty() {
            return Ok(Inserted::default());
        }
        let documents: Vec<Document> = events.iter().map(to_document).collect::<anyhow::Result<_>>()?;
        let result = self
            .events
            .insert_many(documents)
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await;
        match result {
            Ok(outcome) => Ok(Inserted {
                stored: outcome.inserted_ids.len(),
                duplicates: 0,
            }),
            Err(error) => match *error.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY)) =>
                {
                    let duplicates = failure.write_errors.as_ref().map_or(0, Vec::len);
                    Ok(Inserted {
                        stored: events.len() - duplicates,
                        duplicates,
                    })
                }
                _ => Err(anyhow::Error::new(error).context("bulk insert into MongoDB `events` failed")),
            },
        }
    }
}

/// The stored document: the event's fields under the seeds' names, times as BSON dates.
pub fn to_document(event: &Event) -> anyhow::Result<Document> {
    let date = |t: chrono::DateTime<chrono::Utc>| Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()));
    let mut document = doc! {
        "_id": document_id(&event.project, &event.message_id),
        "project": &event.project,
        "message_id": &event.message_id,
        "type": event.kind.as_str(),
        "event": &event.event,
        "ts": date(event.ts),
        "day": event.day.to_string(),
        "received_at": date(event.received_at),
    };
    let optional = [
        ("user_id", &event.user_id),
        ("anonymous_id", &event.anonymous_id),
        ("session_id", &event.session_id),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            document.insert(field, value);
        }
    }
    if let Some(sent_at) = event.sent_at {
        document.insert("sent_at", date(sent_at));
    }
    if let Some(timestamp) = event.timestamp {
        document.insert("timestamp", date(timestamp));
    }
    if event.historical {
        document.insert("historical", true);
    }
    if event.message_id_assigned {
        document.insert("message_id_assigned", true);
    }
    for (field, map) in [
        ("properties", &event.properties),
        ("context", &event.context),
        ("traits", &event.traits),
    ] {
        if !map.is_empty() {
            let value = bson::to_bson(map).with_context(|| format!("cannot encode `{field}` as BSON"))?;
            document.insert(field, value);
        }
    }
    Ok(document)
}

/// The deterministic `_id`: projects cannot contain `:`, so the pair is unambiguous.
pub fn document_id(project: &str, message_id: &str) -> String {
    format!("{project}:{message_id}")
}
