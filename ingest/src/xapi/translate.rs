//! From a validated statement to the Segment track call it becomes (docs/contract.md §4 "xAPI
//! statements" has the table, §5 the events): the verb and the object's activity type choose
//! the event, the course is the object or a context activity of a course type, the learner is
//! the actor. The call then goes through ingest's own validation (`decode::encode_built`), so an
//! xAPI event obeys every rule a Segment event does.

use chrono::SecondsFormat;
use serde_json::{json, Map, Number, Value};
use uuid::Uuid;

use super::statement::{Activity, Object, Statement};

/// The event of a statement whose verb (or object) has no learning event of its own: stored
/// with its verb, object and course, so nothing is lost.
pub const GENERIC: &str = "xapi_statement";

/// Course activity types: ADL's, Moodle's older one, cmi5's (Moodle's logstore_xapi today).
const COURSE: [&str; 3] = [
    "http://adlnet.gov/expapi/activities/course",
    "http://id.tincanapi.com/activitytype/lms/course",
    "https://w3id.org/xapi/cmi5/activitytype/course",
];
/// Assessments: ADL's (Moodle's quizzes) and Open edX's special exams.
const ASSESSMENT: [&str; 4] = [
    "http://adlnet.gov/expapi/activities/assessment",
    "https://w3id.org/xapi/openedx/activity/timed-assessment",
    "https://w3id.org/xapi/openedx/activity/practice-assessment",
    "https://w3id.org/xapi/openedx/activity/proctored-assessment",
];
/// One attempt of an assessment (Moodle's quiz attempts).
const ATTEMPT: &str = "http://adlnet.gov/expapi/activities/attempt";
/// Questions: ADL's (Open edX's graded problems) and interactions (Moodle's and Open edX's
/// checked answers).
const QUESTION: [&str; 2] = [
    "http://adlnet.gov/expapi/activities/question",
    "http://adlnet.gov/expapi/activities/cmi.interaction",
];
const VIDEO: &str = "https://w3id.org/xapi/video/activity-type/video";
/// The parts of a course a lesson sits in: Moodle's sections, ADL modules.
const MODULE: [&str; 2] = [
    "http://id.tincanapi.com/activitytype/section",
    "http://adlnet.gov/expapi/activities/module",
];

const ENROL: [&str; 3] = [
    "http://adlnet.gov/expapi/verbs/registered",
    "https://xapi.edlm/profiles/edlm-lms/concepts/verbs/enrolled",
    "https://w3id.org/xapi/tla/verbs/resumed",
];
const UNENROL: [&str; 3] = [
    "http://id.tincanapi.com/verb/unregistered",
    "http://activitystrea.ms/leave",
    "https://w3id.org/xapi/tla/verbs/suspended",
];
const VIEW: [&str; 5] = [
    "http://id.tincanapi.com/verb/viewed",
    "http://adlnet.gov/expapi/verbs/experienced",
    "https://w3id.org/xapi/dod-isd/verbs/navigated",
    "http://adlnet.gov/expapi/verbs/launched",
    "http://adlnet.gov/expapi/verbs/initialized",
];
const PROGRESSED: &str = "http://adlnet.gov/expapi/verbs/progressed";
const COMPLETED: [&str; 2] = [
    "http://adlnet.gov/expapi/verbs/completed",
    "https://w3id.org/xapi/video/verbs/completed",
];
const PASSED: &str = "http://adlnet.gov/expapi/verbs/passed";
const FAILED: &str = "http://adlnet.gov/expapi/verbs/failed";
const SCORED: [&str; 2] = [
    "http://adlnet.gov/expapi/verbs/scored",
    "https://w3id.org/xapi/tla/verbs/scored",
];
const EARNED: &str = "http://id.tincanapi.com/verb/earned";
const ANSWERED: &str = "http://adlnet.gov/expapi/verbs/answered";
const EVALUATED: &str = "https://w3id.org/xapi/acrossx/verbs/evaluated";
const ATTEMPTED: &str = "http://adlnet.gov/expapi/verbs/attempted";
const TERMINATED: &str = "http://adlnet.gov/expapi/verbs/terminated";
const PLAYED: &str = "https://w3id.org/xapi/video/verbs/played";
const PAUSED: &str = "https://w3id.org/xapi/video/verbs/paused";
const SEEKED: &str = "https://w3id.org/xapi/video/verbs/seeked";

