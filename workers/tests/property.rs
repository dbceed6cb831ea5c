//! A property test of exactly-once counting: a seeded random workload of real client behaviour
//! (single events resent inside later messages, whole messages duplicated under their key, whole
//! batches resent under a new key, late and out-of-order events) is published while two worker
//! processes race on the stream and are SIGKILLed, restarted and started with failpoints at
//! random moments. Once the stream is drained, every rollup table, the activity bitmaps, the
//! ledger and MongoDB `events` are compared with an oracle computed by brute force from the
//! distinct generated events, and `workers reconcile` must find no difference.
//!
//! The oracle is written from the generator's own intent (what each event was meant to mean) and
//! the definitions of `workers/src/rollup/delta.rs`, never by calling the workers' fold.
//!
//! `PROPERTY_SEED` replays a run (the seed is printed at the start and in every failure);
//! `PROPERTY_EVENTS` sets the number of distinct events (default 20,000).

mod support;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone as _, Utc};
use mongodb::bson::{doc, Document};
use serde_json::{json, Map, Value};
use support::{drained, worker_env, Publisher};
use test_support::{Service, TestEnv};

const PROJECT: &str = "p1";
const LEARNERS: usize = 300;
const ANONYMOUS: usize = 80;
const LESSONS: usize = 12;

/// The courses: `c01`..`c09`, and `10`, which SDKs of typed languages send as a number.
fn courses() -> Vec<String> {
    (1..=9).map(|c| format!("c{c:02}")).chain(["10".to_owned()]).collect()
}

// ---------------------------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------------------------

/// One distinct generated event: what is sent, and what it is meant to contribute.
#[derive(Debug, Clone)]
struct Gen {
    id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    /// Segment call type: track, page or identify.
    kind: &'static str,
    name: String,
    ts: DateTime<Utc>,
    properties: Map<String, Value>,
    traits: Map<String, Value>,
    /// When the client sends it (late events are sent days after they happened).
    sent: DateTime<Utc>,
    // What the event means, as the generator intends it.
    course: Option<String>,
    /// (lesson, module) of a lesson event with a lesson id.
    lesson: Option<(String, Option<String>)>,
    /// Seconds of learning of a lesson_completed (0 for anything invalid).
    learning_s: i64,
    /// The percent of a video_progress, clamped to 0..=100.
    percent: Option<f64>,
    /// (quiz, score percent clamped, passed).
    quiz: Option<(String, f64, bool)>,
    page: Option<String>,
    /// (badge, points).
    badge: Option<(String, i64)>,
    /// (title, total lessons, instructor) of a course_published.
    catalog: Option<(String, i32, String)>,
}

impl Gen {
    fn user_key(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }

    fn day(&self) -> NaiveDate {
        self.ts.date_naive()
    }

