//! One xAPI statement, validated and read into what the translation needs (docs/contract.md §4
//! "xAPI statements"). The checks are those of xAPI 1.0.3 ("Data", 2.4) that the pipeline relies
//! on: the actor's one inverse functional identifier, the verb's and the object's IRIs, the score's
//! bounds, the duration and the time, the id. What the statement carries beyond them (language
//! maps, interaction definitions, unknown properties) is kept, unchecked, in the stored statement.
//! Context activity ids are only required to be strings: Open edX sends ids that are no IRIs
//! there (an attempt's bare UUID), and refusing them would refuse its whole batch.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::duration;

/// Why a statement is refused: the field at fault (a path in the statement) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Option<String>,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: Some(field.to_owned()),
        reason: format!("`{field}` {}", reason.into()),
    }
}

type Checked<T> = Result<T, Invalid>;

/// A validated statement, borrowing from the parsed request.
#[derive(Debug)]
pub struct Statement<'a> {
    /// The statement as sent.
    pub raw: &'a Map<String, Value>,
    pub id: Option<Uuid>,
    /// The learner: the actor's identifier (`account.name`, the `mbox` or `openid` IRI, or the
    /// `mbox_sha1sum`), with the field it came from.
    pub actor: (String, &'static str),
    pub verb: &'a str,
    pub object: Object<'a>,
    pub result: Outcome<'a>,
    pub timestamp: Option<DateTime<Utc>>,
    pub context: Context<'a>,
}

/// What the statement is about.
#[derive(Debug)]
pub enum Object<'a> {
    /// An Activity (Open edX also says `GroupActivity` for a problem of several questions).
    Activity(Activity<'a>),
    /// An Agent or an identified Group, by its identifier.
    Agent(String),
    /// An anonymous Group (its members only).
    Group,
    StatementRef(Uuid),
    SubStatement,
}

/// An activity: the object or one of the context activities.
#[derive(Debug, Clone)]
pub struct Activity<'a> {
    pub id: &'a str,
    /// `definition.type`, when it is a string.
    pub kind: Option<&'a str>,
    /// Where `id` is in the statement (`object.id`, `context.contextActivities.parent[1].id`).
    pub field: String,
}

/// `result`, its parts read (all absent when the statement has none).
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    pub scaled: Option<f64>,
    pub raw: Option<&'a Number>,
    pub min: Option<&'a Number>,
    pub max: Option<&'a Number>,
    pub success: Option<bool>,
    pub completion: Option<bool>,
    /// `duration`, in seconds.
    pub duration_s: Option<f64>,
    pub extensions: Option<&'a Map<String, Value>>,
    /// Whether the statement has a `result` at all.
    pub present: bool,
}

/// `context`'s parts the translation reads.
#[derive(Debug, Default)]
pub struct Context<'a> {
    pub parent: Vec<Activity<'a>>,
    pub grouping: Vec<Activity<'a>>,
    pub extensions: Option<&'a Map<String, Value>>,
}

/// The inverse functional identifiers of an Agent (xAPI "Data" 2.4.2.3).
const IDENTIFIERS: [&str; 4] = ["mbox", "mbox_sha1sum", "openid", "account"];

/// Validates one statement.
pub fn validate(value: &Value) -> Checked<Statement<'_>> {
    let Value::Object(raw) = value else {
        return Err(Invalid {
            field: None,
            reason: "a statement must be a JSON object".into(),
        });
    };
    let id = match raw.get("id") {
        None | Some(Value::Null) => None,
        Some(id) => Some(uuid(id, "id")?),
    };
    let actor = match raw.get("actor") {
        None => return Err(invalid("actor", "is required")),
        Some(actor) => {
            if actor.get("objectType").and_then(Value::as_str) == Some("Group") {
                return Err(invalid(
                    "actor",
                    "is a Group; groups are not accepted as actors here: send one statement per member, each with an Agent actor",
                ));
            }
            agent(actor, "actor")?
        }
    };
    let verb = verb(raw.get("verb"), "verb")?;
    let object = object(raw.get("object"), "object", true)?;
    let result = outcome(raw.get("result"))?;
    let timestamp = match raw.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(time(text).map_err(|why| invalid("timestamp", why))?),
        Some(_) => return Err(invalid("timestamp", "must be an ISO 8601 time string")),
    };
    let context = context(raw.get("context"))?;
    Ok(Statement {
        raw,
        id,
        actor: (actor.0, actor.1),
        verb,
        object,
        result,
        timestamp,
        context,
    })
}

