//! The raw event store: MongoDB `events`, one document per (project, messageId). The `_id` is
//! derived from both, so a redelivered message or a client's resend inserts nothing new; the
//! duplicate-key errors (code 11000) of an unordered bulk insert say exactly which events were
//! already there, and every other failure fails the whole batch so it is retried.
//!
//! Each document also records `stored_by`, the key of the JetStream message that first stored it.
//! That is what makes the rollups exact: an event is counted by the message that owns it, and only
//! once that message's ledger row commits (see `migrations/0003_rollups.sql`).

use std::collections::HashMap;

use anyhow::Context as _;
use common::event::{Event, EventType};
use futures::TryStreamExt as _;
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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// Documents newly inserted.
    pub stored: usize,
    /// Events that were already stored (or repeated within the batch).
    pub duplicates: usize,
    /// For each input event, the key of the message that owns it (first stored it); empty when
    /// the stored document predates ownership.
    pub owners: Vec<String>,
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

    /// Creates the indexes the analytics queries need that do not exist yet. Only the missing ones:
    /// FerretDB 1.24 panics (and drops the connection) on `createIndexes` for existing indexes.
    /// Retried a few times, for two workers starting at once.
    pub async fn create_indexes(&self) -> anyhow::Result<()> {
        let index = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        let indexes = [
            index(doc! {"ts": 1}, "ts"),
            index(doc! {"user_id": 1, "ts": 1}, "user_id_ts"),
            index(doc! {"event": 1, "ts": 1}, "event_ts"),
            index(doc! {"properties.course_id": 1, "ts": 1}, "course_id_ts"),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A collection that does not exist yet has no indexes (and answers an error).
            let existing = self.events.list_index_names().await.unwrap_or_default();
            let missing: Vec<IndexModel> = indexes
                .iter()
                .filter(|i| {
                    i.options
                        .as_ref()
                        .and_then(|o| o.name.as_ref())
                        .is_none_or(|name| !existing.contains(name))
                })
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            match self.events.create_indexes(missing).await {
                Ok(_) => return Ok(()),
                Err(error) if attempt < 5 => {
                    tracing::warn!(%error, attempt, "creating the indexes of MongoDB `events` failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context("cannot create the indexes of MongoDB `events`"))
                }
            }
        }
    }

    /// Inserts `events`, each with the key of the message carrying it, and says who owns each.
    pub async fn insert(&self, events: &[(&Event, &str)]) -> anyhow::Result<Inserted> {
        if events.is_empty() {
            return Ok(Inserted::default());
        }
        // One document per id: a repeat inside the batch is owned by its first occurrence.
        let mut first: HashMap<String, usize> = HashMap::with_capacity(events.len());
        let mut documents = Vec::with_capacity(events.len());
        let mut document_of = Vec::with_capacity(events.len());
        for (event, message) in events {
            let id = document_id(&event.project, &event.message_id);
            let next = documents.len();
            let index = *first.entry(id).or_insert(next);
            if index == next {
                documents.push(to_document(event, message)?);
            }
            document_of.push(index);
        }
        let total = documents.len();
        let result = self
            .events
            .insert_many(documents.iter())
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await;
        let mut existing: Vec<usize> = Vec::new();
        if let Err(error) = result {
            match *error.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY)) =>
                {
                    existing = failure.write_errors.iter().flatten().map(|e| e.index).collect();
                }
                _ => return Err(anyhow::Error::new(error).context("bulk insert into MongoDB `events` failed")),
            }
        }
        let mut owner_of_document: Vec<String> = documents
            .iter()
            .map(|d| d.get_str("stored_by").unwrap_or_default().to_owned())
            .collect();
        if !existing.is_empty() {
            let ids: Vec<Bson> = existing
                .iter()
                .filter_map(|i| documents[*i].get("_id").cloned())
                .collect();
            let mut cursor = self
                .events
                .find(doc! {"_id": {"$in": ids}})
                .projection(doc! {"stored_by": 1})
                .await
                .context("cannot read the owners of already stored events")?;
            let mut owners: HashMap<String, String> = HashMap::with_capacity(existing.len());
            while let Some(found) = cursor
                .try_next()
                .await
                .context("cannot read the owners of already stored events")?
            {
                if let Ok(id) = found.get_str("_id") {
                    owners.insert(id.to_owned(), found.get_str("stored_by").unwrap_or_default().to_owned());
                }
            }
            for index in &existing {
                let id = documents[*index].get_str("_id").unwrap_or_default();
                owner_of_document[*index] = owners.get(id).cloned().unwrap_or_default();
            }
        }
        Ok(Inserted {
            stored: total - existing.len(),
            duplicates: events.len() - (total - existing.len()),
            owners: document_of.into_iter().map(|i| owner_of_document[i].clone()).collect(),
        })
    }

    /// Every stored event of `project` matching `filter` (reconcile reads the truth from here).
    pub async fn find(&self, project: &str, filter: Document) -> anyhow::Result<Vec<Event>> {
        let mut query = doc! {"project": project};
        query.extend(filter);
        let mut cursor = self.events.find(query).await.context("cannot query MongoDB `events`")?;
        let mut events = Vec::new();
        while let Some(document) = cursor.try_next().await.context("cannot read MongoDB `events`")? {
            events.push(
                from_document(&document)
                    .with_context(|| format!("malformed stored event {:?}", document.get("_id")))?,
            );
        }
        Ok(events)
    }
}

/// The stored document: the event's fields under the seeds' names, times as BSON dates.
pub fn to_document(event: &Event, stored_by: &str) -> anyhow::Result<Document> {
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
        "stored_by": stored_by,
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

/// The event a stored document holds (times at the millisecond precision MongoDB keeps).
pub fn from_document(document: &Document) -> anyhow::Result<Event> {
    let date = |field: &str| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let millis = document
            .get_datetime(field)
            .with_context(|| format!("`{field}` is not a date"))?
            .timestamp_millis();
        chrono::DateTime::from_timestamp_millis(millis).with_context(|| format!("`{field}` is out of range"))
    };
    let optional_date = |field: &str| {
        document
            .get_datetime(field)
            .ok()
            .and_then(|d| chrono::DateTime::from_timestamp_millis(d.timestamp_millis()))
    };
    let string = |field: &str| document.get_str(field).ok().map(str::to_owned);
    let map = |field: &str| -> serde_json::Map<String, serde_json::Value> {
        match document.get(field).cloned().map(Bson::into_relaxed_extjson) {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    };
    let ts = date("ts")?;
    Ok(Event {
        project: document.get_str("project")?.to_owned(),
        message_id: document.get_str("message_id")?.to_owned(),
        message_id_assigned: document.get_bool("message_id_assigned").unwrap_or(false),
        kind: match document.get_str("type")? {
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "identify" => EventType::Identify,
            _ => EventType::Track,
        },
        event: document.get_str("event")?.to_owned(),
        user_id: string("user_id"),
        anonymous_id: string("anonymous_id"),
        session_id: string("session_id"),
        ts,
        day: ts.date_naive(),
        timestamp: optional_date("timestamp"),
        sent_at: optional_date("sent_at"),
        received_at: date("received_at")?,
        historical: document.get_bool("historical").unwrap_or(false),
        properties: map("properties"),
        context: map("context"),
        traits: map("traits"),
    })
}

/// The deterministic `_id`: projects cannot contain `:`, so the pair is unambiguous.
pub fn document_id(project: &str, message_id: &str) -> String {
    format!("{project}:{message_id}")
}