/// Extensions read.
const SESSION_ID: &str = "https://w3id.org/xapi/openedx/extensions/session-id";
const VIDEO_TIME: &str = "https://w3id.org/xapi/video/extensions/time";
const VIDEO_TIME_FROM: &str = "https://w3id.org/xapi/video/extensions/time-from";
const VIDEO_TIME_TO: &str = "https://w3id.org/xapi/video/extensions/time-to";
const VIDEO_LENGTH: &str = "https://w3id.org/xapi/video/extensions/length";
const VIDEO_SEGMENTS: &str = "https://w3id.org/xapi/video/extensions/played-segments";
const PROGRESS: &str = "https://w3id.org/xapi/cmi5/result/extensions/progress";

/// A statement as a Segment track call.
#[derive(Debug)]
pub struct Translated {
    /// The track call, for `decode::encode_built`.
    pub event: Value,
    pub name: &'static str,
    /// Which statement field each field of the call came from (`properties.course_id` from
    /// `context.contextActivities.parent[1].id`): a rejection of the call names the call's field,
    /// and the client is told the statement's.
    sources: Vec<(String, String)>,
}

impl Translated {
    /// The statement field behind the first call field a rejection's message names.
    pub fn source_of(&self, message: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|(field, _)| message.contains(&format!("`{field}`")))
            .map(|(_, source)| source.as_str())
    }
}

fn is(kind: Option<&str>, kinds: &[&str]) -> bool {
    kind.is_some_and(|kind| kinds.contains(&kind))
}

/// The statement's course: the object when it is a course, else the first course among the
/// parent context activities, then among the grouping ones.
fn course<'s, 'a>(statement: &'s Statement<'a>) -> Option<&'s Activity<'a>> {
    if let Object::Activity(activity) = &statement.object {
        if is(activity.kind, &COURSE) {
            return Some(activity);
        }
    }
    context_activity(statement, &COURSE)
}

/// The first parent, then grouping, context activity of one of `kinds`.
fn context_activity<'s, 'a>(statement: &'s Statement<'a>, kinds: &[&str]) -> Option<&'s Activity<'a>> {
    let context = &statement.context;
    context
        .parent
        .iter()
        .chain(&context.grouping)
        .find(|activity| is(activity.kind, kinds))
}