fn uuid(value: &Value, field: &str) -> Checked<Uuid> {
    value
        .as_str()
        .and_then(|text| Uuid::try_parse(text).ok())
        .ok_or_else(|| invalid(field, "must be a UUID (such as 0f3c2b4e-8c1d-4b6a-9e2f-3a4b5c6d7e8f)"))
}

/// An Agent (or identified Group): exactly one inverse functional identifier, valid; returns its
/// value as an id and the field it came from.
fn agent(value: &Value, field: &str) -> Checked<(String, &'static str)> {
    let Value::Object(map) = value else {
        return Err(invalid(field, "must be an object"));
    };
    let present: Vec<&'static str> = IDENTIFIERS
        .into_iter()
        .filter(|key| map.get(*key).is_some_and(|v| !v.is_null()))
        .collect();
    let key = match present.as_slice() {
        [key] => *key,
        [] => {
            return Err(invalid(
                field,
                "has no identifier: it needs exactly one of `mbox`, `mbox_sha1sum`, `openid` and `account`",
            ))
        }
        many => {
            return Err(invalid(
                field,
                format!(
                    "has {} identifiers ({}); exactly one of `mbox`, `mbox_sha1sum`, `openid` and `account` is allowed",
                    many.len(),
                    many.join(", ")
                ),
            ))
        }
    };
    let at = format!("{field}.{key}");
    let value = &map[key];
    let id = match key {
        "mbox" => {
            let text = value.as_str().unwrap_or_default();
            let address = text
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
                .map(|_| &text[7..]);
            match address {
                Some(address) if is_email(address) => text.to_owned(),
                _ => return Err(invalid(&at, "must be a mailto: IRI (mailto:name@example.org)")),
            }
        }
        "mbox_sha1sum" => match value.as_str() {
            Some(hex) if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => hex.to_ascii_lowercase(),
            _ => return Err(invalid(&at, "must be the 40 hexadecimal digits of a SHA-1")),
        },
        "openid" => match value.as_str() {
            Some(iri) if is_absolute_iri(iri) => iri.to_owned(),
            _ => return Err(invalid(&at, "must be an absolute IRI")),
        },
        _ => {
            let Value::Object(account) = value else {
                return Err(invalid(&at, "must be an object with `homePage` and `name`"));
            };
            match account.get("homePage").and_then(Value::as_str) {
                Some(home) if is_absolute_iri(home) => {}
                _ => return Err(invalid(&format!("{at}.homePage"), "must be an absolute IRI")),
            }
            match account.get("name").and_then(Value::as_str) {
                Some(name) if !name.is_empty() => name.to_owned(),
                _ => return Err(invalid(&format!("{at}.name"), "must be a non-empty string")),
            }
        }
    };
    let source = match key {
        "mbox" => "mbox",
        "mbox_sha1sum" => "mbox_sha1sum",
        "openid" => "openid",
        _ => "account.name",
    };
    Ok((id, source))
}

fn verb<'a>(value: Option<&'a Value>, field: &str) -> Checked<&'a str> {
    let Some(Value::Object(verb)) = value else {
        return Err(invalid(field, "is required, an object with an `id` IRI"));
    };
    match verb.get("id").and_then(Value::as_str) {
        Some(id) if is_absolute_iri(id) => Ok(id),
        _ => Err(invalid(&format!("{field}.id"), "must be an absolute IRI")),
    }
}

/// The object; `top`: the statement's own (a SubStatement may not hold another).
fn object<'a>(value: Option<&'a Value>, field: &str, top: bool) -> Checked<Object<'a>> {
    let Some(value @ Value::Object(map)) = value else {
        return Err(invalid(field, "is required, an object"));
    };
    let kind = match map.get("objectType") {
        None | Some(Value::Null) => "Activity",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(invalid(&format!("{field}.objectType"), "must be a string")),
    };
    match kind {
        "Activity" | "GroupActivity" => Ok(Object::Activity(activity(map, field, true)?)),
        "Agent" => Ok(Object::Agent(agent(value, field)?.0)),
        "Group" => {
            if IDENTIFIERS
                .iter()
                .any(|key| map.get(*key).is_some_and(|v| !v.is_null()))
            {
                Ok(Object::Agent(agent(value, field)?.0))
            } else if map.get("member").is_some_and(Value::is_array) {
                Ok(Object::Group)
            } else {
                Err(invalid(field, "is a Group without an identifier or a `member` array"))
            }
        }
        "StatementRef" => Ok(Object::StatementRef(uuid(
            map.get("id").unwrap_or(&Value::Null),
            &format!("{field}.id"),
        )?)),
        "SubStatement" if top => {
            for key in ["id", "stored", "version", "authority"] {
                if map.contains_key(key) {
                    return Err(invalid(&format!("{field}.{key}"), "is not allowed in a SubStatement"));
                }
            }
            match map.get("actor") {
                None => return Err(invalid(&format!("{field}.actor"), "is required")),
                Some(actor) => agent(actor, &format!("{field}.actor"))?,
            };
            verb(map.get("verb"), &format!("{field}.verb"))?;
            object(map.get("object"), &format!("{field}.object"), false)?;
            Ok(Object::SubStatement)
        }
        "SubStatement" => Err(invalid(field, "is a SubStatement inside a SubStatement")),
        other => Err(invalid(
            &format!("{field}.objectType"),
            format!("is {other:?}; it must be Activity, Agent, Group, StatementRef or SubStatement"),
        )),
    }
}

