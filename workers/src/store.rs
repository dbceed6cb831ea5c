//! The raw event store: MongoDB `events`, one document per (project, messageId) with the `_id`
//! of `common::documents::event_id`, so inserting an event twice inserts nothing. The workers
//! insert only the events their batch owns in the ledger (ledger.rs), after the rollups that
//! count them committed, so MongoDB holds exactly the copy of each event that was counted.

use anyhow::Context as _;
use common::{
    documents::{event_id, field, EVENTS},
    event::{Event, EventType},
};

use futures::{stream, StreamExt as _, TryStreamExt as _};
use mongodb::{
    bson::{self, doc, Bson, Document},
    error::ErrorKind,
    options::{Acknowledgment, IndexOptions, WriteConcern},
    Collection, IndexModel,
};

use crate::error::is_document_rejection;

/// MongoDB's duplicate key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11_000;

#[derive(Clone)]
pub struct EventStore {
    db: mongodb::Database,
    events: Collection<Document>,
    write_concern: WriteConcern,
}

/// What one insert did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// Documents newly inserted.
    pub stored: usize,
    /// Documents already there (an earlier attempt of the same message stored them).
    pub duplicates: usize,
    /// Documents the server refused for what they hold: (position, reason).
    pub rejected: Vec<(usize, String)>,
}

impl EventStore {
    pub fn new(db: &mongodb::Database, write_concern: &str, journal: bool) -> Self {
        let w = match write_concern.parse::<u32>() {
            Ok(nodes) => Acknowledgment::Nodes(nodes),
            Err(_) if write_concern == "majority" => Acknowledgment::Majority,
            Err(_) => Acknowledgment::Custom(write_concern.to_owned()),
        };
        Self {
            db: db.clone(),
            events: db.collection(EVENTS),
            write_concern: WriteConcern::builder().w(w).journal(journal).build(),
        }
    }

    /// The database of `events` (and of the learning paths).
    pub fn database(&self) -> &mongodb::Database {
        &self.db
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

    /// Inserts `documents` (each an event this batch owns: see ledger.rs) in unordered bulk
    /// inserts of `chunk` documents, `concurrency` at a time. A duplicate key means an earlier
    /// attempt stored that event already; a document the server refuses for what it holds is
    /// returned with the reason (by position in `documents`); any other failure fails the call,
    /// which the caller retries (what was inserted then comes back as duplicates).
    pub async fn insert(
        &self,
        documents: &[Document],
        chunk: usize,
        concurrency: usize,
    ) -> Result<Inserted, mongodb::error::Error> {
        let chunk = chunk.max(1);
        let calls: Vec<_> = documents
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| self.insert_chunk(part, n * chunk))
            .collect();
        let outcomes: Vec<Result<Inserted, mongodb::error::Error>> =
            stream::iter(calls).buffer_unordered(concurrency.max(1)).collect().await;
        let mut total = Inserted::default();
        for outcome in outcomes {
            let part = outcome?;
            total.stored += part.stored;
            total.duplicates += part.duplicates;
            total.rejected.extend(part.rejected);
        }
        Ok(total)
    }

    /// One bulk insert; `offset` is the position of `part` in the whole insert.
    async fn insert_chunk(&self, part: &[Document], offset: usize) -> Result<Inserted, mongodb::error::Error> {
        let mut inserted = Inserted::default();
        let result = self
            .events
            .insert_many(part)
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await;
        match result {
            Ok(_) => inserted.stored = part.len(),
            Err(error) => match *error.kind {
                ErrorKind::InsertMany(ref failure) if failure.write_concern_error.is_none() => {
                    let errors = failure.write_errors.as_deref().unwrap_or_default();
                    if errors
                        .iter()
                        .any(|e| e.code != DUPLICATE_KEY && !is_document_rejection(e.code))
                    {
                        return Err(error);
                    }
                    for e in errors {
                        if e.code == DUPLICATE_KEY {
                            inserted.duplicates += 1;
                        } else {
                            inserted
                                .rejected
                                .push((offset + e.index, format!("{} (code {})", e.message, e.code)));
                        }
                    }
                    inserted.stored = part.len() - errors.len();
                }
                _ => return Err(error),
            },
        }
        Ok(inserted)
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
pub fn to_document(event: &Event) -> anyhow::Result<Document> {
    let date = |t: chrono::DateTime<chrono::Utc>| Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()));
    let mut document = Document::new();
    document.insert(field::ID, event_id(&event.project, &event.message_id));
    document.insert(field::PROJECT, &event.project);
    document.insert(field::MESSAGE_ID, &event.message_id);
    document.insert(field::TYPE, event.kind.as_str());
    document.insert(field::EVENT, &event.event);
    document.insert(field::TS, date(event.ts));
    document.insert(field::DAY, event.day.to_string());
    document.insert(field::RECEIVED_AT, date(event.received_at));
    let optional = [
        (field::USER_ID, &event.user_id),
        (field::ANONYMOUS_ID, &event.anonymous_id),
        (field::SESSION_ID, &event.session_id),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            document.insert(name, value);
        }
    }
    if let Some(sent_at) = event.sent_at {
        document.insert(field::SENT_AT, date(sent_at));
    }
    if let Some(timestamp) = event.timestamp {
        document.insert(field::TIMESTAMP, date(timestamp));
    }
    if event.historical {
        document.insert(field::HISTORICAL, true);
    }
    if event.message_id_assigned {
        document.insert(field::MESSAGE_ID_ASSIGNED, true);
    }
    for (name, map) in [
        (field::PROPERTIES, &event.properties),
        (field::CONTEXT, &event.context),
        (field::TRAITS, &event.traits),
    ] {
        if !map.is_empty() {
            let value = bson::to_bson(map).with_context(|| format!("cannot encode `{name}` as BSON"))?;
            document.insert(name, value);
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
    let ts = date(field::TS)?;
    Ok(Event {
        project: document.get_str(field::PROJECT)?.to_owned(),
        message_id: document.get_str(field::MESSAGE_ID)?.to_owned(),
        message_id_assigned: document.get_bool(field::MESSAGE_ID_ASSIGNED).unwrap_or(false),
        kind: match document.get_str(field::TYPE)? {
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "identify" => EventType::Identify,
            _ => EventType::Track,
        },
        event: document.get_str(field::EVENT)?.to_owned(),
        user_id: string(field::USER_ID),
        anonymous_id: string(field::ANONYMOUS_ID),
        session_id: string(field::SESSION_ID),
        ts,
        day: ts.date_naive(),
        timestamp: optional_date(field::TIMESTAMP),
        sent_at: optional_date(field::SENT_AT),
        received_at: date(field::RECEIVED_AT)?,
        historical: document.get_bool(field::HISTORICAL).unwrap_or(false),
        properties: map(field::PROPERTIES),
        context: map(field::CONTEXT),
        traits: map(field::TRAITS),
    })
}
