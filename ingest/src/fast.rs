//! The common case of validation and normalisation, walked on simd-json's tape and written
//! straight into the message buffer: no `serde_json::Value` tree, no `Event`, no map of any kind.
//!
//! It is an accelerator, not a second definition of the rules. [`plan`] accepts an event only
//! when every check of `decode::normalise` would pass; at the first check that fails, and for
//! whatever is unusual (a key repeated in an object, a `type` of another kind, an integer past
//! i64, ...), it declines, and the event goes the reference way (`decode::normalise` on the
//! event as a `serde_json::Value`), which also words the rejection. What it accepts, [`write`]
//! encodes byte for byte as `serde_json::to_vec(&Event)` would: the same fields in the same
//! order, strings escaped by serde_json itself, numbers through serde_json's formatter, times as
//! chrono's serde writes them (tests/decode_props.rs and the fuzz target hold this).

use std::borrow::Cow;

use chrono::{DateTime, Datelike as _, NaiveDate, SecondsFormat, Timelike as _, Utc};
use common::event::{snake_case, EventType};
use simd_json::{Node, StaticNode};

use crate::decode::{Endpoint, Normalisation, KEY_PROPERTIES, MAX_ID_LEN, MAX_PAGE_LEN};

/// A value on the tape: its first node and every node it contains.
pub(crate) type Nodes<'t, 'a> = &'t [Node<'a>];

/// serde_json's marker of a raw value: an object whose first key is this reads as something
/// else entirely; a body holding it anywhere takes the reference path (`decode`).
pub(crate) const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// How many nodes the value starting at `node` spans.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// The value starting at `at`.
pub(crate) fn value_at<'t, 'a>(nodes: Nodes<'t, 'a>, at: usize) -> Option<Nodes<'t, 'a>> {
    let end = at.checked_add(span(nodes.get(at)?))?;
    nodes.get(at..end)
}

/// The key/value pairs of an object, in order (repeats included).
pub(crate) struct Entries<'t, 'a> {
    nodes: Nodes<'t, 'a>,
    at: usize,
    left: usize,
}

impl<'t, 'a> Iterator for Entries<'t, 'a> {
    type Item = (&'a str, Nodes<'t, 'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let Node::String(key) = *self.nodes.get(self.at)? else {
            return None;
        };
        let value = value_at(self.nodes, self.at + 1)?;
        self.at += 1 + value.len();
        self.left -= 1;
        Some((key, value))
    }
}

/// The entries of `value` if it is an object.
pub(crate) fn entries<'t, 'a>(value: Nodes<'t, 'a>) -> Option<Entries<'t, 'a>> {
    match value.first()? {
        Node::Object { len, .. } => Some(Entries {
            nodes: value,
            at: 1,
            left: *len,
        }),
        _ => None,
    }
}

/// The items of an array: calls `f` on each until it returns false.
fn items_all<'t, 'a>(value: Nodes<'t, 'a>, len: usize, mut f: impl FnMut(Nodes<'t, 'a>) -> bool) -> bool {
    let mut at = 1;
    for _ in 0..len {
        let Some(item) = value_at(value, at) else {
            return false;
        };
        if !f(item) {
            return false;
        }
        at += item.len();
    }
    true
}

/// Whether an object repeats a key (serde_json's map would keep one of them: the reference path
/// handles it).
fn repeats_a_key(value: Nodes<'_, '_>) -> bool {
    let Some(&Node::Object { len, .. }) = value.first() else {
        return false;
    };
    if len < 2 {
        return false;
    }
    let Some(keys) = entries(value) else {
        return true;
    };
    if len <= 16 {
        let mut seen = [""; 16];
        for (i, (key, _)) in keys.enumerate() {
            if seen[..i].contains(&key) {
                return true;
            }
            seen[i] = key;
        }
        false
    } else {
        let mut seen = std::collections::HashSet::with_capacity(len);
        keys.into_iter().any(|(key, _)| !seen.insert(key))
    }
}