/// An activity at `field`; `iri`: whether its id must be an absolute IRI (the object's), or
/// only a string (a context activity's).
fn activity<'a>(map: &'a Map<String, Value>, field: &str, iri: bool) -> Checked<Activity<'a>> {
    let at = format!("{field}.id");
    let id = match map.get("id").and_then(Value::as_str) {
        Some(id) if !iri || is_absolute_iri(id) => id,
        _ if iri => return Err(invalid(&at, "must be an absolute IRI")),
        _ => return Err(invalid(&at, "must be a string")),
    };
    let kind = map
        .get("definition")
        .and_then(|definition| definition.get("type"))
        .and_then(Value::as_str);
    Ok(Activity { id, kind, field: at })
}

fn number<'a>(map: &'a Map<String, Value>, key: &str, field: &str) -> Checked<Option<&'a Number>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n)),
        Some(_) => Err(invalid(&format!("{field}.{key}"), "must be a number")),
    }
}

fn flag(map: &Map<String, Value>, key: &str) -> Checked<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&format!("result.{key}"), "must be true or false")),
    }
}

fn outcome(value: Option<&Value>) -> Checked<Outcome<'_>> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Outcome::default()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("result", "must be an object")),
    };
    let mut outcome = Outcome {
        present: true,
        success: flag(map, "success")?,
        completion: flag(map, "completion")?,
        ..Outcome::default()
    };
    match map.get("score") {
        None | Some(Value::Null) => {}
        Some(Value::Object(score)) => {
            let f = "result.score";
            outcome.raw = number(score, "raw", f)?;
            outcome.min = number(score, "min", f)?;
            outcome.max = number(score, "max", f)?;
            if let Some(scaled) = number(score, "scaled", f)? {
                let scaled = scaled.as_f64().unwrap_or(f64::NAN);
                if !(-1.0..=1.0).contains(&scaled) {
                    return Err(invalid(
                        "result.score.scaled",
                        format!("is {scaled}; it must be within -1..1"),
                    ));
                }
                outcome.scaled = Some(scaled);
            }
            let value = |n: Option<&Number>| n.and_then(Number::as_f64);
            if let (Some(min), Some(max)) = (value(outcome.min), value(outcome.max)) {
                if min > max {
                    return Err(invalid(
                        "result.score.min",
                        format!("({min}) is greater than `max` ({max})"),
                    ));
                }
            }
            if let Some(raw) = value(outcome.raw) {
                if let Some(min) = value(outcome.min).filter(|min| raw < *min) {
                    return Err(invalid("result.score.raw", format!("({raw}) is below `min` ({min})")));
                }
                if let Some(max) = value(outcome.max).filter(|max| raw > *max) {
                    return Err(invalid("result.score.raw", format!("({raw}) is above `max` ({max})")));
                }
            }
        }
        Some(_) => return Err(invalid("result.score", "must be an object")),
    }
    match map.get("duration") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            outcome.duration_s = Some(duration::seconds(text).map_err(|why| invalid("result.duration", why))?);
        }
        Some(_) => {
            return Err(invalid(
                "result.duration",
                "must be an ISO 8601 duration string (PT1M30S)",
            ))
        }
    }
    match map.get("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extensions)) => outcome.extensions = Some(extensions),
        Some(_) => return Err(invalid("result.extensions", "must be an object")),
    }
    Ok(outcome)
}