/// A number from an extension: a JSON number, or a string holding one.
fn extension_number(extensions: Option<&Map<String, Value>>, key: &str) -> Option<Value> {
    match extensions?.get(key)? {
        Value::Number(n) => Some(Value::Number(n.clone())),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        _ => None,
    }
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The call's properties, with where each came from.
struct Properties {
    map: Map<String, Value>,
    sources: Vec<(String, String)>,
}

impl Properties {
    fn set(&mut self, key: &str, value: Value, source: &str) {
        if value.is_null() {
            return;
        }
        self.map.insert(key.to_owned(), value);
        self.sources.push((format!("properties.{key}"), source.to_owned()));
    }
}

/// Translates a validated statement whose id is `id`; `original` is the statement as sent, in
/// JSON, kept whole as `properties.xapi_statement`.
pub fn translate(statement: &Statement<'_>, id: Uuid, original: String) -> Translated {
    let mut p = Properties {
        map: Map::new(),
        sources: Vec::new(),
    };
    let result = &statement.result;
    let verb = statement.verb;
    p.set("verb", json!(verb), "verb.id");
    let activity = match &statement.object {
        Object::Activity(activity) => Some(activity),
        _ => None,
    };
    match &statement.object {
        Object::Activity(activity) => {
            p.set("object_id", json!(activity.id), "object.id");
            p.set("activity_type", json!(activity.kind), "object.definition.type");
        }
        Object::Agent(agent) => p.set("object_id", json!(agent), "object"),
        Object::StatementRef(referenced) => p.set("object_id", json!(referenced.to_string()), "object.id"),
        Object::Group | Object::SubStatement => {}
    }
    if let Some(course) = course(statement) {
        p.set("course_id", json!(course.id), &course.field);
    }
    let kind = activity.and_then(|a| a.kind);
    let on_course = is(kind, &COURSE);
    let passed = match verb {
        PASSED => Some(true),
        FAILED => Some(false),
        _ => result.success,
    };
    let name = match activity {
        None => GENERIC,
        Some(_) if ENROL.contains(&verb) && on_course => "course_enrolled",
        Some(_) if UNENROL.contains(&verb) && on_course => "course_unenrolled",
        Some(a) if verb == PLAYED => video(&mut p, statement, a, "video_played"),
        Some(a) if verb == PAUSED => video(&mut p, statement, a, "video_paused"),
        Some(a) if verb == SEEKED => video(&mut p, statement, a, "video_seeked"),
        // Open edX's stop_video: the learner stopped watching at a position, as a pause does.
        Some(a) if verb == TERMINATED && kind == Some(VIDEO) => video(&mut p, statement, a, "video_paused"),
        Some(_) if VIEW.contains(&verb) && on_course => "course_viewed",
        Some(a) if VIEW.contains(&verb) => {
            p.set("item_id", json!(a.id), &a.field);
            "content_viewed"
        }
        Some(a) if verb == PROGRESSED => {
            if !on_course {
                p.set("item_id", json!(a.id), &a.field);
            }
            let progress = extension_number(result.extensions, PROGRESS).unwrap_or(Value::Null);
            p.set("progress", progress, &format!("result.extensions[{PROGRESS}]"));
            p.set("completed", json!(result.completion), "result.completion");
            "content_progressed"
        }
        Some(_) if COMPLETED.contains(&verb) && on_course => "course_completed",
        Some(a) if COMPLETED.contains(&verb) && kind == Some(VIDEO) => video(&mut p, statement, a, "video_completed"),
        Some(a) if COMPLETED.contains(&verb) && (is(kind, &ASSESSMENT) || kind == Some(ATTEMPT)) => {
            quiz(&mut p, statement, a, passed)
        }
        Some(a) if COMPLETED.contains(&verb) => {
            p.set("lesson_id", json!(a.id), &a.field);
            if let Some(module) = context_activity(statement, &MODULE) {
                p.set("module_id", json!(module.id), &module.field);
            }
            p.set(
                "time_spent_s",
                result.duration_s.map_or(Value::Null, float),
                "result.duration",
            );
            "lesson_completed"
        }
        Some(_) if (verb == PASSED || verb == FAILED || SCORED.contains(&verb) || verb == EARNED) && on_course => {
            p.set(
                "grade",
                result.scaled.map_or(Value::Null, |s| float(s.clamp(0.0, 1.0))),
                "result.score.scaled",
            );
            if let Some(raw) = result.raw {
                p.set("score", Value::Number(raw.clone()), "result.score.raw");
                p.set("max_score", json!(result.max), "result.score.max");
            }
            p.set("passed", json!(passed), "result.success");
            "course_graded"
        }
        Some(a) if (verb == PASSED || verb == FAILED || SCORED.contains(&verb)) && is(kind, &QUESTION) => {
            question(&mut p, statement, a, passed)
        }
        Some(a) if verb == PASSED || verb == FAILED || SCORED.contains(&verb) => quiz(&mut p, statement, a, passed),
        Some(a) if verb == ANSWERED => question(&mut p, statement, a, passed),
        Some(a) if (verb == EVALUATED || verb == ATTEMPTED) && is(kind, &QUESTION) && result.present => {
            question(&mut p, statement, a, passed)
        }
        Some(_) => GENERIC,
    };
    p.set(
        "duration_s",
        result.duration_s.map_or(Value::Null, float),
        "result.duration",
    );
    p.set("xapi_statement", json!(original), "");
    let mut event = Map::new();
    let mut sources = vec![
        ("userId".to_owned(), format!("actor.{}", statement.actor.1)),
        ("messageId".to_owned(), "id".to_owned()),
    ];
    event.insert("type".into(), json!("track"));
    event.insert("event".into(), json!(name));
    event.insert("userId".into(), json!(statement.actor.0));
    event.insert("messageId".into(), json!(id.to_string()));
    if let Some(time) = statement.timestamp {
        event.insert(
            "timestamp".into(),
            json!(time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        );
        sources.push(("timestamp".into(), "timestamp".into()));
    }
    if let Some(session) = statement
        .context
        .extensions
        .and_then(|extensions| extensions.get(SESSION_ID))
        .filter(|v| v.is_string() || v.is_number())
    {
        event.insert("sessionId".into(), session.clone());
        sources.push(("sessionId".into(), format!("context.extensions[{SESSION_ID}]")));
    }
    sources.extend(p.sources);
    event.insert("properties".into(), Value::Object(p.map));
    Translated {
        event: Value::Object(event),
        name,
        sources: sources.into_iter().filter(|(_, source)| !source.is_empty()).collect(),
    }
}

/// A video event: the video, the positions, the length and the played segments.
fn video(p: &mut Properties, statement: &Statement<'_>, video: &Activity<'_>, name: &'static str) -> &'static str {
    let result = statement.result.extensions;
    p.set("video_id", json!(video.id), &video.field);
    let at = |key: &str| format!("result.extensions[{key}]");
    if name == "video_seeked" {
        p.set(
            "from_s",
            extension_number(result, VIDEO_TIME_FROM).unwrap_or_default(),
            &at(VIDEO_TIME_FROM),
        );
        p.set(
            "to_s",
            extension_number(result, VIDEO_TIME_TO).unwrap_or_default(),
            &at(VIDEO_TIME_TO),
        );
    } else {
        p.set(
            "position_s",
            extension_number(result, VIDEO_TIME).unwrap_or_default(),
            &at(VIDEO_TIME),
        );
    }
    let length = extension_number(statement.context.extensions, VIDEO_LENGTH).unwrap_or_default();
    p.set("length_s", length, &format!("context.extensions[{VIDEO_LENGTH}]"));
    if let Some(segments) = result.and_then(|r| r.get(VIDEO_SEGMENTS)).filter(|s| s.is_string()) {
        p.set("segments", segments.clone(), &at(VIDEO_SEGMENTS));
    }
    name
}

/// A quiz attempt: the assessment (the object, or the parent assessment of an attempt), the score
/// (`raw` and `max`; `scaled` out of 1 without `raw`) and whether it passed.
fn quiz(p: &mut Properties, statement: &Statement<'_>, object: &Activity<'_>, passed: Option<bool>) -> &'static str {
    let quiz = if is(object.kind, &ASSESSMENT) {
        object
    } else {
        context_activity(statement, &ASSESSMENT).unwrap_or(object)
    };
    p.set("quiz_id", json!(quiz.id), &quiz.field);
    let result = &statement.result;
    match (result.raw, result.scaled) {
        (Some(raw), _) => {
            p.set("score", Value::Number(raw.clone()), "result.score.raw");
            p.set("max_score", json!(result.max), "result.score.max");
        }
        (None, Some(scaled)) => {
            p.set("score", float(scaled), "result.score.scaled");
            p.set("max_score", json!(1), "result.score.scaled");
        }
        (None, None) => {}
    }
    p.set("passed", json!(passed), "result.success");
    "quiz_submitted"
}

/// An answered question: the question, its assessment when a context activity names one, whether
/// it was right and its score.
fn question(p: &mut Properties, statement: &Statement<'_>, item: &Activity<'_>, correct: Option<bool>) -> &'static str {
    p.set("item_id", json!(item.id), &item.field);
    if let Some(quiz) = context_activity(statement, &ASSESSMENT) {
        p.set("quiz_id", json!(quiz.id), &quiz.field);
    }
    p.set("correct", json!(correct), "result.success");
    p.set("score", json!(statement.result.raw), "result.score.raw");
    "question_answered"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::xapi::statement::validate;

    const COURSE_IRI: &str = "https://lms.example.org/course/view.php?id=2";

    fn run(statement: Value) -> Value {
        let checked = validate(&statement).unwrap();
        translate(&checked, Uuid::nil(), statement.to_string()).event
    }

    fn activity(id: &str, kind: &str) -> Value {
        json!({"id": id, "objectType": "Activity", "definition": {"type": kind}})
    }

    fn statement(verb: &str, object: Value) -> Value {
        json!({
            "actor": {"account": {"homePage": "https://lms.example.org", "name": "7"}},
            "verb": {"id": verb},
            "object": object,
            "context": {"contextActivities": {"parent": [
                activity("https://lms.example.org/mod/quiz/view.php?id=3", "http://adlnet.gov/expapi/activities/assessment"),
                activity("https://lms.example.org/course/section.php?id=1", "http://id.tincanapi.com/activitytype/section"),
                activity(COURSE_IRI, "https://w3id.org/xapi/cmi5/activitytype/course"),
            ]}},
            "timestamp": "2026-11-02T10:00:00.000Z",
        })
    }

    #[test]
    fn the_course_is_the_object_or_the_first_course_in_the_context() {
        let viewed = run(statement(
            "http://id.tincanapi.com/verb/viewed",
            activity(COURSE_IRI, COURSE[2]),
        ));
        assert_eq!(viewed["event"], "course_viewed");
        assert_eq!(viewed["properties"]["course_id"], COURSE_IRI);
        let module = run(statement(
            "http://id.tincanapi.com/verb/viewed",
            activity(
                "https://lms.example.org/mod/book/view.php?id=1",
                "http://id.tincanapi.com/activitytype/book",
            ),
        ));
        assert_eq!(module["event"], "content_viewed");
        assert_eq!(module["properties"]["course_id"], COURSE_IRI);
        assert_eq!(
            module["properties"]["item_id"],
            "https://lms.example.org/mod/book/view.php?id=1"
        );
        assert_eq!(module["userId"], "7");
        assert_eq!(module["messageId"], Uuid::nil().to_string());
        assert_eq!(module["timestamp"], "2026-11-02T10:00:00Z");
    }

    #[test]
    fn enrol_verbs_enrol_only_in_a_course() {
        let course = activity(COURSE_IRI, COURSE[2]);
        for (verb, name) in [
            ("http://adlnet.gov/expapi/verbs/registered", "course_enrolled"),
            (
                "https://xapi.edlm/profiles/edlm-lms/concepts/verbs/enrolled",
                "course_enrolled",
            ),
            ("http://activitystrea.ms/leave", "course_unenrolled"),
            ("http://id.tincanapi.com/verb/unregistered", "course_unenrolled"),
        ] {
            assert_eq!(run(statement(verb, course.clone()))["event"], name, "{verb}");
        }
        // Moodle's `registered` for a new site account is no enrolment.
        let site = activity("https://lms.example.org", "http://id.tincanapi.com/activitytype/lms");
        assert_eq!(
            run(statement("http://adlnet.gov/expapi/verbs/registered", site))["event"],
            GENERIC
        );
    }

    #[test]
    fn completions_depend_on_what_was_completed() {
        let mut lesson = statement(
            COMPLETED[0],
            activity(
                "https://lms.example.org/mod/book/view.php?id=1",
                "http://id.tincanapi.com/activitytype/book",
            ),
        );
        lesson["result"] = json!({"completion": true, "duration": "PT2M"});
        let event = run(lesson);
        assert_eq!(event["event"], "lesson_completed");
        assert_eq!(
            event["properties"]["lesson_id"],
            "https://lms.example.org/mod/book/view.php?id=1"
        );
        assert_eq!(
            event["properties"]["module_id"],
            "https://lms.example.org/course/section.php?id=1"
        );
        assert_eq!(event["properties"]["time_spent_s"], 120.0);
        assert_eq!(event["properties"]["duration_s"], 120.0);
        let mut attempt = statement(
            COMPLETED[0],
            activity("https://lms.example.org/mod/quiz/attempt.php?attempt=1&cmid=3", ATTEMPT),
        );
        attempt["result"] = json!({"score": {"raw": 50, "min": 0, "max": 100, "scaled": 0.5}, "success": true});
        let event = run(attempt);
        assert_eq!(event["event"], "quiz_submitted");
        assert_eq!(
            event["properties"]["quiz_id"],
            "https://lms.example.org/mod/quiz/view.php?id=3"
        );
        assert_eq!(
            (&event["properties"]["score"], &event["properties"]["max_score"]),
            (&json!(50), &json!(100))
        );
        assert_eq!(event["properties"]["passed"], true);
        assert_eq!(
            run(statement(COMPLETED[0], activity(COURSE_IRI, COURSE[2])))["event"],
            "course_completed"
        );
    }

    #[test]
    fn grades_of_a_course_are_clamped_to_0_1() {
        let mut graded = statement(SCORED[1], activity(COURSE_IRI, COURSE[0]));
        graded["result"] = json!({"score": {"scaled": -0.5}});
        let event = run(graded);
        assert_eq!(event["event"], "course_graded");
        assert_eq!(event["properties"]["grade"], 0.0);
        assert!(event["properties"].get("passed").is_none());
        let event = run(statement(FAILED, activity(COURSE_IRI, COURSE[0])));
        assert_eq!(event["properties"]["passed"], false);
    }

    #[test]
    fn video_events_carry_positions_length_and_played_segments() {
        let video = activity("https://lms.example.org/video/9", VIDEO);
        let mut paused = statement(PAUSED, video.clone());
        paused["result"] = json!({"extensions": {VIDEO_TIME: "42.5", VIDEO_SEGMENTS: "0[.]20.1[,]30[.]42.5"}});
        paused["context"]["extensions"] = json!({VIDEO_LENGTH: 600});
        let event = run(paused);
        assert_eq!(event["event"], "video_paused");
        assert_eq!(event["properties"]["video_id"], "https://lms.example.org/video/9");
        assert_eq!(event["properties"]["position_s"], 42.5);
        assert_eq!(event["properties"]["length_s"], 600);
        assert_eq!(event["properties"]["segments"], "0[.]20.1[,]30[.]42.5");
        // Without a video type only the video verbs and `completed` differ.
        let event = run(statement(COMPLETED[0], video));
        assert_eq!(event["event"], "video_completed");
        assert!(event["properties"].get("position_s").is_none());
    }

    #[test]
    fn open_edx_problems_of_several_questions_are_answered_per_part() {
        let problem = json!({"objectType": "GroupActivity", "id": "https://lms.example.org/xblock/p1",
                             "definition": {"type": QUESTION[1], "interactionType": "other"}});
        let mut part = statement(
            EVALUATED,
            activity("https://lms.example.org/xblock/p1_2_1", QUESTION[1]),
        );
        part["context"] = json!({"contextActivities": {"parent": [problem.clone()],
                                 "grouping": [activity(COURSE_IRI, COURSE[0])]}});
        part["result"] = json!({"response": "blue", "success": true});
        let event = run(part);
        assert_eq!(event["event"], "question_answered");
        assert_eq!(event["properties"]["item_id"], "https://lms.example.org/xblock/p1_2_1");
        assert_eq!(event["properties"]["course_id"], COURSE_IRI, "from the grouping");
        assert_eq!(event["properties"]["correct"], true);
        let mut whole = statement(EVALUATED, problem);
        whole["result"] = json!({"score": {"raw": 3, "max": 3, "scaled": 1}, "success": true});
        assert_eq!(run(whole)["event"], "question_answered");
        // Attempted without a result (Open edX's browser-side problem_check) is no answer.
        assert_eq!(
            run(statement(
                ATTEMPTED,
                activity("https://lms.example.org/xblock/p1", QUESTION[1])
            ))["event"],
            GENERIC
        );
    }

    #[test]
    fn unknown_verbs_and_non_activities_are_kept_as_generic_events() {
        let event = run(statement(
            "https://w3id.org/xapi/acrossx/verbs/posted",
            activity(
                "https://x.org/post/1",
                "http://id.tincanapi.com/activitytype/discussion",
            ),
        ));
        assert_eq!(event["event"], GENERIC);
        assert_eq!(event["properties"]["course_id"], COURSE_IRI);
        assert_eq!(event["properties"]["object_id"], "https://x.org/post/1");
        assert!(event["properties"].get("item_id").is_none());
        let reference = json!({"objectType": "StatementRef", "id": "6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d"});
        let event = run(statement(ANSWERED, reference));
        assert_eq!(event["event"], GENERIC);
        assert_eq!(event["properties"]["object_id"], "6e3b3a0c-2f7a-4a8b-9a51-5c9f2f8b1e2d");
        let original: Value = serde_json::from_str(event["properties"]["xapi_statement"].as_str().unwrap()).unwrap();
        assert_eq!(original["verb"]["id"], ANSWERED);
    }
}