/// `decode::check_keys` as a yes/no, plus no repeated key: an object at `depth` (1 for
/// `properties` itself).
pub(crate) fn object_ok(value: Nodes<'_, '_>, depth: usize, max_depth: usize) -> bool {
    if depth > max_depth || repeats_a_key(value) {
        return false;
    }
    let Some(mut pairs) = entries(value) else {
        return false;
    };
    pairs.all(|(key, value)| key_ok(key) && value_ok(value, depth, max_depth))
}

/// A key `decode::check_keys` lets through.
pub(crate) fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_ID_LEN && !key.starts_with('$') && !key.contains(['.', '\0'])
}

/// `decode::check_value` as a yes/no (a value in an object at `depth`).
pub(crate) fn value_ok(value: Nodes<'_, '_>, depth: usize, max_depth: usize) -> bool {
    match value.first() {
        Some(Node::Object { .. }) => object_ok(value, depth + 1, max_depth),
        Some(&Node::Array { len, .. }) => {
            depth < max_depth && items_all(value, len, |item| value_ok(item, depth + 1, max_depth))
        }
        Some(Node::String(text)) => !text.contains('\0'),
        Some(Node::Static(StaticNode::U64(n))) => i64::try_from(*n).is_ok(),
        Some(Node::Static(StaticNode::F64(n))) => n.is_finite(),
        Some(Node::Static(_)) => true,
        None => false,
    }
}

fn has_control(text: &str) -> bool {
    // Printable ASCII (most ids) in one pass over the bytes; anything else by the definition.
    if text
        .bytes()
        .fold(true, |printable, b| printable & (0x20..0x7f).contains(&b))
    {
        return false;
    }
    text.chars().any(char::is_control)
}