fn context(value: Option<&Value>) -> Checked<Context<'_>> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Context::default()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("context", "must be an object")),
    };
    let mut context = Context::default();
    match map.get("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extensions)) => context.extensions = Some(extensions),
        Some(_) => return Err(invalid("context.extensions", "must be an object")),
    }
    let activities = match map.get("contextActivities") {
        None | Some(Value::Null) => return Ok(context),
        Some(Value::Object(activities)) => activities,
        Some(_) => return Err(invalid("context.contextActivities", "must be an object")),
    };
    for key in ["parent", "grouping", "category", "other"] {
        let field = format!("context.contextActivities.{key}");
        // xAPI 1.0 allows one activity or an array of them.
        let list: Vec<(String, &Value)> = match activities.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{field}[{i}]"), item))
                .collect(),
            Some(one) => vec![(field.clone(), one)],
        };
        for (at, item) in list {
            let Value::Object(item) = item else {
                return Err(invalid(&at, "must be an activity object"));
            };
            let activity = activity(item, &at, false)?;
            match key {
                "parent" => context.parent.push(activity),
                "grouping" => context.grouping.push(activity),
                _ => {}
            }
        }
    }
    Ok(context)
}

/// An ISO 8601 time: RFC 3339 (`2026-03-10T11:00:00.123Z`, `+01:00`), an offset without a colon
/// (`+0100`), or no offset at all, read as UTC.
pub fn time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(time) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(time) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(time.and_utc());
    }
    Err(format!(
        "is not an ISO 8601 time (such as 2026-03-10T11:00:00.000Z): {text:?}"
    ))
}

/// An absolute IRI (RFC 3987): a scheme (a letter, then letters, digits, `+`, `-`, `.`), `:`, and
/// a non-empty rest without spaces, control characters or the characters IRIs exclude
/// (`<>"{}|\^` and the backtick), every `%` starting an escape of two hexadecimal digits.
pub fn is_absolute_iri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return false;
    }
    let bytes = rest.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    escapes_ok
        && !rest.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
        })
}