    /// The event as ingest normalises it onto the stream (`common::event::Event` as JSON).
    fn json(&self, received_at: DateTime<Utc>) -> Value {
        let mut v = json!({
            "project": PROJECT,
            "message_id": self.id,
            "type": self.kind,
            "event": self.name,
            "session_id": format!("s-{}-{}", self.user_key(), self.day()),
            "ts": stamp(self.ts),
            "day": self.day().to_string(),
            "timestamp": stamp(self.ts),
            "sent_at": stamp(received_at - chrono::TimeDelta::milliseconds(250)),
            "received_at": stamp(received_at),
            "properties": self.properties,
            "context": {"library": {"name": "analytics.js", "version": "4.1.0"}, "locale": "en-GB"},
        });
        if let Some(user) = &self.user_id {
            v["user_id"] = json!(user);
        }
        if let Some(anonymous) = &self.anonymous_id {
            v["anonymous_id"] = json!(anonymous);
        }
        if !self.traits.is_empty() {
            v["traits"] = Value::Object(self.traits.clone());
        }
        v
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One publish: a JetStream message as ingest (or a replay) sends it.
struct Op {
    nats_id: String,
    /// `Analytics-Message-Key`: a copy of message `m` published under `m`'s own key.
    key: Option<String>,
    events: Vec<Value>,
}

impl Op {
    /// The ledger key the workers derive for it (worker.rs `message_key`).
    fn ledger_key(&self) -> String {
        self.key.clone().unwrap_or_else(|| format!("id:{}", self.nats_id))
    }
}

struct Workload {
    /// The distinct events, by message id order of generation.
    events: Vec<Gen>,
    ops: Vec<Op>,
    /// Message id → the ledger keys of every message that carried it.
    carriers: HashMap<String, BTreeSet<String>>,
    summary: String,
}

struct Rand(fastrand::Rng);

impl Rand {
    fn pct(&mut self, p: u32) -> bool {
        self.0.u32(0..100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(0..items.len())]
    }
}

fn march(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 0, 0, 0).unwrap()
}

/// A random moment of March 1–30, 2026, at millisecond precision.
fn moment(r: &mut Rand) -> DateTime<Utc> {
    march(1 + r.0.u32(0..30))
        + chrono::TimeDelta::seconds(i64::from(r.0.u32(0..86_400)))
        + chrono::TimeDelta::milliseconds(i64::from(r.0.u32(0..1_000)))
}

fn course_value(r: &mut Rand, course: &str) -> Value {
    if course == "10" && r.0.bool() {
        json!(10)
    } else {
        json!(course)
    }
}

const PAGES: &[&str] = &[
    "/",
    "/courses",
    "/catalog",
    "/pricing",
    "/about",
    "/login",
    "/signup",
    "/dashboard",
    "/profile",
    "/settings",
    "/help",
    "/blog",
    "/blog/learning-streaks",
    "/search",
    "/certificates",
];

const CUSTOM: &[&str] = &[
    "note_taken",
    "search_performed",
    "forum_post_created",
    "bookmark_added",
    "certificate_downloaded",
    "login",
    "app_opened",
];

fn generate(seed: u64, distinct: usize) -> Workload {
    let mut r = Rand(fastrand::Rng::with_seed(seed));
    let courses = courses();
    // Each learner follows one to four courses (and now and then touches another).
    let followed: Vec<Vec<String>> = (0..LEARNERS)
        .map(|_| {
            let mut mine: Vec<String> = Vec::new();
            for _ in 0..1 + r.0.usize(0..4) {
                let c = r.pick(&courses).clone();
                if !mine.contains(&c) {
                    mine.push(c);
                }
            }
            mine
        })
        .collect();
    let mut events: Vec<Gen> = Vec::with_capacity(distinct);
    let blank = |id: String, ts: DateTime<Utc>| Gen {
        id,
        user_id: None,
        anonymous_id: None,
        kind: "track",
        name: String::new(),
        ts,
        properties: Map::new(),
        traits: Map::new(),
        sent: ts,
        course: None,
        lesson: None,
        learning_s: 0,
        percent: None,
        quiz: None,
        page: None,
        badge: None,
        catalog: None,
    };

    // The catalog: one or two publications per course, on distinct days (the latest wins).
    for (n, course) in courses.iter().enumerate() {
        let versions = 1 + r.0.usize(0..2);
        let mut days: Vec<u32> = (1..=30).collect();
        r.0.shuffle(&mut days);
        for day in days.into_iter().take(versions) {
            let ts = march(day) + chrono::TimeDelta::seconds(i64::from(r.0.u32(0..86_400)));
            let instructor = format!("instr-{}", n % 4);
            let title = format!("Course {course} (rev {day})");
            let total = 8 + r.0.i32(0..8);
            let mut e = blank(format!("pub-{course}-{day}"), ts);
            e.user_id = Some(instructor.clone());
            e.name = "course_published".into();
            e.properties.insert("course_id".into(), course_value(&mut r, course));
            e.properties.insert("title".into(), json!(title));
            e.properties.insert("total_lessons".into(), json!(total));
            e.properties.insert("instructor_id".into(), json!(instructor));
            e.course = Some(course.clone());
            e.catalog = Some((title, total, instructor));
            events.push(e);
        }
    }

    while events.len() < distinct {
        let n = events.len();
        // Ids of several shapes, as different SDKs make them.
        let id = match n % 3 {
            0 => format!("evt-{n:06}"),
            1 => format!("{:08x}-{:04x}-7{:03x}-{n}", r.0.u32(..), r.0.u16(..), r.0.u16(0..4096)),
            _ => format!("ios:{}:{n}", seed % 1000),
        };
        let ts = moment(&mut r);
        let mut e = blank(id, ts);
        let learner = r.0.usize(0..LEARNERS);
        let roll = r.0.u32(0..100);
        if roll >= 94 {
            // Anonymous-only visitors: pages, course views, custom events.
            e.anonymous_id = Some(format!("anon-{:03}", r.0.usize(0..ANONYMOUS)));
        } else {
            e.user_id = Some(format!("u{learner:03}"));
            if r.pct(10) {
                e.anonymous_id = Some(format!("anon-of-u{learner:03}"));
            }
        }
        let course = if r.pct(90) {
            r.pick(&followed[learner]).clone()
        } else {
            r.pick(&courses).clone()
        };
        let lesson_no = r.0.usize(0..LESSONS);
        let lesson = format!("l{lesson_no:02}");
        let module = format!("m{}", lesson_no / 4 + 1);
        let anonymous_roll = if roll >= 94 { r.0.u32(0..3) } else { 99 };
        let with_course = |e: &mut Gen, r: &mut Rand| {
            e.properties.insert("course_id".into(), course_value(r, &course));
            e.course = Some(course.clone());
        };
        if roll < 18 || anonymous_roll == 0 {
            e.kind = "page";
            e.name = "page_view".into();
            if r.pct(97) {
                let page = if r.pct(25) {
                    format!("/courses/{course}")
                } else {
                    (*r.pick(PAGES)).to_owned()
                };
                e.properties.insert("page".into(), json!(page));
                e.properties.insert("path".into(), json!(page));
                e.page = Some(page);
            }
            e.properties.insert("title".into(), json!("Learn"));
        } else if roll < 30 || anonymous_roll == 1 {
            e.name = "course_viewed".into();
            with_course(&mut e, &mut r);
        } else if roll < 41 {
            e.name = "lesson_started".into();
            with_course(&mut e, &mut r);
            e.properties.insert("lesson_id".into(), json!(lesson));
            let module = r.pct(80).then(|| module.clone());
            if let Some(m) = &module {
                e.properties.insert("module_id".into(), json!(m));
            }
            e.lesson = Some((lesson.clone(), module));
        } else if roll < 53 {
            e.name = "lesson_completed".into();
            let (raw, seconds): (Value, i64) = match r.0.u32(0..100) {
                0..=3 => (json!(-(r.0.i64(1..300))), 0),
                4..=7 => {
                    let s = r.0.i64(30..1_800);
                    (json!(s.to_string()), s)
                }
                8..=11 => {
                    let s = r.0.i64(30..1_800);
                    (json!(s as f64 + 0.25), s)
                }
                12..=13 => (json!(5_000_000_000i64), 0),
                14..=16 => (Value::Null, 0),
                _ => {
                    let s = r.0.i64(30..1_800);
                    (json!(s), s)
                }
            };
            if !raw.is_null() {
                e.properties.insert("time_spent_s".into(), raw);
            }
            e.learning_s = seconds;
            if r.pct(98) {
                with_course(&mut e, &mut r);
                e.properties.insert("lesson_id".into(), json!(lesson));
                let module = r.pct(90).then(|| module.clone());
                if let Some(m) = &module {
                    e.properties.insert("module_id".into(), json!(m));
                }
                e.lesson = Some((lesson.clone(), module));
            }
        } else if roll < 62 {
            e.name = "video_progress".into();
            with_course(&mut e, &mut r);
            e.properties.insert("lesson_id".into(), json!(lesson));
            e.properties
                .insert("video_id".into(), json!(format!("v-{course}-{lesson}")));
            let module = r.pct(50).then(|| module.clone());
            if let Some(m) = &module {
                e.properties.insert("module_id".into(), json!(m));
            }
            e.lesson = Some((lesson.clone(), module));
            let (raw, percent) = match r.0.u32(0..100) {
                0..=2 => (json!(130), 100.0),
                3..=4 => (json!(-10), 0.0),
                5..=9 => {
                    let p = f64::from(r.0.u32(0..200)) / 2.0;
                    (json!(p.to_string()), p)
                }
                _ => {
                    let p = f64::from(r.0.u32(0..=100));
                    (json!(p), p)
                }
            };
            e.properties.insert("percent".into(), raw);
            e.percent = Some(percent);
        } else if roll < 70 {
            e.name = "quiz_submitted".into();
            with_course(&mut e, &mut r);
            let quiz = format!("{course}-q{}", 1 + r.0.u32(0..3));
            e.properties.insert("quiz_id".into(), json!(quiz));
            let max = *r.pick(&[10u32, 20, 100, 0]);
            let effective_max = if max == 0 { 100.0 } else { f64::from(max) };
            let score = if r.pct(3) {
                effective_max as u32 + 5
            } else {
                r.0.u32(0..=effective_max as u32)
            };
            if max > 0 {
                e.properties.insert("max_score".into(), json!(max));
            }
            if r.pct(5) {
                e.properties.insert("score".into(), json!(score.to_string()));
            } else {
                e.properties.insert("score".into(), json!(score));
            }
            let passed = f64::from(score) / effective_max >= 0.6;
            let sent_passed = r.pct(95);
            if sent_passed {
                e.properties.insert("passed".into(), json!(passed));
            }
            let pct = (f64::from(score) / effective_max * 100.0).clamp(0.0, 100.0);
            e.quiz = Some((quiz, pct, passed && sent_passed));
        } else if roll < 75 {
            e.name = "course_enrolled".into();
            with_course(&mut e, &mut r);
        } else if roll < 77 {
            e.name = "course_completed".into();
            with_course(&mut e, &mut r);
        } else if roll < 80 {
            e.name = "badge_earned".into();
            let badge = r.0.usize(0..8);
            let points = (badge as i64 + 1) * 10;
            e.properties.insert("badge_id".into(), json!(format!("b{badge}")));
            e.properties.insert("points".into(), json!(points));
            e.badge = Some((format!("b{badge}"), points));
        } else if roll < 92 || anonymous_roll == 2 {
            e.name = (*r.pick(CUSTOM)).to_owned();
            e.properties
                .insert("source".into(), json!(*r.pick(&["web", "ios", "android"])));
            if r.0.bool() {
                with_course(&mut e, &mut r);
                // The instructor metrics' events (§5): for the existing rollups they are course
                // interactions like any other; reconcile checks their own tables.
                if r.0.bool() {
                    let video = format!("v-{course}-{lesson}");
                    let position = f64::from(r.0.u32(0..600)) / 2.0;
                    let (name, properties) = match r.0.u32(0..7) {
                        0 => ("course_unenrolled", json!({})),
                        1 => (
                            "course_graded",
                            json!({"grade": f64::from(r.0.u32(0..=100)) / 100.0, "passed": r.0.bool()}),
                        ),
                        2 => ("course_graded", json!({"score": r.0.u32(0..=20), "max_score": 20})),
                        3 => (
                            "question_answered",
                            json!({"item_id": format!("{course}-item{}", r.0.u32(0..4)), "correct": r.0.bool()}),
                        ),
                        4 => (
                            "video_played",
                            json!({"video_id": video, "position_s": position, "length_s": 300}),
                        ),
                        5 => (
                            "video_seeked",
                            json!({"video_id": video, "from_s": position, "to_s": position / 2.0}),
                        ),
                        _ => (
                            "video_paused",
                            json!({"video_id": video, "position_s": position, "segments": "0[.]10[,]20[.]30", "duration_s": r.0.u32(0..90)}),
                        ),
                    };
                    e.name = name.into();
                    if let Value::Object(properties) = properties {
                        e.properties.extend(properties);
                    }
                }
            }
        } else {
            e.kind = "identify";
            e.name = "identify".into();
            e.traits.insert("plan".into(), json!(*r.pick(&["free", "pro"])));
            // Some sign in from a device others used too: links that merge or are refused
            // depending on which came first by event time, whatever order they arrive in.
            if e.user_id.is_some() && r.pct(30) {
                e.anonymous_id = Some(format!("anon-{:03}", r.0.usize(0..ANONYMOUS)));
            }
        }
        events.push(e);
    }

    // When each event is sent: most within minutes, some days late.
    let mut late = 0;
    for e in &mut events {
        let delay = match r.0.u32(0..100) {
            0..=4 => {
                late += 1;
                chrono::TimeDelta::days(i64::from(r.0.u32(2..10)))
            }
            5 => {
                late += 1;
                chrono::TimeDelta::days(i64::from(r.0.u32(10..25)))
            }
            _ => chrono::TimeDelta::seconds(i64::from(r.0.u32(0..600))),
        };
        e.sent = e.ts + delay;
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|i| (events[*i].sent, *i));

    // Messages of 1..=200 events in send order, some shuffled (out of time order).
    let mut messages: Vec<Vec<(usize, DateTime<Utc>)>> = Vec::new();
    let mut at = 0;
    let mut shuffled = 0;
    while at < order.len() {
        let size = (1 + r.0.usize(0..200)).min(order.len() - at);
        let mut message: Vec<(usize, DateTime<Utc>)> = order[at..at + size]
            .iter()
            .map(|i| {
                let received = events[*i].sent + chrono::TimeDelta::milliseconds(i64::from(r.0.u32(0..5_000)));
                (*i, received)
            })
            .collect();
        if r.pct(30) {
            r.0.shuffle(&mut message);
            shuffled += 1;
        }
        messages.push(message);
        at += size;
    }
    let base_messages = messages.len();

    // Single events resent by the client inside a later, different message.
    let mut resent = 0;
    let origin: Vec<usize> = {
        let mut origin = vec![0; events.len()];
        for (m, message) in messages.iter().enumerate() {
            for (i, _) in message {
                origin[*i] = m;
            }
        }
        origin
    };
    let mut tail: Vec<(usize, DateTime<Utc>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !r.pct(4) {
            continue;
        }
        resent += 1;
        let received = e.sent + chrono::TimeDelta::seconds(i64::from(r.0.u32(30..3_600)));
        let from = origin[i];
        if from + 1 >= base_messages {
            tail.push((i, received));
        } else {
            let to = r.0.usize(from + 1..=(from + 15).min(base_messages - 1));
            let position = r.0.usize(0..=messages[to].len());
            messages[to].insert(position, (i, received));
        }
    }
    if !tail.is_empty() {
        messages.push(tail);
    }
    // Now and then a message carries one event twice (ingest coalesced a request and its resend).
    let mut doubled = 0;
    for message in &mut messages {
        if r.pct(2) {
            let copy = message[r.0.usize(0..message.len())];
            let position = r.0.usize(0..=message.len());
            message.insert(position, copy);
            doubled += 1;
        }
    }

    // The publishes, with their copies placed a little later in the stream.
    let render = |message: &[(usize, DateTime<Utc>)]| -> Vec<Value> {
        message.iter().map(|(i, received)| events[*i].json(*received)).collect()
    };
    let mut placed: Vec<(f64, Op)> = Vec::new();
    let (mut same_key, mut same_id, mut batch_resends) = (0, 0, 0);
    for (m, message) in messages.iter().enumerate() {
        let body = render(message);
        let later = |r: &mut Rand| m as f64 + 1.0 + r.0.usize(0..20) as f64 + r.0.f64();
        if r.pct(4) {
            // A redelivery or replay of the message: another Nats-Msg-Id, the same ledger key.
            same_key += 1;
            placed.push((
                later(&mut r),
                Op {
                    nats_id: format!("m{m}-again"),
                    key: Some(format!("id:m{m}")),
                    events: body.clone(),
                },
            ));
        }
        if r.pct(3) {
            // ingest retrying its publish: the same Nats-Msg-Id (JetStream drops the copy).
            same_id += 1;
            placed.push((
                later(&mut r),
                Op {
                    nats_id: format!("m{m}"),
                    key: None,
                    events: body.clone(),
                },
            ));
        }
        if r.pct(3) {
            // A client that did not hear back resends the whole batch: a new message.
            batch_resends += 1;
            let again: Vec<(usize, DateTime<Utc>)> = message
                .iter()
                .map(|(i, received)| (*i, *received + chrono::TimeDelta::seconds(90)))
                .collect();
            placed.push((
                later(&mut r),
                Op {
                    nats_id: format!("m{m}-resend"),
                    key: None,
                    events: render(&again),
                },
            ));
        }
        placed.push((
            m as f64,
            Op {
                nats_id: format!("m{m}"),
                key: None,
                events: body,
            },
        ));
    }
    placed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ops: Vec<Op> = placed.into_iter().map(|(_, op)| op).collect();
    let mut carriers: HashMap<String, BTreeSet<String>> = HashMap::new();
    for op in &ops {
        for event in &op.events {
            let id = event["message_id"].as_str().unwrap().to_owned();
            carriers.entry(id).or_default().insert(op.ledger_key());
        }
    }
    let copies: usize = ops.iter().map(|op| op.events.len()).sum();
    let summary = format!(
        "{} distinct events ({} late, {} resent singly in a later message: {:.1}%), {} copies in {} publishes \
         ({} messages, {} shuffled, {} carrying an event twice; {} copies under the same key, {} under the same \
         Nats-Msg-Id, {} whole batches resent under a new key)",
        events.len(),
        late,
        resent,
        100.0 * resent as f64 / events.len() as f64,
        copies,
        ops.len(),
        messages.len(),
        shuffled,
        doubled,
        same_key,
        same_id,
        batch_resends,
    );
    Workload {
        events,
        ops,
        carriers,
        summary,
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: every table, by brute force over the distinct events.
// ---------------------------------------------------------------------------------------------

type CourseDay = (i64, i64, i64, i64, i64, i64);
type EnrollmentRow = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
);
type LessonRow = (Option<String>, Option<DateTime<Utc>>, i64, Option<f64>, DateTime<Utc>);
type QuizRow = (Option<String>, i64, String, bool);
type UserRow = (i64, i64, DateTime<Utc>, DateTime<Utc>);
type CatalogRow = (Option<String>, Option<i32>, Option<String>, DateTime<Utc>);

#[derive(Default)]
struct Tables {
    active: BTreeMap<(NaiveDate, String), ()>,
    event_counts: BTreeMap<(NaiveDate, String), i64>,
    page_views: BTreeMap<(NaiveDate, String), i64>,
    /// (course, day) → (views, interactions, enrollments, lesson completions, course completions,
    /// time spent).
    course_daily: BTreeMap<(String, NaiveDate), CourseDay>,
    module_daily: BTreeMap<(String, NaiveDate, String), i64>,
    /// (course, user).
    enrollments: BTreeMap<(String, String), EnrollmentRow>,
    /// (user, course, lesson).
    lessons: BTreeMap<(String, String, String), LessonRow>,
    /// (user, quiz) → (course, attempts, score percent sum rounded, passed).
    quizzes: BTreeMap<(String, String), QuizRow>,
    /// (user, badge) → (points, earned at).
    badges: BTreeMap<(String, String), (i64, DateTime<Utc>)>,
    users: BTreeMap<String, UserRow>,
    catalog: BTreeMap<String, CatalogRow>,
    /// (kind, course or "", day) → user keys.
    bitmaps: BTreeMap<(i16, String, NaiveDate), BTreeSet<String>>,
    first_days: BTreeMap<String, NaiveDate>,
    /// event id (messageId) → (name, ts, user, course).
    ledger: BTreeMap<String, (String, DateTime<Utc>, String, Option<String>)>,
}

fn rounded(x: f64) -> String {
    format!("{x:.6}")
}

/// What the distinct events must have produced, computed table by table from scratch.
fn oracle(events: &[Gen]) -> Tables {
    let mut t = Tables::default();
    let is_lesson_event = |e: &Gen| {
        matches!(
            e.name.as_str(),
            "lesson_started" | "lesson_completed" | "video_progress"
        )
    };
    for e in events {
        let user = e.user_key().to_owned();
        let day = e.day();
        t.ledger
            .insert(e.id.clone(), (e.name.clone(), e.ts, user.clone(), e.course.clone()));
        t.active.insert((day, user.clone()), ());
        *t.event_counts.entry((day, e.name.clone())).or_default() += 1;
        if e.name == "page_view" {
            if let Some(page) = &e.page {
                *t.page_views.entry((day, page.clone())).or_default() += 1;
            }
        }
        t.bitmaps
            .entry((0, String::new(), day))
            .or_default()
            .insert(user.clone());
        let first = t.first_days.entry(user.clone()).or_insert(day);
        *first = (*first).min(day);
        let learning = if e.name == "lesson_completed" { e.learning_s } else { 0 };
        let u = t.users.entry(user.clone()).or_insert((0, 0, e.ts, e.ts));
        u.0 += learning;
        u.1 += 1;
        u.2 = u.2.min(e.ts);
        u.3 = u.3.max(e.ts);
        if let Some((badge, points)) = &e.badge {
            let b = t.badges.entry((user.clone(), badge.clone())).or_insert((*points, e.ts));
            if e.ts < b.1 {
                *b = (*points, e.ts);
            }
        }
        let Some(course) = e.course.clone() else { continue };
        if let Some((title, total, instructor)) = &e.catalog {
            let row = (Some(title.clone()), Some(*total), Some(instructor.clone()), e.ts);
            let current = t.catalog.entry(course).or_insert(row.clone());
            if e.ts > current.3 {
                *current = row;
            }
            continue;
        }
        let c = t.course_daily.entry((course.clone(), day)).or_default();
        match e.name.as_str() {
            "course_viewed" => c.0 += 1,
            "course_enrolled" => c.2 += 1,
            "lesson_completed" => c.3 += 1,
            "course_completed" => c.4 += 1,
            _ => {}
        }
        if e.name != "course_viewed" {
            c.1 += 1;
        }
        c.5 += learning;
        t.bitmaps
            .entry((1, course.clone(), day))
            .or_default()
            .insert(user.clone());
        if e.name == "course_viewed" {
            t.bitmaps
                .entry((2, course.clone(), day))
                .or_default()
                .insert(user.clone());
        }
        let en = t
            .enrollments
            .entry((course.clone(), user.clone()))
            .or_insert((None, None, e.ts, e.ts));
        en.2 = en.2.min(e.ts);
        en.3 = en.3.max(e.ts);
        if e.name == "course_enrolled" && en.0.is_none_or(|t| e.ts < t) {
            en.0 = Some(e.ts);
        }
        if e.name == "course_completed" && en.1.is_none_or(|t| e.ts < t) {
            en.1 = Some(e.ts);
        }
        if is_lesson_event(e) {
            if let Some((lesson, module)) = &e.lesson {
                if e.name == "lesson_completed" {
                    if let Some(module) = module {
                        *t.module_daily.entry((course.clone(), day, module.clone())).or_default() += 1;
                    }
                }
                let l = t
                    .lessons
                    .entry((user.clone(), course.clone(), lesson.clone()))
                    .or_insert((None, None, 0, None, e.ts));
                if module.is_some() && (l.0.is_none() || module > &l.0) {
                    l.0 = module.clone();
                }
                l.4 = l.4.max(e.ts);
                if e.name == "lesson_completed" {
                    if l.1.is_none_or(|t| e.ts < t) {
                        l.1 = Some(e.ts);
                    }
                    l.2 += e.learning_s;
                }
                if let Some(p) = e.percent {
                    l.3 = Some(l.3.map_or(p, |q: f64| q.max(p)));
                }
            }
        }
    }
    // Quizzes: attempts and summed percentages over all submissions, in one pass per quiz.
    type Sum = (Option<String>, i64, f64, bool);
    let mut sums: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for e in events {
        if e.name != "quiz_submitted" {
            continue;
        }
        let (Some(course), Some((quiz, pct, passed))) = (&e.course, &e.quiz) else {
            continue;
        };
        let q = sums
            .entry((e.user_key().to_owned(), quiz.clone()))
            .or_insert((Some(course.clone()), 0, 0.0, false));
        q.1 += 1;
        q.2 += pct;
        q.3 |= passed;
    }
    t.quizzes = sums
        .into_iter()
        .map(|(k, (c, n, s, p))| (k, (c, n, rounded(s), p)))
        .collect();
    // Cohorts: each user under their first active day.
    for (user, day) in &t.first_days {
        t.bitmaps
            .entry((3, String::new(), *day))
            .or_default()
            .insert(user.clone());
    }
    t
}

// ---------------------------------------------------------------------------------------------
// What PostgreSQL holds.
// ---------------------------------------------------------------------------------------------

async fn found(pool: &sqlx::PgPool) -> Tables {
    let p = PROJECT;
    let mut t = Tables::default();
    let rows: Vec<(NaiveDate, String)> =
        sqlx::query_as("select day, user_key from daily_active_users where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    t.active = rows.into_iter().map(|k| (k, ())).collect();
    let rows: Vec<(NaiveDate, String, i64)> =
        sqlx::query_as("select day, event, events from daily_event_counts where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    t.event_counts = rows.into_iter().map(|(d, e, n)| ((d, e), n)).collect();
    let rows: Vec<(NaiveDate, String, i64)> =
        sqlx::query_as("select day, page, views from daily_page_views where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    t.page_views = rows.into_iter().map(|(d, e, n)| ((d, e), n)).collect();
    type CourseDayRow = (String, NaiveDate, i64, i64, i64, i64, i64, i64);
    let rows: Vec<CourseDayRow> = sqlx::query_as(
        "select course_id, day, views, interactions, enrollments, lesson_completions, course_completions, time_spent_s
           from course_daily where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.course_daily = rows
        .into_iter()
        .map(|(c, d, a, b, e, f, g, h)| ((c, d), (a, b, e, f, g, h)))
        .collect();
    let rows: Vec<(String, NaiveDate, String, i64)> = sqlx::query_as(
        "select course_id, day, module_id, lesson_completions from course_module_daily where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.module_daily = rows.into_iter().map(|(c, d, m, n)| ((c, d, m), n)).collect();
    type E = (
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<E> = sqlx::query_as(
        "select course_id, user_key, enrolled_at, completed_at, first_activity_at, last_accessed_at
           from enrollments where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.enrollments = rows
        .into_iter()
        .map(|(c, u, a, b, f, l)| ((c, u), (a, b, f, l)))
        .collect();
    type L = (
        String,
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        i64,
        Option<f64>,
        DateTime<Utc>,
    );
    let rows: Vec<L> = sqlx::query_as(
        "select user_key, course_id, lesson_id, module_id, completed_at, time_spent_s, video_percent, last_accessed_at
           from lesson_progress where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.lessons = rows
        .into_iter()
        .map(|(u, c, l, m, done, s, v, last)| ((u, c, l), (m, done, s, v, last)))
        .collect();
    let rows: Vec<(String, String, Option<String>, i64, f64, bool)> = sqlx::query_as(
        "select user_key, quiz_id, course_id, attempts, score_pct_sum, passed from user_quizzes where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.quizzes = rows
        .into_iter()
        .map(|(u, q, c, n, s, passed)| ((u, q), (c, n, rounded(s), passed)))
        .collect();
    let rows: Vec<(String, String, i64, DateTime<Utc>)> =
        sqlx::query_as("select user_key, badge_id, points, earned_at from user_badges where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    t.badges = rows.into_iter().map(|(u, b, n, at)| ((u, b), (n, at))).collect();
    type U = (String, i64, i64, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<U> = sqlx::query_as(
        "select user_key, learning_time_s, events, first_seen_at, last_activity_at from user_stats where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.users = rows.into_iter().map(|(u, a, b, c, d)| (u, (a, b, c, d))).collect();
    type C = (String, Option<String>, Option<i32>, Option<String>, DateTime<Utc>);
    let rows: Vec<C> = sqlx::query_as(
        "select course_id, title, total_lessons, instructor_id, updated_at from courses where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .unwrap();
    t.catalog = rows.into_iter().map(|(c, a, b, d, e)| (c, (a, b, d, e))).collect();

    let ords: Vec<(String, i32)> = sqlx::query_as("select user_key, ord from user_ordinals where project = $1")
        .bind(p)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut by_ord: HashMap<u32, String> = HashMap::new();
    for (user, ord) in ords {
        let previous = by_ord.insert(u32::try_from(ord).unwrap(), user.clone());
        assert!(
            previous.is_none(),
            "ordinal {ord} is given to two users, the second {user}"
        );
    }
    let user_of = |ord: u32| {
        by_ord
            .get(&ord)
            .cloned()
            .unwrap_or_else(|| format!("<unknown ordinal {ord}>"))
    };
    let rows: Vec<(i16, String, NaiveDate, Vec<u8>)> =
        sqlx::query_as("select kind, course_id, day, users from activity_bitmaps where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    for (kind, course, day, users) in rows {
        let users = common::bitmap::decode(&users).expect("a valid bitmap");
        // An emptied row (a user moved to an earlier cohort) is the same as no row.
        if !users.is_empty() {
            t.bitmaps
                .insert((kind, course, day), users.iter().map(user_of).collect());
        }
    }
    let rows: Vec<(i32, NaiveDate)> = sqlx::query_as("select ord, first_day from user_first_day where project = $1")
        .bind(p)
        .fetch_all(pool)
        .await
        .unwrap();
    t.first_days = rows
        .into_iter()
        .map(|(ord, day)| (user_of(u32::try_from(ord).unwrap()), day))
        .collect();
    type Claimed = (uuid::Uuid, String, DateTime<Utc>, i32, Option<String>);
    let rows: Vec<Claimed> =
        sqlx::query_as("select id, event, ts, user_ord, course_id from event_log where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .unwrap();
    // Keyed by ledger id here; translated to message ids by the caller.
    for (id, name, ts, ord, course) in rows {
        t.ledger
            .insert(id.to_string(), (name, ts, user_of(u32::try_from(ord).unwrap()), course));
    }
    t
}

/// Lists how `found` differs from `expected`, the first few differences of the table in full.
fn compare<K: Ord + Debug, V: PartialEq + Debug>(
    table: &str,
    expected: &BTreeMap<K, V>,
    found: &BTreeMap<K, V>,
    report: &mut Vec<String>,
) {
    let mut lines = Vec::new();
    let mut count = 0;
    for (key, want) in expected {
        match found.get(key) {
            Some(got) if got == want => {}
            got => {
                count += 1;
                if lines.len() < 12 {
                    match got {
                        Some(got) => lines.push(format!("  {key:?}: expected {want:?}, found {got:?}")),
                        None => lines.push(format!("  {key:?}: expected {want:?}, found no row")),
                    }
                }
            }
        }
    }
    for (key, got) in found {
        if !expected.contains_key(key) {
            count += 1;
            if lines.len() < 12 {
                lines.push(format!("  {key:?}: expected no row, found {got:?}"));
            }
        }
    }
    eprintln!(
        "  {table:<20} {:>6} rows expected, {:>6} found, {count} different",
        expected.len(),
        found.len()
    );
    if count > 0 {
        report.push(format!(
            "{table}: {count} rows differ ({} expected, {} found); the first:\n{}",
            expected.len(),
            found.len(),
            lines.join("\n")
        ));
    }
}

/// Like [`compare`], for sets of users: a differing row shows who is missing and who is extra.
fn compare_sets<K: Ord + Debug + Clone>(
    table: &str,
    expected: &BTreeMap<K, BTreeSet<String>>,
    found: &BTreeMap<K, BTreeSet<String>>,
    report: &mut Vec<String>,
) {
    let empty = BTreeSet::new();
    let want: BTreeMap<K, String> = expected
        .iter()
        .map(|(k, users)| (k.clone(), format!("{} users", users.len())))
        .collect();
    let got: BTreeMap<K, String> = found
        .iter()
        .map(|(k, users)| {
            let wanted = expected.get(k).unwrap_or(&empty);
            if users == wanted {
                return (k.clone(), format!("{} users", users.len()));
            }
            let missing: Vec<&String> = wanted.difference(users).take(10).collect();
            let extra: Vec<&String> = users.difference(wanted).take(10).collect();
            (
                k.clone(),
                format!("{} users (missing {missing:?}, extra {extra:?})", users.len()),
            )
        })
        .collect();
    compare(table, &want, &got, report);
}

// ---------------------------------------------------------------------------------------------
// The run: two racing workers, killed and restarted, one started with a failpoint.
// ---------------------------------------------------------------------------------------------

const FAILPOINTS: &[&str] = &["before-commit", "after-commit", "after-store", "between-acks"];

fn start_worker(env: &TestEnv, failpoint: Option<&str>) -> Service {
    let mut vars = worker_env(env);
    // Batches of a few messages (messages hold 1..=200 events), so that a failpoint between
    // two acknowledgements has two to be between.
    vars.push(("WORKERS_BATCH_EVENTS", "250".to_owned()));
    if let Some(failpoint) = failpoint {
        vars.push(("WORKERS_FAILPOINT", failpoint.to_owned()));
    }
    Service::start("workers", &vars)
}

/// Whether the process has exited (a zombie waiting to be reaped, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

#[derive(Default, Debug)]
struct Chaos {
    kills: usize,
    /// Failpoints that aborted their worker, and those that were never reached.
    failpoints_reached: Vec<&'static str>,
    failpoints_missed: Vec<&'static str>,
    log: Vec<String>,
}

/// Kills and restarts workers at seeded random moments, and starts some with a random failpoint
/// (then a normal one once it aborted), while messages are published; returns the two workers
/// left running. A failpoint that could not be reached (nothing left to do, or batches of one
/// message for `between-acks`) is tried again at the next action, while work remains.
async fn chaos(
    env: &TestEnv,
    seed: u64,
    mut workers: [Option<Service>; 2],
    started: Instant,
) -> ([Option<Service>; 2], Chaos) {
    let mut r = Rand(fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15));
    let mut c = Chaos::default();
    let actions = 5 + r.0.usize(0..4);
    let first_failpoint = r.0.usize(0..2);
    let second_failpoint = 2 + r.0.usize(0..actions - 2);
    test_support::eventually("the workers' consumer", Duration::from_secs(60), || env.outstanding()).await;
    let mut action = 0;
    loop {
        let wanted = action == first_failpoint
            || action == second_failpoint
            || (action > first_failpoint && c.failpoints_reached.is_empty());
        if action >= actions && !wanted {
            break;
        }
        if action >= actions + 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300 + r.0.u64(0..1_700))).await;
        let slot = r.0.usize(0..2);
        let failpoint = wanted.then(|| *r.pick(FAILPOINTS));
        let at = started.elapsed().as_secs_f64();
        if let Some(old) = workers[slot].take() {
            old.signal("KILL");
            c.kills += 1;
        }
        match failpoint {
            Some(failpoint) if env.outstanding().await.unwrap_or(0) > 0 => {
                let mut crashing = start_worker(env, Some(failpoint));
                let deadline = Instant::now() + Duration::from_secs(20);
                while !exited(crashing.pid()) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if exited(crashing.pid()) {
                    let status = crashing.wait(Duration::from_secs(5));
                    assert!(
                        !status.success(),
                        "a worker with failpoint {failpoint} exited with {status}"
                    );
                    c.failpoints_reached.push(failpoint);
                    c.log.push(format!(
                        "{at:.1}s: worker {slot} SIGKILLed; one started with failpoint {failpoint} aborted after {:.1}s",
                        started.elapsed().as_secs_f64() - at
                    ));
                } else {
                    crashing.signal("KILL");
                    c.failpoints_missed.push(failpoint);
                    c.log.push(format!(
                        "{at:.1}s: worker {slot} SIGKILLed; failpoint {failpoint} not reached in 20 s"
                    ));
                }
            }
            Some(failpoint) => {
                c.failpoints_missed.push(failpoint);
                c.log.push(format!(
                    "{at:.1}s: worker {slot} SIGKILLed; failpoint {failpoint} skipped (nothing outstanding)"
                ));
            }
            None => {
                c.log.push(format!("{at:.1}s: worker {slot} SIGKILLed and restarted"));
            }
        }
        if r.pct(50) {
            tokio::time::sleep(Duration::from_millis(r.0.u64(0..500))).await;
        }
        workers[slot] = Some(start_worker(env, None));
        action += 1;
    }
    (workers, c)
}

/// Waits until every learning path marked out of date has been rewritten (the flusher upserts
/// each (learner, course) document in FerretDB: a couple of thousand take a while in debug
/// builds, longer than `support::paths_flushed` waits).
async fn paths_flushed(env: &TestEnv, deadline: Duration) {
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let start = Instant::now();
    loop {
        let marked: i64 = sqlx::query_scalar("select count(*) from learning_path_dirty")
            .fetch_one(&pool)
            .await
            .unwrap();
        if marked == 0 {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{marked} learning paths still marked out of date after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn seed() -> u64 {
    std::env::var("PROPERTY_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            (nanos as u64) ^ u64::from(std::process::id())
        })
}

// The chaos task blocks briefly on processes while the publisher runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_counted_exactly_once_whatever_carries_it_and_whatever_fails() {
    let seed = seed();
    let distinct: usize = std::env::var("PROPERTY_EVENTS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(20_000);
    let replay = format!("seed {seed} (replay with PROPERTY_SEED={seed} PROPERTY_EVENTS={distinct})");
    eprintln!("property test: {replay}");
    let started = Instant::now();
    let workload = generate(seed, distinct);
    eprintln!("workload: {}", workload.summary);

    let env = TestEnv::new().await;
    let publisher = Publisher::new(&env).await;
    let workers = [Some(start_worker(&env, None)), Some(start_worker(&env, None))];

    let publishing = async {
        let mut r = Rand(fastrand::Rng::with_seed(seed ^ 0x5151));
        for op in &workload.ops {
            match &op.key {
                Some(key) => publisher.publish_with_key(&op.nats_id, key, &op.events).await,
                None => publisher.publish(&op.nats_id, &op.events).await,
            }
            // Spread over a few seconds, so that the faults land while messages arrive.
            if r.pct(30) {
                tokio::time::sleep(Duration::from_millis(r.0.u64(0..40))).await;
            }
        }
        eprintln!(
            "published {} messages in {:.1}s",
            workload.ops.len(),
            started.elapsed().as_secs_f64()
        );
    };
    let ((workers, chaos), ()) = tokio::join!(chaos(&env, seed, workers, started), publishing);
    for line in &chaos.log {
        eprintln!("  {line}");
    }
    drained(&env, Duration::from_secs(300)).await;
    eprintln!("drained after {:.1}s", started.elapsed().as_secs_f64());
    paths_flushed(&env, Duration::from_secs(180)).await;
    eprintln!("learning paths flushed after {:.1}s", started.elapsed().as_secs_f64());
    for worker in workers.into_iter().flatten() {
        worker.stop();
    }
    eprintln!(
        "workers stopped after {:.1}s: {} SIGKILLs, failpoints reached {:?}, missed {:?}",
        started.elapsed().as_secs_f64(),
        chaos.kills,
        chaos.failpoints_reached,
        chaos.failpoints_missed
    );

    // The oracle against every table.
    let expected = oracle(&workload.events);
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let mut got = found(&pool).await;
    let by_ledger_id: HashMap<String, &String> = expected
        .ledger
        .keys()
        .map(|id| (workers::ledger::event_key(PROJECT, id).to_string(), id))
        .collect();
    got.ledger = std::mem::take(&mut got.ledger)
        .into_iter()
        .map(|(id, row)| {
            (
                by_ledger_id
                    .get(&id)
                    .map_or(format!("<ledger id {id}>"), |m| (*m).clone()),
                row,
            )
        })
        .collect();
    let mut report = Vec::new();
    eprintln!("comparing with the oracle:");
    compare("daily_active_users", &expected.active, &got.active, &mut report);
    compare(
        "daily_event_counts",
        &expected.event_counts,
        &got.event_counts,
        &mut report,
    );
    compare("daily_page_views", &expected.page_views, &got.page_views, &mut report);
    compare("course_daily", &expected.course_daily, &got.course_daily, &mut report);
    compare(
        "course_module_daily",
        &expected.module_daily,
        &got.module_daily,
        &mut report,
    );
    compare("enrollments", &expected.enrollments, &got.enrollments, &mut report);
    compare("lesson_progress", &expected.lessons, &got.lessons, &mut report);
    compare("user_quizzes", &expected.quizzes, &got.quizzes, &mut report);
    compare("user_badges", &expected.badges, &got.badges, &mut report);
    compare("user_stats", &expected.users, &got.users, &mut report);
    compare("courses", &expected.catalog, &got.catalog, &mut report);
    compare_sets("activity_bitmaps", &expected.bitmaps, &got.bitmaps, &mut report);
    compare("user_first_day", &expected.first_days, &got.first_days, &mut report);
    compare("event_log", &expected.ledger, &got.ledger, &mut report);

    // Each event's ledger owner is one of the messages that carried it.
    let owners: Vec<(uuid::Uuid, i64)> = sqlx::query_as("select id, owner from event_log where project = $1")
        .bind(PROJECT)
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut strangers = Vec::new();
    for (id, owner) in owners {
        let Some(message_id) = by_ledger_id.get(&id.to_string()) else {
            continue;
        };
        let carriers = &workload.carriers[*message_id];
        if !carriers.iter().any(|key| workers::ledger::owner_of(key) == owner) {
            strangers.push(format!("  {message_id}: owner {owner} is none of {carriers:?}"));
        }
    }
    if !strangers.is_empty() {
        report.push(format!(
            "event_log: {} events owned by a message that never carried them:\n{}",
            strangers.len(),
            strangers.into_iter().take(12).collect::<Vec<_>>().join("\n")
        ));
    }

    // MongoDB holds each distinct event exactly once.
    let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
    let collection = mongo.database(&env.mongo_db).collection::<Document>("events");
    let stored = collection.count_documents(doc! {"project": PROJECT}).await.unwrap();
    let mut cursor = collection
        .find(doc! {"project": PROJECT})
        .projection(doc! {"_id": 1})
        .await
        .unwrap();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    use futures::StreamExt as _;
    while let Some(document) = cursor.next().await {
        let document = document.unwrap();
        *ids.entry(document.get_str("_id").unwrap().to_owned()).or_default() += 1;
    }
    let wanted: BTreeMap<String, usize> = workload
        .events
        .iter()
        .map(|e| (common::documents::event_id(PROJECT, &e.id), 1))
        .collect();
    eprintln!(
        "  {:<20} {:>6} documents expected, {stored} counted, {} read",
        "mongo events",
        wanted.len(),
        ids.len()
    );
    if stored != wanted.len() as u64 {
        report.push(format!("mongo events: {stored} documents, {} expected", wanted.len()));
    }
    compare("mongo events", &wanted, &ids, &mut report);
    // For each event counted and not stored: the messages that carried it, and which one owns it.
    let mut lost = Vec::new();
    for e in &workload.events {
        if ids.contains_key(&common::documents::event_id(PROJECT, &e.id)) {
            continue;
        }
        let owner: Option<i64> = sqlx::query_scalar("select owner from event_log where id = $1")
            .bind(workers::ledger::event_key(PROJECT, &e.id))
            .fetch_optional(&pool)
            .await
            .unwrap();
        let carriers: Vec<String> = workload.carriers[&e.id]
            .iter()
            .map(|key| {
                let owns = owner == Some(workers::ledger::owner_of(key));
                format!("{key}{}", if owns { " (owner in event_log)" } else { "" })
            })
            .collect();
        lost.push(format!(
            "  {} ({} on {}): carried by {}",
            e.id,
            e.name,
            e.day(),
            carriers.join(", ")
        ));
    }
    if !lost.is_empty() {
        eprintln!("events counted but not stored in MongoDB:\n{}", lost.join("\n"));
        report.push(format!("events missing from MongoDB:\n{}", lost.join("\n")));
    }

    // Nothing was dead-lettered.
    let client = async_nats::connect(&env.nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    if let Ok(mut dead) = js.get_stream(format!("{}_DLQ", env.nats.stream)).await {
        let dead = dead.info().await.unwrap().state.messages;
        if dead > 0 {
            report.push(format!("{dead} messages were dead-lettered"));
        }
    }

    // Identity stitching had work to do: persons, and links refused because another learner
    // signed in on the device first (reconcile below replays them all at once).
    let (linked, refused): (i64, i64) = sqlx::query_as(
        "select (select count(*) from persons), (select count(*) from identity_links where refused is not null)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    eprintln!("  identities: {linked} ids in persons of several, {refused} links refused");
    assert!(
        linked > 0 && refused > 0,
        "the workload links ids and has links to refuse"
    );

    // The instructor metrics' tables had work to do too (reconcile compares them below).
    let learning: Vec<i64> = sqlx::query_scalar(
        "select count(*) from enrollment_states where not enrolled
         union all select count(*) from grades union all select count(*) from attempts
         union all select count(*) from video_events union all select count(*) from item_reach
         union all select count(*) from learner_sessions union all select count(*) from time_on_task_daily",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    eprintln!("  instructor tables (unenrolled, grades, attempts, video events, reach, sessions, days): {learning:?}");
    assert!(learning.iter().all(|n| *n > 0), "every instructor table has rows");

    // And reconcile, which recomputes everything from MongoDB, agrees.
    eprintln!("mongo checked after {:.1}s", started.elapsed().as_secs_f64());
    let differences = support::reconcile(&env).await;
    eprintln!("  reconcile: {} differences", differences.len());
    if !differences.is_empty() {
        report.push(format!(
            "reconcile found {} differences; the first:\n{}",
            differences.len(),
            differences
                .iter()
                .take(12)
                .map(|d| format!("  {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    eprintln!("checked after {:.1}s", started.elapsed().as_secs_f64());
    assert!(report.is_empty(), "{replay}:\n{}", report.join("\n"));
    assert!(
        !chaos.failpoints_reached.is_empty(),
        "{replay}: no worker reached its failpoint ({:?} missed), so the run tested less than it claims",
        chaos.failpoints_missed
    );
}

/// What the property test found, kept as a deterministic case. Message B claimed events e and f
/// and committed its rollups, and its worker died before the MongoDB insert (SIGKILL, or the
/// `after-commit` failpoint). Then a client's resend of e inside message A, and B's redelivery,
/// are fetched into one batch, A first. When the batch kept only the first copy of e (A's), it
/// claimed `Theirs` (B owns e), so it was not stored, and B's own copy, which claims `Mine`, had
/// been dropped before the claim: e stayed counted in PostgreSQL and missing from MongoDB forever
/// (B was acknowledged), and reconcile, which takes MongoDB as the truth, reported the rollups as
/// over-counted. Now the claim carries the owners of every copy (`ledger::group_copies`), and the
/// copy of the owning message is stored, in either order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_batched_behind_a_resend_of_its_event_still_stores_the_event() {
    for redelivery_first in [true, false] {
        let env = TestEnv::new().await;
        let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
        common::schema::migrate(&pool).await.unwrap();
        let e = support::event("shared", "u1", 3, 0);
        let f = support::event("only-in-b", "u1", 3, 1);
        let g = support::event("only-in-a", "u2", 3, 2);
        // B's first delivery: claimed and committed, never stored.
        let b: Vec<common::event::Event> = [&e, &f]
            .iter()
            .map(|v| serde_json::from_value((*v).clone()).unwrap())
            .collect();
        let users = b.iter().map(|e| (e.project.as_str(), e.user_key())).collect();
        let ords = workers::ordinals::OrdinalCache::new(100)
            .resolve(&pool, users)
            .await
            .unwrap();
        let entries: Vec<workers::ledger::Entry<'_>> = b
            .iter()
            .map(|event| workers::ledger::Entry {
                event,
                owner: workers::ledger::owner_of("id:B"),
                others: &[],
                user_ord: ords[&(event.project.clone(), event.user_key().to_owned())],
            })
            .collect();
        let mut tx = pool.begin().await.unwrap();
        workers::ledger::claim(&mut tx, &entries).await.unwrap();
        let delta = workers::rollup::Delta::from_events(&b);
        workers::rollup::apply(&mut tx, &delta, &ords).await.unwrap();
        tx.commit().await.unwrap();
        // Both on the stream before a worker starts: its first batch holds both, in this order.
        let publisher = Publisher::new(&env).await;
        let redelivery = [e.clone(), f.clone()];
        let resend = [g.clone(), e.clone()];
        if redelivery_first {
            publisher.publish_with_key("B-redelivered", "id:B", &redelivery).await;
            publisher.publish("A", &resend).await;
        } else {
            publisher.publish("A", &resend).await;
            publisher.publish_with_key("B-redelivered", "id:B", &redelivery).await;
        }
        let worker = start_worker(&env, None);
        drained(&env, Duration::from_secs(60)).await;
        worker.stop();
        let mongo = mongodb::Client::with_uri_str(&env.mongo_uri).await.unwrap();
        let stored = mongo
            .database(&env.mongo_db)
            .collection::<Document>("events")
            .count_documents(doc! {"_id": "p1:shared"})
            .await
            .unwrap();
        let counted: i64 = sqlx::query_scalar("select coalesce(sum(events), 0)::bigint from daily_event_counts")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(counted, 3, "three distinct events counted");
        assert_eq!(
            stored,
            1,
            "the shared event is stored once when B's redelivery is {} the resend in the batch",
            if redelivery_first { "before" } else { "after" }
        );
    }
}