/// `decode::identifier` when it succeeds; `Err` when it would reject (or for what the reference
/// path should handle).
fn identifier<'a>(value: Option<Nodes<'_, 'a>>) -> Result<Option<Cow<'a, str>>, ()> {
    match value.and_then(<[_]>::first) {
        None | Some(Node::Static(StaticNode::Null)) => Ok(None),
        Some(Node::String("")) => Ok(None),
        Some(Node::String(s)) if s.len() > MAX_ID_LEN || has_control(s) => Err(()),
        Some(Node::String(s)) => Ok(Some(Cow::Borrowed(*s))),
        Some(Node::Static(StaticNode::I64(n))) => Ok(Some(Cow::Owned(serde_json::Number::from(*n).to_string()))),
        Some(Node::Static(StaticNode::U64(n))) => Ok(Some(Cow::Owned(serde_json::Number::from(*n).to_string()))),
        Some(Node::Static(StaticNode::F64(n))) => match serde_json::Number::from_f64(*n) {
            Some(n) => Ok(Some(Cow::Owned(n.to_string()))),
            None => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// `decode::parse_time` when it succeeds.
fn time(value: Option<Nodes<'_, '_>>) -> Result<Option<DateTime<Utc>>, ()> {
    match value.and_then(<[_]>::first) {
        None | Some(Node::Static(StaticNode::Null)) => Ok(None),
        Some(Node::String(text)) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(drop),
        Some(_) => Err(()),
    }
}

/// The batch-level context, once per request: its entries, each with whether it passes
/// `check_keys` as an entry of an event's `context`.
pub(crate) struct BatchContext<'t, 'a> {
    pub entries: Vec<(&'a str, Nodes<'t, 'a>, bool)>,
}

impl<'t, 'a> BatchContext<'t, 'a> {
    /// `value`: an object that repeats no key ([`envelope`] saw to it).
    pub fn new(value: Nodes<'t, 'a>, max_depth: usize) -> Self {
        let entries = entries(value)
            .into_iter()
            .flatten()
            .map(|(key, value)| (key, value, key_ok(key) && value_ok(value, 1, max_depth)))
            .collect();
        Self { entries }
    }
}

/// Reused across the events of a request: the maps of the event being planned.
#[derive(Default)]
pub(crate) struct Scratch<'t, 'a> {
    properties: Vec<(&'a str, Nodes<'t, 'a>)>,
    context: Vec<(&'a str, Nodes<'t, 'a>)>,
    traits: Vec<(&'a str, Nodes<'t, 'a>)>,
}

fn get<'t, 'a>(map: &[(&'a str, Nodes<'t, 'a>)], key: &str) -> Option<Nodes<'t, 'a>> {
    map.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// An object field of the event into `out`: absent or null is empty; `None` when the reference
/// path must decide (not an object, a check fails).
fn map_into<'t, 'a>(
    value: Option<Nodes<'t, 'a>>,
    max_depth: usize,
    out: &mut Vec<(&'a str, Nodes<'t, 'a>)>,
) -> Option<()> {
    out.clear();
    let Some(value) = value else {
        return Some(());
    };
    match value.first()? {
        Node::Static(StaticNode::Null) => Some(()),
        Node::Object { .. } if object_ok(value, 1, max_depth) => {
            out.extend(entries(value)?);
            Some(())
        }
        _ => None,
    }
}

/// An event `decode::normalise` accepts, as what `write` encodes; the maps are in the scratch.
pub(crate) struct Plan<'a> {
    pub message_id: Cow<'a, str>,
    /// The client's `messageId` string as sent, for the response (a rejection for size).
    pub reported_id: Option<&'a str>,
    message_id_assigned: bool,
    kind: EventType,
    event: Cow<'a, str>,
    user_id: Option<Cow<'a, str>>,
    anonymous_id: Option<Cow<'a, str>>,
    session_id: Option<Cow<'a, str>>,
    group_id: Option<Cow<'a, str>>,
    previous_id: Option<Cow<'a, str>>,
    ts: DateTime<Utc>,
    timestamp: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    historical: bool,
}

/// The top-level fields of an event that normalisation reads.
#[derive(Default)]
struct Fields<'t, 'a> {
    kind: Option<Nodes<'t, 'a>>,
    user_id: Option<Nodes<'t, 'a>>,
    anonymous_id: Option<Nodes<'t, 'a>>,
    group_id: Option<Nodes<'t, 'a>>,
    previous_id: Option<Nodes<'t, 'a>>,
    message_id: Option<Nodes<'t, 'a>>,
    properties: Option<Nodes<'t, 'a>>,
    context: Option<Nodes<'t, 'a>>,
    traits: Option<Nodes<'t, 'a>>,
    event: Option<Nodes<'t, 'a>>,
    name: Option<Nodes<'t, 'a>>,
    category: Option<Nodes<'t, 'a>>,
    session_id: Option<Nodes<'t, 'a>>,
    timestamp: Option<Nodes<'t, 'a>>,
    original_timestamp: Option<Nodes<'t, 'a>>,
    sent_at: Option<Nodes<'t, 'a>>,
}

impl<'t, 'a> Fields<'t, 'a> {
    /// `None` when a field it reads comes twice.
    fn of(event: Nodes<'t, 'a>) -> Option<Self> {
        let mut fields = Self::default();
        for (key, value) in entries(event)? {
            let slot = match key {
                "type" => &mut fields.kind,
                "userId" => &mut fields.user_id,
                "anonymousId" => &mut fields.anonymous_id,
                "groupId" => &mut fields.group_id,
                "previousId" => &mut fields.previous_id,
                "messageId" => &mut fields.message_id,
                "properties" => &mut fields.properties,
                "context" => &mut fields.context,
                "traits" => &mut fields.traits,
                "event" => &mut fields.event,
                "name" => &mut fields.name,
                "category" => &mut fields.category,
                "sessionId" => &mut fields.session_id,
                "timestamp" => &mut fields.timestamp,
                "originalTimestamp" => &mut fields.original_timestamp,
                "sentAt" => &mut fields.sent_at,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(fields)
    }
}

fn string<'a>(value: Option<Nodes<'_, 'a>>) -> Option<&'a str> {
    match value?.first()? {
        Node::String(s) => Some(s),
        _ => None,
    }
}

/// `decode::normalise`, when it would accept the event: the maps go to `scratch`. `None`: the
/// reference path decides (and words the rejection, if any).
pub(crate) fn plan<'t, 'a>(
    event: Nodes<'t, 'a>,
    endpoint: Endpoint,
    batch_sent_at: Option<DateTime<Utc>>,
    batch_context: Option<&BatchContext<'t, 'a>>,
    norm: &Normalisation<'_>,
    scratch: &mut Scratch<'t, 'a>,
) -> Option<Plan<'a>> {
    let max_depth = norm.limits.max_property_depth;
    let f = Fields::of(event)?;
    let kind = match (endpoint, f.kind.map(|v| string(Some(v)))) {
        (Endpoint::Single(kind), None) => kind,
        (Endpoint::Single(kind), Some(Some(t))) if t == kind.as_str() => kind,
        (Endpoint::Batch, Some(Some(t))) => EventType::parse(t)?,
        _ => return None,
    };
    let user_id = identifier(f.user_id).ok()?;
    let anonymous_id = identifier(f.anonymous_id).ok()?;
    if user_id.is_none() && anonymous_id.is_none() {
        return None;
    }
    let group_id = match kind {
        EventType::Group => Some(identifier(f.group_id).ok()??),
        _ => None,
    };
    let previous_id = match kind {
        EventType::Alias => {
            user_id.as_ref()?;
            Some(identifier(f.previous_id).ok()??)
        }
        _ => None,
    };
    let message_id = identifier(f.message_id).ok()?;
    map_into(f.properties, max_depth, &mut scratch.properties)?;
    map_into(f.context, max_depth, &mut scratch.context)?;
    map_into(f.traits, max_depth, &mut scratch.traits)?;
    if let Some(batch) = batch_context {
        let own = scratch.context.len();
        for &(key, value, ok) in &batch.entries {
            if !scratch.context[..own].iter().any(|(k, _)| *k == key) {
                if !ok {
                    return None;
                }
                scratch.context.push((key, value));
            }
        }
    }
    let name: Cow<'a, str> = match kind {
        EventType::Track => {
            let normalised = snake_case_fast(string(f.event)?);
            if normalised.is_empty() || normalised.len() > MAX_ID_LEN {
                return None;
            }
            Cow::Owned(normalised)
        }
        EventType::Page | EventType::Screen => {
            if get(&scratch.properties, "page").is_none() {
                let page = get(&scratch.properties, "path")
                    .or_else(|| {
                        get(&scratch.context, "page")
                            .and_then(|p| entries(p)?.find(|(k, _)| *k == "path"))
                            .map(|(_, v)| v)
                    })
                    .or(f.name);
                if let Some(page) = page.filter(|v| matches!(v.first(), Some(Node::String(_)))) {
                    scratch.properties.push(("page", page));
                }
            }
            for (field, value) in [("name", f.name), ("category", f.category)] {
                if let Some(value) = value.filter(|v| matches!(v.first(), Some(Node::String(_)))) {
                    if get(&scratch.properties, field).is_none() {
                        scratch.properties.push((field, value));
                    }
                }
            }
            Cow::Borrowed(if kind == EventType::Page {
                "page_view"
            } else {
                "screen_view"
            })
        }
        EventType::Identify => {
            if let Some(context_traits) = get(&scratch.context, "traits").and_then(entries) {
                let own = scratch.traits.len();
                for (key, value) in context_traits {
                    if !scratch.traits[..own].iter().any(|(k, _)| *k == key) {
                        scratch.traits.push((key, value));
                    }
                }
            }
            Cow::Borrowed("identify")
        }
        EventType::Group => Cow::Borrowed("group"),
        EventType::Alias => Cow::Borrowed("alias"),
    };
    let session_id = identifier(f.session_id.or_else(|| get(&scratch.properties, "session_id"))).ok()?;
    let timestamp = time(f.timestamp.or(f.original_timestamp)).ok()?;
    let sent_at = time(f.sent_at).ok()?.or(batch_sent_at);
    let (ts, historical) = crate::decode::event_time(timestamp, sent_at, norm).ok()?;
    key_properties_ok(&scratch.properties).then_some(())?;
    let (message_id, message_id_assigned) = match message_id {
        Some(id) => (id, false),
        None => (Cow::Owned(uuid::Uuid::now_v7().to_string()), true),
    };
    Some(Plan {
        message_id,
        reported_id: string(f.message_id),
        message_id_assigned,
        kind,
        event: name,
        user_id,
        anonymous_id,
        session_id,
        group_id,
        previous_id,
        ts,
        timestamp,
        sent_at,
        historical,
    })
}

/// `common::event::snake_case`, without its `Vec<char>` for ASCII names (most): for ASCII,
/// letters and digits are `is_ascii_alphanumeric`, capitals `is_ascii_uppercase` and their lower
/// case one byte, so the same steps on bytes give the same name (tested against it below).
fn snake_case_fast(name: &str) -> String {
    if !name.is_ascii() {
        return snake_case(name);
    }
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len() + 4);
    let mut pending_separator = false;
    for (i, &c) in bytes.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            pending_separator = !out.is_empty();
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = bytes[i - 1];
            let next_is_lower = bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_is_lower) {
                pending_separator = !out.is_empty();
            }
        }
        if pending_separator {
            out.push('_');
            pending_separator = false;
        }
        out.push(char::from(c.to_ascii_lowercase()));
    }
    out
}

/// `decode::check_key_properties` as a yes/no.
fn key_properties_ok(properties: &[(&str, Nodes<'_, '_>)]) -> bool {
    properties.iter().all(|(key, value)| {
        let Some(Node::String(text)) = value.first() else {
            return true;
        };
        match *key {
            "page" => text.len() <= MAX_PAGE_LEN && !has_control(text),
            "name" | "category" => !text.contains('\0'),
            key if KEY_PROPERTIES.contains(&key) => text.len() <= MAX_ID_LEN && !has_control(text),
            _ => true,
        }
    })
}

/// What every event of a request shares, encoded once.
pub(crate) struct Shared {
    /// `"project":"…"` and what follows up to `message_id`'s value.
    project: Vec<u8>,
    /// `,"received_at":"…"`.
    received_at: Vec<u8>,
}

impl Shared {
    pub fn new(norm: &Normalisation<'_>) -> Self {
        let mut project = b"{\"project\":".to_vec();
        string_json(&mut project, norm.project);
        project.extend_from_slice(b",\"message_id\":");
        let mut received_at = b",\"received_at\":".to_vec();
        time_json(&mut received_at, &norm.received_at);
        Self { project, received_at }
    }
}

/// Appends the event as `serde_json::to_vec(&common::event::Event)` would.
pub(crate) fn write(out: &mut Vec<u8>, plan: &Plan<'_>, scratch: &Scratch<'_, '_>, shared: &Shared) {
    out.extend_from_slice(&shared.project);
    string_json(out, &plan.message_id);
    if plan.message_id_assigned {
        out.extend_from_slice(b",\"message_id_assigned\":true");
    }
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(plan.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    string_json(out, &plan.event);
    for (field, value) in [
        (&b",\"user_id\":"[..], &plan.user_id),
        (b",\"anonymous_id\":", &plan.anonymous_id),
        (b",\"session_id\":", &plan.session_id),
        (b",\"group_id\":", &plan.group_id),
        (b",\"previous_id\":", &plan.previous_id),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(field);
            string_json(out, value);
        }
    }
    out.extend_from_slice(b",\"ts\":");
    let ts_at = out.len();
    time_json(out, &plan.ts);
    let ts_bytes = ts_at..out.len();
    out.extend_from_slice(b",\"day\":");
    date_json(out, plan.ts.date_naive());
    if let Some(timestamp) = &plan.timestamp {
        out.extend_from_slice(b",\"timestamp\":");
        // Usually the event time itself (no skew to correct): its bytes again.
        if *timestamp == plan.ts {
            out.extend_from_within(ts_bytes);
        } else {
            time_json(out, timestamp);
        }
    }
    if let Some(sent_at) = &plan.sent_at {
        out.extend_from_slice(b",\"sent_at\":");
        time_json(out, sent_at);
    }
    out.extend_from_slice(&shared.received_at);
    if plan.historical {
        out.extend_from_slice(b",\"historical\":true");
    }
    for (field, map) in [
        (&b",\"properties\":"[..], &scratch.properties),
        (b",\"context\":", &scratch.context),
        (b",\"traits\":", &scratch.traits),
    ] {
        if !map.is_empty() {
            out.extend_from_slice(field);
            out.push(b'{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string_json(out, key);
                out.push(b':');
                value_json(out, value);
            }
            out.push(b'}');
        }
    }
    out.push(b'}');
}

/// A JSON string as serde_json writes it.
pub(crate) fn string_json(out: &mut Vec<u8>, text: &str) {
    // No early exit: the compiler vectorises the whole-string test.
    let plain = text
        .bytes()
        .fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serializer(out, |s| serde::Serializer::serialize_str(s, text));
    }
}

/// Runs one serde_json serializer call on `out` (a `Vec` does not fail; a failure would leave
/// the event undecodable, which the size and decode checks downstream would not miss).
fn serializer(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut serde_json::Serializer<&mut Vec<u8>>) -> Result<(), serde_json::Error>,
) {
    let mut serializer = serde_json::Serializer::new(out);
    if let Err(error) = f(&mut serializer) {
        tracing::error!(%error, "serde_json failed to write into memory");
    }
}

/// A tape value as serde_json writes the `serde_json::Value` read from it.
fn value_json(out: &mut Vec<u8>, value: Nodes<'_, '_>) {
    match value.first() {
        Some(Node::String(text)) => string_json(out, text),
        Some(Node::Static(StaticNode::Null)) | None => out.extend_from_slice(b"null"),
        Some(Node::Static(StaticNode::Bool(true))) => out.extend_from_slice(b"true"),
        Some(Node::Static(StaticNode::Bool(false))) => out.extend_from_slice(b"false"),
        Some(Node::Static(StaticNode::I64(n))) => serializer(out, |s| serde::Serializer::serialize_i64(s, *n)),
        Some(Node::Static(StaticNode::U64(n))) => serializer(out, |s| serde::Serializer::serialize_u64(s, *n)),
        Some(Node::Static(StaticNode::F64(n))) => serializer(out, |s| serde::Serializer::serialize_f64(s, *n)),
        Some(&Node::Array { len, .. }) => {
            out.push(b'[');
            let mut first = true;
            items_all(value, len, |item| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                value_json(out, item);
                true
            });
            out.push(b']');
        }
        Some(Node::Object { .. }) => {
            out.push(b'{');
            for (i, (key, value)) in entries(value).into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string_json(out, key);
                out.push(b':');
                value_json(out, value);
            }
            out.push(b'}');
        }
    }
}

fn two_digits(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// A time as chrono's `Serialize` writes it (RFC 3339, `SecondsFormat::AutoSi`, `Z`).
pub(crate) fn time_json(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    let naive = time.naive_utc();
    let year = naive.year();
    let nano = naive.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        string_json(out, &time.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    out.push(b'"');
    let year = year as u32;
    two_digits(out, year / 100);
    two_digits(out, year % 100);
    out.push(b'-');
    two_digits(out, naive.month());
    out.push(b'-');
    two_digits(out, naive.day());
    out.push(b'T');
    two_digits(out, naive.hour());
    out.push(b':');
    two_digits(out, naive.minute());
    out.push(b':');
    two_digits(out, naive.second());
    let (digits, fraction) = if nano == 0 {
        (0, 0)
    } else if nano % 1_000_000 == 0 {
        (3, nano / 1_000_000)
    } else if nano % 1_000 == 0 {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        out.push(b'.');
        for i in (0..digits).rev() {
            out.push(b'0' + (fraction / 10u32.pow(i) % 10) as u8);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// A date as chrono's `Serialize` writes it.
pub(crate) fn date_json(out: &mut Vec<u8>, date: NaiveDate) {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        string_json(out, &format!("{date:?}"));
        return;
    }
    out.push(b'"');
    let year = year as u32;
    two_digits(out, year / 100);
    two_digits(out, year % 100);
    out.push(b'-');
    two_digits(out, date.month());
    out.push(b'-');
    two_digits(out, date.day());
    out.push(b'"');
}

/// What a batch body is, read on its tape.
pub(crate) enum Shape {
    /// An object with one `batch` array, at most one `sentAt` (null or a valid time) and one
    /// `context` (null or an object with no repeated key).
    Usual {
        /// Where each event of `batch` starts.
        events: Vec<usize>,
        sent_at: Option<DateTime<Utc>>,
        /// Where the `context` object starts.
        context: Option<usize>,
    },
    /// Anything else: the reference path reads it (and words its error).
    Unusual,
}

/// The batch envelope on the tape.
pub(crate) fn envelope(nodes: &[Node<'_>]) -> Shape {
    let Some(&Node::Object { len, .. }) = nodes.first() else {
        return Shape::Unusual;
    };
    let (mut batch, mut sent_at, mut context) = (None, None, None);
    let mut at = 1;
    for _ in 0..len {
        let (Some(Node::String(key)), Some(value)) = (nodes.get(at), value_at(nodes, at + 1)) else {
            return Shape::Unusual;
        };
        let slot = match *key {
            "batch" => Some(&mut batch),
            "sentAt" => Some(&mut sent_at),
            "context" => Some(&mut context),
            _ => None,
        };
        // serde refuses a field twice.
        if slot.is_some_and(|slot| slot.replace(at + 1).is_some()) {
            return Shape::Unusual;
        }
        at += 1 + value.len();
    }
    let Some(batch) = batch else {
        return Shape::Unusual;
    };
    let Some(&Node::Array { len: count, .. }) = nodes.get(batch) else {
        return Shape::Unusual;
    };
    let context = match context.map(|at| (at, value_at(nodes, at))) {
        None => None,
        Some((_, Some([Node::Static(StaticNode::Null)]))) => None,
        Some((at, Some(value))) if matches!(value.first(), Some(Node::Object { .. })) && !repeats_a_key(value) => {
            Some(at)
        }
        Some(_) => return Shape::Unusual,
    };
    let Ok(sent_at) = time(sent_at.and_then(|at| value_at(nodes, at))) else {
        return Shape::Unusual;
    };
    let mut events = Vec::with_capacity(count);
    let mut at = batch + 1;
    for _ in 0..count {
        let Some(event) = value_at(nodes, at) else {
            return Shape::Unusual;
        };
        events.push(at);
        at += event.len();
    }
    Shape::Usual {
        events,
        sent_at,
        context,
    }
}

/// Whether a node is a string equal to [`RAW_VALUE_TOKEN`].
pub(crate) fn is_raw_value_token(node: &Node<'_>) -> bool {
    matches!(node, Node::String(s) if s.len() == RAW_VALUE_TOKEN.len() && *s == RAW_VALUE_TOKEN)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn times_and_dates_are_written_as_chrono_serialises_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..20_000u64 {
            let secs = (next() % 400_000_000_000) as i64 - 62_000_000_000;
            let nanos = match i % 5 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                3 => (next() % 1_000_000_000) as u32,
                _ => 1_000_000_000 + (next() % 1_000_000_000) as u32,
            };
            let Some(time) = Utc.timestamp_opt(secs, nanos).single() else {
                continue;
            };
            let mut out = Vec::new();
            time_json(&mut out, &time);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&time).unwrap());
            let mut out = Vec::new();
            date_json(&mut out, time.date_naive());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&time.date_naive()).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_names_are_snake_cased_as_common_does(name in "[ -~]{0,24}", unicode in ".{0,8}") {
            proptest::prop_assert_eq!(snake_case_fast(&name), snake_case(&name));
            proptest::prop_assert_eq!(snake_case_fast(&unicode), snake_case(&unicode));
        }
    }

    #[test]
    fn usual_names_are_snake_cased_as_common_does() {
        for name in [
            "Course Viewed",
            "COURSE_VIEWED",
            "courseViewed",
            "HTTPRequest",
            "a1B",
            "x__y_",
            "_A9z",
            "",
        ] {
            assert_eq!(snake_case_fast(name), snake_case(name), "{name}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut text = String::new();
        for c in (0u32..0x200)
            .filter_map(char::from_u32)
            .chain(['\u{2028}', '\u{fffd}', '😀'])
        {
            text.push(c);
            let mut out = Vec::new();
            string_json(&mut out, &text);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&text).unwrap());
            let mut out = Vec::new();
            string_json(&mut out, &c.to_string());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&c.to_string()).unwrap()
            );
        }
    }
}