/// An email address, as far as an identifier needs: a local part and a domain around one `@`,
/// without spaces or control characters.
fn is_email(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn statement() -> Value {
        json!({
            "actor": {"account": {"homePage": "https://lms.example.org", "name": "42"}},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
            "object": {"id": "https://lms.example.org/mod/book/view.php?id=7",
                       "definition": {"type": "http://id.tincanapi.com/activitytype/book"}},
        })
    }

    fn refused(change: impl FnOnce(&mut Value)) -> Invalid {
        let mut value = statement();
        change(&mut value);
        validate(&value).expect_err("refused")
    }

    #[test]
    fn a_minimal_statement_is_read() {
        let value = statement();
        let statement = validate(&value).unwrap();
        assert_eq!(statement.actor, ("42".to_owned(), "account.name"));
        assert_eq!(statement.verb, "http://adlnet.gov/expapi/verbs/completed");
        match statement.object {
            Object::Activity(activity) => {
                assert_eq!(activity.id, "https://lms.example.org/mod/book/view.php?id=7");
                assert_eq!(activity.kind, Some("http://id.tincanapi.com/activitytype/book"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_actor_needs_exactly_one_valid_identifier() {
        let none = refused(|s| s["actor"] = json!({"name": "Ada"}));
        assert_eq!(none.field.as_deref(), Some("actor"));
        assert!(none.reason.contains("no identifier"), "{none:?}");
        let two = refused(|s| s["actor"]["mbox"] = json!("mailto:ada@example.org"));
        assert!(two.reason.contains("2 identifiers (mbox, account)"), "{two:?}");
        let mbox = refused(|s| s["actor"] = json!({"mbox": "ada@example.org"}));
        assert_eq!(mbox.field.as_deref(), Some("actor.mbox"));
        let sha = refused(|s| s["actor"] = json!({"mbox_sha1sum": "abc"}));
        assert_eq!(sha.field.as_deref(), Some("actor.mbox_sha1sum"));
        let openid = refused(|s| s["actor"] = json!({"openid": "not an iri"}));
        assert_eq!(openid.field.as_deref(), Some("actor.openid"));
        let home = refused(|s| s["actor"]["account"]["homePage"] = json!("lms.example.org"));
        assert_eq!(home.field.as_deref(), Some("actor.account.homePage"));
        let name = refused(|s| s["actor"]["account"]["name"] = json!(""));
        assert_eq!(name.field.as_deref(), Some("actor.account.name"));
        let group = refused(|s| s["actor"] = json!({"objectType": "Group", "member": []}));
        assert!(group.reason.contains("groups are not accepted as actors"), "{group:?}");
        for (actor, id) in [
            (json!({"mbox": "mailto:Ada@example.org"}), "mailto:Ada@example.org"),
            (
                json!({"mbox_sha1sum": "ABCDEF0123456789abcdef0123456789ABCDEF01"}),
                "abcdef0123456789abcdef0123456789abcdef01",
            ),
            (
                json!({"openid": "https://openid.example.org/ada"}),
                "https://openid.example.org/ada",
            ),
        ] {
            let mut value = statement();
            value["actor"] = actor;
            assert_eq!(validate(&value).unwrap().actor.0, id);
        }
    }

    #[test]
    fn verb_and_object_ids_are_absolute_iris() {
        assert_eq!(
            refused(|s| s["verb"]["id"] = json!("completed")).field.as_deref(),
            Some("verb.id")
        );
        assert_eq!(
            refused(|s| s["object"]["id"] = json!("/mod/book")).field.as_deref(),
            Some("object.id")
        );
        assert_eq!(
            refused(|s| s["object"]["objectType"] = json!("Thing")).field.as_deref(),
            Some("object.objectType")
        );
        let reference = refused(|s| s["object"] = json!({"objectType": "StatementRef", "id": "x"}));
        assert_eq!(reference.field.as_deref(), Some("object.id"));
        let mut value = statement();
        value["object"] = json!({"objectType": "SubStatement", "actor": {"mbox": "mailto:a@b.c"},
                                 "verb": {"id": "http://adlnet.gov/expapi/verbs/attempted"},
                                 "object": {"id": "https://lms.example.org/q/1"}});
        assert!(matches!(validate(&value).unwrap().object, Object::SubStatement));
        value["object"]["object"] = json!({"objectType": "SubStatement"});
        assert_eq!(validate(&value).unwrap_err().field.as_deref(), Some("object.object"));
    }

    #[test]
    fn scores_stay_within_their_bounds_on_both_sides() {
        let score = |score: Value| {
            let mut value = statement();
            value["result"] = json!({"score": score});
            validate(&value).map(|_| ()).map_err(|e| e.field.unwrap())
        };
        assert_eq!(score(json!({"scaled": 1})), Ok(()));
        assert_eq!(score(json!({"scaled": -1})), Ok(()));
        assert_eq!(score(json!({"scaled": 1.0001})), Err("result.score.scaled".into()));
        assert_eq!(score(json!({"scaled": -1.5})), Err("result.score.scaled".into()));
        assert_eq!(score(json!({"raw": 5, "min": 0, "max": 5})), Ok(()));
        assert_eq!(
            score(json!({"raw": 5.5, "min": 0, "max": 5})),
            Err("result.score.raw".into())
        );
        assert_eq!(score(json!({"raw": -1, "min": 0})), Err("result.score.raw".into()));
        assert_eq!(score(json!({"min": 3, "max": 2})), Err("result.score.min".into()));
        assert_eq!(score(json!({"raw": "5"})), Err("result.score.raw".into()));
    }

    #[test]
    fn durations_times_and_ids_are_checked() {
        let bad = refused(|s| s["result"] = json!({"duration": "90 seconds"}));
        assert_eq!(bad.field.as_deref(), Some("result.duration"));
        let bad = refused(|s| s["timestamp"] = json!("yesterday"));
        assert_eq!(bad.field.as_deref(), Some("timestamp"));
        let bad = refused(|s| s["id"] = json!("m-1"));
        assert_eq!(bad.field.as_deref(), Some("id"));
        for (text, utc) in [
            ("2026-03-10T11:00:00Z", "2026-03-10T11:00:00+00:00"),
            ("2026-03-10T12:00:00.5+01:00", "2026-03-10T11:00:00.500+00:00"),
            ("2026-03-10T12:00:00+0100", "2026-03-10T11:00:00+00:00"),
            ("2026-03-10T11:00:00", "2026-03-10T11:00:00+00:00"),
        ] {
            assert_eq!(time(text).unwrap().to_rfc3339(), utc, "{text}");
        }
        assert!(time("2026-03-10").is_err());
    }

    #[test]
    fn iris_need_a_scheme_and_nothing_they_exclude() {
        for iri in [
            "http://adlnet.gov/expapi/verbs/completed",
            "https://lms.example.org/mod/quiz/attempt.php?attempt=1&cmid=1",
            "block-v1:edX+DemoX+Demo_Course+type@sequential+block@5b4b",
            "urn:uuid:6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d",
            "https://例え.jp/コース",
            "https://x.org/a%20b",
        ] {
            assert!(is_absolute_iri(iri), "{iri}");
        }
        for text in [
            "",
            "completed",
            ":x",
            "1http://x",
            "http:",
            "http://x y",
            "http://x/<a>",
            "https://x.org/a%2",
            "http://x\u{0}",
        ] {
            assert!(!is_absolute_iri(text), "{text:?}");
        }
    }
}
