//! The raw event store: MongoDB `events`, one document per (project, messageId) with the `_id`
//! of `common::documents::event_id`, so inserting an event twice inserts nothing. The workers
//! insert only the events their batch owns in the ledger (ledger.rs), after the rollups that
//! count them committed, so MongoDB holds exactly the copy of each event that was counted.

use anyhow::Context as _;
use chrono::NaiveDate;
use common::{
    documents::{field, EVENTS},
    event::{Event, EventType},
};

use futures::{stream, StreamExt as _, TryStreamExt as _};
use mongodb::{
    bson::{self, doc, Bson, Document, RawDocumentBuf},
    error::ErrorKind,
    options::{Acknowledgment, IndexOptions, WriteConcern},
    Collection, IndexModel,
};

use common::raw_bson::Writer;

use crate::error::is_document_rejection;

/// MongoDB's duplicate key error code.
pub(crate) const DUPLICATE_KEY: i32 = 11_000;

#[derive(Clone)]
pub struct EventStore {
    db: mongodb::Database,
    events: Collection<Document>,
    /// The same collection for inserts, written as raw BSON.
    raw: Collection<RawDocumentBuf>,
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
            raw: db.collection(EVENTS),
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
        // Exactly the index the project's one query on `events` needs: reconcile (and a
        // dead-letter replay's check) reads one project's events, by time on a real MongoDB.
        // Every metric is served from PostgreSQL, so the seeds' indexes for reading raw events
        // (`ts`, `user_id + ts`, `event + ts`) would only cost each insert; FerretDB 1.24 uses
        // none of them anyway (docs/ferretdb.md). Earlier versions created those four
        // (`ts`, `user_id_ts`, `event_ts`, `course_id_ts`): they can be dropped by hand.
        let indexes = [index(doc! {"project": 1, "ts": 1}, "project_ts")];
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
        documents: &[RawDocumentBuf],
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
    async fn insert_chunk(&self, part: &[RawDocumentBuf], offset: usize) -> Result<Inserted, mongodb::error::Error> {
        let mut inserted = Inserted::default();
        let result = self
            .raw
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

    /// Deletes the stored events of `project` whose event time is before `cutoff`; how many.
    /// On a real MongoDB the `(project, ts)` index serves the filter; FerretDB 1.24 reads the
    /// project's documents to apply the range (docs/ferretdb.md), once per call.
    pub async fn delete_before(&self, project: &str, cutoff: chrono::DateTime<chrono::Utc>) -> anyhow::Result<u64> {
        let cutoff = bson::DateTime::from_millis(cutoff.timestamp_millis());
        let deleted = self
            .events
            .delete_many(doc! {field::PROJECT: project, field::TS: {"$lt": cutoff}})
            .with_options(
                mongodb::options::DeleteOptions::builder()
                    .write_concern(self.write_concern.clone())
                    .build(),
            )
            .await
            .context("cannot delete expired events from MongoDB `events`")?;
        Ok(deleted.deleted_count)
    }

    /// How many events of `project` are stored with a `day` from `from` to `to`. Reads the
    /// project by equality (which FerretDB pushes down) and only each document's `day`.
    pub async fn count_in_days(&self, project: &str, from: NaiveDate, to: NaiveDate) -> anyhow::Result<u64> {
        let (from, to) = (from.to_string(), to.to_string());
        let mut cursor = self
            .events
            .find(doc! {field::PROJECT: project})
            .projection(doc! {field::DAY: 1})
            .await
            .context("cannot query MongoDB `events`")?;
        let mut count = 0;
        while let Some(document) = cursor.try_next().await.context("cannot read MongoDB `events`")? {
            let day = document.get_str(field::DAY).unwrap_or_default();
            count += u64::from((from.as_str()..=to.as_str()).contains(&day));
        }
        Ok(count)
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

/// The stored document: the event's fields under the seeds' names, times as BSON dates, as the
/// bytes the driver sends, written in one pass into one buffer (`common::raw_bson` says why).
pub fn to_raw_document(event: &Event) -> anyhow::Result<RawDocumentBuf> {
    let millis = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    let mut w = Writer::with_capacity(DOCUMENT_CAPACITY);
    let at = w.begin();
    // `common::documents::event_id`, joined in place.
    w.joined(field::ID, &[&event.project, ":", &event.message_id])?;
    w.string(field::PROJECT, &event.project)?;
    w.string(field::MESSAGE_ID, &event.message_id)?;
    w.string(field::TYPE, event.kind.as_str())?;
    w.string(field::EVENT, &event.event)?;
    w.date(field::TS, millis(event.ts))?;
    w.display(field::DAY, event.day)?;
    w.date(field::RECEIVED_AT, millis(event.received_at))?;
    let optional = [
        (field::USER_ID, &event.user_id),
        (field::ANONYMOUS_ID, &event.anonymous_id),
        (field::SESSION_ID, &event.session_id),
        (field::GROUP_ID, &event.group_id),
        (field::PREVIOUS_ID, &event.previous_id),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            w.string(name, value)?;
        }
    }
    if let Some(sent_at) = event.sent_at {
        w.date(field::SENT_AT, millis(sent_at))?;
    }
    if let Some(timestamp) = event.timestamp {
        w.date(field::TIMESTAMP, millis(timestamp))?;
    }
    if event.historical {
        w.boolean(field::HISTORICAL, true)?;
    }
    if event.message_id_assigned {
        w.boolean(field::MESSAGE_ID_ASSIGNED, true)?;
    }
    for (name, map) in [
        (field::PROPERTIES, &event.properties),
        (field::CONTEXT, &event.context),
        (field::TRAITS, &event.traits),
    ] {
        if !map.is_empty() {
            w.object(name, map)
                .with_context(|| format!("cannot encode `{name}` as BSON"))?;
        }
    }
    w.end(at);
    Ok(RawDocumentBuf::from_bytes(w.into_bytes())?)
}

/// Room for a typical event's document, so that most are written without growing the buffer.
const DOCUMENT_CAPACITY: usize = 768;

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
        kind: EventType::parse(document.get_str(field::TYPE)?).unwrap_or(EventType::Track),
        event: document.get_str(field::EVENT)?.to_owned(),
        user_id: string(field::USER_ID),
        anonymous_id: string(field::ANONYMOUS_ID),
        session_id: string(field::SESSION_ID),
        group_id: string(field::GROUP_ID),
        previous_id: string(field::PREVIOUS_ID),
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

#[cfg(test)]
mod tests {
    use common::documents::event_id;

    use super::*;

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "project": "p", "message_id": "m1", "type": "track", "event": "quiz_submitted",
            "user_id": "u1", "anonymous_id": "a1", "session_id": "s1",
            "ts": "2026-01-02T03:04:05.678Z", "day": "2026-01-02",
            "timestamp": "2026-01-02T03:04:05.678Z", "sent_at": "2026-01-02T03:04:06Z",
            "received_at": "2026-01-02T03:04:07Z", "historical": true, "message_id_assigned": true,
            "properties": {"course_id": "c1", "score": 7, "ratio": 0.5, "passed": true, "none": null,
                           "big": -9_000_000_000_i64, "tags": ["a", 1, 2.5, {"k": [true]}], "nested": {"x": {"y": "z"}}},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "traits": {"name": "Ada"},
        }))
        .unwrap()
    }

    /// The document the workers stored before writing raw BSON: a `Document` tree with maps
    /// encoded by `bson::to_bson`. The raw path must store the very same bytes.
    fn tree(event: &Event) -> Document {
        let date = |t: chrono::DateTime<chrono::Utc>| Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()));
        let mut d = doc! {
            "_id": event_id(&event.project, &event.message_id), "project": &event.project,
            "message_id": &event.message_id, "type": event.kind.as_str(), "event": &event.event,
            "ts": date(event.ts), "day": event.day.to_string(), "received_at": date(event.received_at),
            "user_id": event.user_id.as_deref().unwrap(), "anonymous_id": event.anonymous_id.as_deref().unwrap(),
            "session_id": event.session_id.as_deref().unwrap(),
            "sent_at": date(event.sent_at.unwrap()), "timestamp": date(event.timestamp.unwrap()),
            "historical": true, "message_id_assigned": true,
        };
        for (name, map) in [
            ("properties", &event.properties),
            ("context", &event.context),
            ("traits", &event.traits),
        ] {
            d.insert(name, bson::to_bson(map).unwrap());
        }
        d
    }

    #[test]
    fn raw_documents_are_the_documents_a_tree_would_give() {
        let event = event();
        let raw = to_raw_document(&event).unwrap();
        let expected = bson::to_vec(&tree(&event)).unwrap();
        assert_eq!(raw.as_bytes(), expected.as_slice());
        assert_eq!(from_document(&raw.to_document().unwrap()).unwrap(), event);
    }

    #[test]
    fn group_and_alias_calls_keep_their_ids() {
        let mut group = event();
        (group.kind, group.event, group.group_id) = (EventType::Group, "group".into(), Some("class-7".into()));
        let raw = to_raw_document(&group).unwrap();
        assert_eq!(raw.get_str(field::GROUP_ID).unwrap(), "class-7");
        assert_eq!(from_document(&raw.to_document().unwrap()).unwrap(), group);
        let mut alias = event();
        (alias.kind, alias.event, alias.previous_id) = (EventType::Alias, "alias".into(), Some("anon-1".into()));
        let raw = to_raw_document(&alias).unwrap();
        assert_eq!(raw.get_str(field::PREVIOUS_ID).unwrap(), "anon-1");
        assert_eq!(from_document(&raw.to_document().unwrap()).unwrap(), alias);
    }

    #[test]
    fn what_bson_cannot_hold_is_an_error_not_a_panic() {
        let mut event = event();
        event.properties.insert("bad\0key".into(), serde_json::json!(1));
        assert!(to_raw_document(&event).is_err());
        let mut event = self::tests::event();
        event.properties.insert("huge".into(), serde_json::json!(u64::MAX));
        assert!(to_raw_document(&event).is_err());
        // U+0000 inside a string value is valid BSON (ingest refuses it for PostgreSQL's sake).
        let mut event = self::tests::event();
        event.properties.insert("nul".into(), serde_json::json!("a\0b"));
        assert!(to_raw_document(&event).is_ok());
    }
}
