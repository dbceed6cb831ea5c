//! The instructor metrics are exact (issue 13; docs/contract.md §5, §6 "Instructor metrics", §7):
//! a seeded, generated workload (six courses, 200 learners and a few anonymous visitors over the
//! 40 days ending now) goes in through the real ingest, workers and api, and every answer of the
//! instructor routes is compared with a brute-force computation over the distinct generated
//! events, written from the contract's definitions, not from the code. `EXACTNESS_SEED=<n>`
//! replays a workload.
//!
//! The answers are compared at three moments: once the events sent in time order are counted
//! (client resends among them), once the late ones are too (offline devices, regrades sent before
//! the grade they replace, unenrolments arriving after the events that followed them, a course's
//! older publication), and after an admin's `PUT /v1/courses/{id}` replaced a catalog entry. The
//! workload must flag a learner by each at-risk rule, rewatch a segment, watch a video fully,
//! split sessions and change an enrolment by a late unenrolment, and deliberately wrong readings
//! of the definitions must give other answers, so that the comparison cannot pass vacuously.
//!
//! Where the contract leaves a choice, this test takes the most literal reading. Each is named
//! again where it is used:
//! 1. `course_published` feeds "the course catalog only" (§5's table): it is no course activity
//!    (no learner, session, duration or last activity), although it carries a `course_id`.
//! 2. The learners of `active_7d`/`active_30d`, reach, sessions and time on task are every id with
//!    an event of the course, enrolled or not (anonymous visitors too); only the at-risk list is
//!    limited to the current enrollees.
//! 3. The grade and `passed` registers read `course_graded` events only (not `quiz_submitted`'s
//!    `passed`), each on its own: `passed` is the latest `course_graded` carrying a boolean
//!    `passed`. `/grades`' `pass_mark` defaults to 0.5, as the at-risk rule's does.
//! 4. A median is the middle value, or the mean of the two middle ones; current enrollees without
//!    a completed lesson count with 0 %.
//! 5. A video segment's `index` is 0-based (`from_s` = index × length ÷ 20), as the grade
//!    buckets' k = 0..b−1 (drop-off `position`s are from 1, as the contract says).
//! 6. Watched intervals: [a, b] contains a midpoint m when a ≤ m ≤ b; a zero-length interval (a
//!    pause where the play began) is "not before it", so its learner is a viewer; a `video_played`
//!    whose next event of the video carries `segments` has no interval (that event "ends no
//!    interval"), even when a plain pause follows it; `rewatched` counts intervals as they are,
//!    unmerged, while `full_views` measures their union within [0, length].
//! 7. Time on task: `series` has every day of the range, zeros included; `totals.learners` is
//!    distinct over the range; a day's `reported_s` is the durations of that day's events and its
//!    `session_s` the durations of the sessions that start that day; every event's `time_spent_s`
//!    counts (when it has no `duration_s`), not only `lesson_completed`'s.
//! 8. The contract gives no order for an at-risk learner's `reasons`: both sides are put in the
//!    rules table's order (inactive, behind, failing, grade) before comparing.
//! 9. `engagement.as_of`'s format is not given: it must start with today's date.
//! 10. A bucket's `from`/`to` are k ÷ b and (k + 1) ÷ b; a video segment's `from_s`/`to_s` are
//!     index × length ÷ 20 and (index + 1) × length ÷ 20; ids are compared bytewise.
//!
//! The workload keeps away from what floating point could decide either way: video lengths are
//! 40q + 10 s, so no segment midpoint (a multiple of 0.25 that is not of 0.5) is a position (whole
//! or a multiple of 0.2 s) and no union of watched intervals is exactly 95 % of a length; grades
//! are exact binary fractions or three-decimal values away from every bucket edge and pass mark;
//! `total_lessons` is 8 or 4, so progress percentages and medians are exact.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use chrono::{DateTime, Days, NaiveDate, SecondsFormat, TimeDelta, Utc};
use clap::Parser as _;
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

const WRITE_KEY: &str = "wk_instructor";
const READ_KEY: &str = "rk_instructor";
const PROJECT: &str = "teach";
const SECRET: &str = "instructor-test-secret-of-32-bytes!!";
const DEFAULT_SEED: u64 = 20_260_513;

/// Days of generated data: `day(0)` to `day(DATA_DAYS - 1)`, which is today (until a quarter of
/// an hour ago).
const DATA_DAYS: i64 = 40;
const LEARNERS: usize = 200;
const VISITORS: usize = 10;
/// Events no more than this apart are one session (§6 "sessions").
const SESSION_GAP_S: i64 = 30 * 60;
/// The video that alone gets the edge cases of watched intervals (plays without an end, a pause
/// where the play began, a seek from before the play, a `segments` event between a play and a
/// pause), so that a different reading of those shows up on this video only.
const EDGE_VIDEO: &str = "v12";
/// The at-risk rules, in the contract's order.
const RULES: [&str; 4] = ["inactive", "behind", "failing", "grade"];
/// Who publishes the courses (an id that is no learner: reading 1).
const STAFF: &str = "staff-1";

// ---------------------------------------------------------------------------------------------
// The services.

/// Ingest and two workers in-process on this test's stream and databases.
struct Pipeline {
    env: TestEnv,
    ingest: String,
    http: reqwest::Client,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn pipeline() -> Pipeline {
    let env = TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::MIGRATOR.run(&pool).await.unwrap();
    let shutdown = CancellationToken::new();
    for _ in 0..2 {
        let config = workers::Config::parse_from(env.worker_args(&["--batch-linger", "20ms"]));
        let worker = workers::Worker::build(config).await.expect("workers start");
        tokio::spawn(worker.run(shutdown.clone()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingest = format!("http://{}/v1/batch", listener.local_addr().unwrap());
    let config = ingest::Config::parse_from([
        "ingest",
        "--nats-url",
        &env.nats.url,
        "--nats-stream",
        &env.nats.stream,
        "--nats-subject-prefix",
        &env.nats.subject_prefix,
        "--database-url",
        &env.database_url,
        "--write-key",
        WRITE_KEY,
        "--project",
        PROJECT,
    ]);
    let app = ingest::App::build(config).await.expect("ingest starts");
    tokio::spawn(app.serve(listener, shutdown.clone()));
    Pipeline {
        env,
        ingest,
        http: reqwest::Client::new(),
        pool,
        shutdown,
    }
}

impl Pipeline {
    /// Posts one batch to ingest; returns (accepted, duplicates within the request).
    async fn send(&self, batch: Vec<Value>) -> (u64, u64) {
        let reply: Value = self
            .http
            .post(&self.ingest)
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": batch }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reply["success"], true, "{reply}");
        assert_eq!(
            reply["rejected"],
            json!([]),
            "ingest rejected generated events: {reply}"
        );
        (
            reply["accepted"].as_u64().unwrap(),
            reply["duplicates"].as_u64().unwrap(),
        )
    }

    /// Waits until the workers counted `distinct` events and have nothing left in the stream.
    async fn wait_counted(&self, distinct: usize) {
        let client = async_nats::connect(&self.env.nats.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = self.env.nats.stream.clone();
        eventually("the workers to count every event", Duration::from_secs(120), || {
            let (js, stream, pool) = (js.clone(), stream.clone(), self.pool.clone());
            async move {
                let counted: i64 = sqlx::query_scalar("select count(*) from event_log where project = $1")
                    .bind(PROJECT)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                assert!(
                    counted as usize <= distinct,
                    "the workers counted {counted} events of {distinct} distinct ones"
                );
                if counted as usize != distinct {
                    return None;
                }
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    js.get_stream(&stream).await.ok()?.get_consumer("workers").await.ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        })
        .await;
    }

    /// A new api in-process (an empty cache) over this pipeline's database.
    async fn api(&self) -> Api {
        let config = api::Config::parse_from([
            "api",
            "--database-url",
            &self.env.database_url,
            "--nats-url",
            &self.env.nats.url,
            "--nats-stream",
            &self.env.nats.stream,
            "--nats-subject-prefix",
            &self.env.nats.subject_prefix,
            "--read-key",
            READ_KEY,
            "--project",
            PROJECT,
            "--jwt-secret",
            SECRET,
            // Long enough that only change notifications can explain fresh answers.
            "--cache-ttl",
            "1h",
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = api::App::build(config).await.unwrap();
        let shutdown = self.shutdown.child_token();
        tokio::spawn(app.serve(listener, shutdown.clone()));
        Api {
            base,
            // No request may hang: a hung one fails the test instead.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown,
        }
    }
}

/// An api in-process on its own port.
struct Api {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Api {
    async fn get(&self, path: &str, credential: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, credential: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(credential)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A JWT of this test's project (docs/contract.md §7 "Authentication and roles").
fn token(role: api::Role, sub: &str, courses: &[&str]) -> String {
    let claims = api::Claims {
        sub: sub.into(),
        role,
        project: PROJECT.into(),
        courses: courses.iter().map(|c| (*c).to_owned()).collect(),
        exp: (Utc::now().timestamp() + 3_600) as u64,
        nbf: None,
        iat: None,
    };
    api::sign(SECRET, &claims).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The events.

/// One distinct generated event, as the client sent it.
#[derive(Debug, Clone)]
struct Ev {
    message_id: String,
    /// Whom the instructor metrics count: the userId, or a visitor's anonymousId (§6).
    id: String,
    /// `track`, or `page` for page views.
    kind: &'static str,
    name: String,
    ts: DateTime<Utc>,
    properties: Map<String, Value>,
}

/// An id as the contract reads it (§5): a non-empty string as it is, a number printed.
fn id_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number as the contract reads it (§5): a JSON number or a numeric string.
fn number_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

impl Ev {
    fn day(&self) -> NaiveDate {
        self.ts.date_naive()
    }

    fn id_of(&self, key: &str) -> Option<String> {
        id_value(self.properties.get(key)?)
    }

    fn number(&self, key: &str) -> Option<f64> {
        number_value(self.properties.get(key)?)
    }

    /// The course this event is activity of. Reading 1: `course_published` feeds the catalog
    /// only (§5), so it is nobody's activity.
    fn course(&self) -> Option<String> {
        (self.name != "course_published")
            .then(|| self.id_of("course_id"))
            .flatten()
    }

    /// The reported duration (§6 "time on task"): `duration_s`, else `time_spent_s`, rounded
    /// to whole seconds; negative, non-numeric or ≥ 10⁹ count as 0 (§6 "Course daily analytics").
    fn reported_s(&self) -> i64 {
        let Some(v) = self
            .properties
            .get("duration_s")
            .or_else(|| self.properties.get("time_spent_s"))
        else {
            return 0;
        };
        match number_value(v) {
            Some(s) if (0.0..1e9).contains(&s) => s.round() as i64,
            _ => 0,
        }
    }

    /// The items this event reaches (§6 "reach of an item").
    fn items(&self) -> impl Iterator<Item = String> + '_ {
        ["item_id", "lesson_id", "quiz_id", "video_id"]
            .into_iter()
            .filter_map(|k| self.id_of(k))
    }

    fn json(&self) -> Value {
        let mut event = json!({
            "type": self.kind,
            "messageId": self.message_id,
            "timestamp": self.ts.to_rfc3339_opts(SecondsFormat::Secs, true),
            "properties": self.properties,
        });
        if self.kind == "track" {
            event["event"] = self.name.clone().into();
        }
        if self.id.starts_with("anon-") {
            event["anonymousId"] = self.id.clone().into();
        } else {
            event["userId"] = self.id.clone().into();
        }
        event
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

#[derive(Debug, Clone, Copy)]
enum Item {
    /// A lesson id (c2's "101" is sent as a number half of the time).
    Lesson(&'static str),
    /// A video id and its length: 40q + 10 seconds (see the module's last paragraph).
    Video(&'static str, i64),
    /// A quiz id and its questions' ids.
    Quiz(&'static str, &'static [&'static str]),
}

struct Course {
    id: &'static str,
    /// The order learners take the items in (the catalog's, where there is one).
    walk: Vec<Item>,
    /// How often a learner picks it.
    weight: f64,
}

fn courses() -> Vec<Course> {
    use Item::{Lesson as L, Quiz as Q, Video as V};
    vec![
        Course {
            id: "c1",
            weight: 0.34,
            walk: vec![
                L("l1"),
                V("v11", 610),
                L("l2"),
                Q("q1", &["q1-a", "q1-b", "q1-c"]),
                L("l3"),
                V("v12", 290),
                L("l4"),
                Q("q2", &["q2-a", "q2-b"]),
                L("l5"),
                L("l6"),
                V("v13", 450),
                Q("q3", &["q3-a", "q3-b", "q3-c", "q3-d"]),
                L("l7"),
                L("l8"),
            ],
        },
        Course {
            id: "c2",
            weight: 0.2,
            walk: vec![
                L("101"),
                L("l2"),
                V("v21", 370),
                L("l3"),
                Q("q1", &["q1-a", "q1-b", "q1-c"]),
                L("l4"),
                L("l5"),
                V("v22", 530),
                Q("q2", &["q2-a", "q2-b"]),
                L("l6"),
            ],
        },
        Course {
            id: "c3",
            weight: 0.14,
            walk: vec![
                L("l1"),
                L("l2"),
                V("v31", 250),
                L("l3"),
                Q("q1", &["q1-a", "q1-b", "q1-c"]),
                L("l4"),
            ],
        },
        Course {
            id: "c4",
            weight: 0.11,
            walk: vec![L("l1"), V("v41", 330), L("l2"), Q("q1", &["q1-a", "q1-b"]), L("l3")],
        },
        Course {
            id: "c5",
            weight: 0.11,
            walk: vec![
                L("l1"),
                L("l2"),
                V("v51", 410),
                Q("q1", &["q1-a", "q1-b"]),
                L("l3"),
                L("l4"),
                L("l5"),
            ],
        },
        Course {
            id: "7",
            weight: 0.1,
            walk: vec![L("l1"), L("l2"), Q("q1", &["q1-a", "q1-b"]), V("v71", 170)],
        },
    ]
}

const COURSE_IDS: [&str; 6] = ["c1", "c2", "c3", "c4", "c5", "7"];
/// The courses the instructor of the auth checks teaches.
const TAUGHT: [&str; 2] = ["c1", "c2"];
/// c5's catalog entry as the admin's `PUT` replaces it: other items in another order (l4 is left
/// out, l6 nobody takes), and a total that makes the `behind` rule apply.
fn c5_override() -> Value {
    json!({"title": "Course five, revised", "total_lessons": 4, "instructor_id": "staff-2",
           "items": ["l1", "v51", "l2", "l3", "q1", "l5", "l6"]})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Steady,
    /// Active in the first days only, then never again: the `inactive` rule.
    Lapsed,
    /// Fails quizzes again and again: the `failing` rule.
    Struggler,
    /// Leaves courses early: drop-off and the `behind` rule.
    Dropper,
}

struct Generator {
    rng: fastrand::Rng,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    events: Vec<Ev>,
    /// Per event: sent after all the others (an offline device, a backfill).
    late: Vec<bool>,
}

/// A position in tenths of a second, so that sums print as they are meant.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `a[.]b`, the xAPI `played-segments` form of one interval.
fn segment(a: f64, b: f64) -> String {
    format!("{a}[.]{b}")
}

impl Generator {
    fn new(seed: u64, now: DateTime<Utc>) -> Self {
        let today = now.date_naive();
        let start = (today - Days::new(DATA_DAYS as u64 - 1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            start,
            end: now - TimeDelta::minutes(15),
            events: Vec::new(),
            late: Vec::new(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn seconds(&mut self, range: std::ops::Range<i64>) -> TimeDelta {
        TimeDelta::seconds(self.rng.i64(range))
    }

    fn day_start(&self, day: i64) -> DateTime<Utc> {
        self.start + TimeDelta::days(day)
    }

    /// Records an event at `ts`; None when that is outside the data's time.
    fn push(&mut self, who: &str, name: &str, ts: DateTime<Utc>, properties: Value) -> Option<DateTime<Utc>> {
        if ts < self.start || ts >= self.end {
            return None;
        }
        let Value::Object(properties) = properties else {
            unreachable!("properties are an object")
        };
        // A random first letter, upper or lower case: ties of event time are broken by these
        // bytewise ('Z' < 'a'), in no relation to the order they were generated in.
        let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let message_id = format!(
            "{}{:06x}-{}",
            letters[self.rng.usize(..letters.len())] as char,
            self.rng.u32(..1 << 24),
            self.events.len()
        );
        self.events.push(Ev {
            message_id,
            id: who.to_owned(),
            kind: if name == "page_view" { "page" } else { "track" },
            name: name.to_owned(),
            ts,
            properties,
        });
        let late = self.chance(0.06);
        self.late.push(late);
        Some(ts)
    }

    /// Marks the event just pushed as sent late (or not).
    fn set_late(&mut self, late: bool) {
        *self.late.last_mut().unwrap() = late;
    }

    /// The course id as a client sends it: course "7" (and c2's lesson "101") sometimes as a number.
    fn id(&mut self, id: &str) -> Value {
        match id.parse::<i64>() {
            Ok(n) if self.rng.bool() => n.into(),
            _ => id.into(),
        }
    }

    /// A number as a client sends it: mostly a JSON number, sometimes a numeric string.
    fn number(&mut self, x: f64) -> Value {
        let v: Value = if x.fract() == 0.0 { json!(x as i64) } else { json!(x) };
        if self.chance(0.05) {
            Value::String(v.to_string())
        } else {
            v
        }
    }

    /// An event of course `c`: `course_id` added to `properties`.
    fn course_event(
        &mut self,
        who: &str,
        c: &str,
        name: &str,
        ts: DateTime<Utc>,
        mut properties: Value,
    ) -> Option<DateTime<Utc>> {
        properties["course_id"] = self.id(c);
        // Never a (perhaps bad) `duration_s` beside a `time_spent_s` (reading 7).
        if properties.get("time_spent_s").is_none() && self.chance(0.04) {
            properties["duration_s"] = self.duration();
        }
        self.push(who, name, ts, properties)
    }

    /// A reported duration: seconds, some with a fraction (never .5), some numeric strings, a few
    /// bad values that count as 0 (negative, not a number, 10⁹).
    fn duration(&mut self) -> Value {
        let r = self.rng.f64();
        if r < 0.03 {
            json!(-12)
        } else if r < 0.05 {
            json!("about a minute")
        } else if r < 0.06 {
            json!(1_000_000_000)
        } else if r < 0.16 {
            json!(f64::from(self.rng.u32(300..18_000)) / 10.0 + 0.01)
        } else {
            let s = f64::from(self.rng.u32(5..1_500));
            self.number(s)
        }
    }

    /// The time to the next step: mostly minutes, some exactly 30 minutes (still one session)
    /// and a second more (a new session), some hours, days, or weeks.
    fn gap(&mut self) -> TimeDelta {
        let r = self.rng.f64();
        let s = if r < 0.6 {
            self.rng.i64(15..900)
        } else if r < 0.67 {
            SESSION_GAP_S
        } else if r < 0.71 {
            SESSION_GAP_S + 1
        } else if r < 0.85 {
            self.rng.i64(SESSION_GAP_S..8 * 3_600)
        } else if r < 0.97 {
            self.rng.i64(86_400..4 * 86_400)
        } else {
            self.rng.i64(7 * 86_400..18 * 86_400)
        };
        TimeDelta::seconds(s)
    }

    fn generate(mut self) -> (Vec<Ev>, Vec<bool>) {
        self.catalog();
        let courses = courses();
        for i in 0..LEARNERS {
            let user = format!("u{i:03}");
            let profile = match i % 8 {
                0 | 1 => Profile::Lapsed,
                2 => Profile::Struggler,
                3 => Profile::Dropper,
                _ => Profile::Steady,
            };
            let first = match profile {
                Profile::Lapsed => self.rng.i64(0..10),
                _ => ((DATA_DAYS - 1) as f64 * self.rng.f64().powf(1.3)) as i64,
            };
            let mut taken: Vec<usize> = Vec::new();
            let n = 1 + usize::from(self.chance(0.8)) + usize::from(self.chance(0.5)) + usize::from(self.chance(0.25));
            while taken.len() < n {
                let mut r = self.rng.f64();
                let pick = courses
                    .iter()
                    .position(|c| {
                        r -= c.weight;
                        r < 0.0
                    })
                    .unwrap_or(0);
                if taken.contains(&pick) {
                    continue;
                }
                taken.push(pick);
                let day = (first + self.rng.i64(0..4)).min(DATA_DAYS - 1);
                let t = self.day_start(day) + self.seconds(6 * 3_600..21 * 3_600);
                self.journey(&user, &courses[pick], t, profile);
            }
        }
        for v in 0..VISITORS {
            let who = format!("anon-v{v:02}");
            for _ in 0..self.rng.usize(1..=2) {
                let c = if self.rng.bool() { "c1" } else { "c3" };
                let day = self.rng.i64(0..DATA_DAYS);
                let mut t = self.day_start(day) + self.seconds(0..80_000);
                let Some(_) = self.course_event(&who, c, "course_viewed", t, json!({})) else {
                    continue;
                };
                t += self.seconds(20..600);
                let duration = self.duration();
                self.course_event(
                    &who,
                    c,
                    "content_viewed",
                    t,
                    json!({"item_id": "l1", "duration_s": duration}),
                );
                if self.chance(0.5) {
                    t += self.gap();
                    self.course_event(&who, c, "content_viewed", t, json!({"item_id": "l2"}));
                }
            }
        }
        (self.events, self.late)
    }

    /// The catalog's publications (§5): c1 with its items and total; c2 twice, the older one
    /// (with the total and other items) sent late, so that its items never win and its total
    /// arrives last; c3 with an item nobody takes; c4 without items; c5 with items that an admin
    /// replaces later; "7" never published.
    fn catalog(&mut self) {
        let t = |g: &Self, day: i64, h: i64| g.day_start(day) + TimeDelta::hours(h);
        let at = t(self, 0, 8);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c1", "title": "Course one", "total_lessons": 8, "instructor_id": STAFF,
                   "items": ["l1", "v11", "l2", "q1", "l3", "v12", "l4", "q2", "l5", "l6", "v13", "q3", "l7", "l8"]}),
        );
        let at = t(self, 1, 9);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c2", "title": "Course two", "total_lessons": 4, "instructor_id": STAFF,
                   "items": [101, "l2", "l3", "v21", "q1", "l4", "l5", "q2", "l6"]}),
        );
        self.set_late(true);
        let at = t(self, 3, 10);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c2", "title": "Course two, second edition",
                   "items": [101, "l2", "v21", "l3", "q1", "l4", "l5", "v22", "q2", "l6"]}),
        );
        self.set_late(false);
        let at = t(self, 0, 11);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c3", "title": "Course three",
                   "items": ["l1", "l2", "v31", "l3", "l-extra", "q1", "l4"]}),
        );
        let at = t(self, 0, 12);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c4", "title": "Course four", "instructor_id": STAFF}),
        );
        let at = t(self, 2, 13);
        self.push(
            STAFF,
            "course_published",
            at,
            json!({"course_id": "c5", "title": "Course five", "items": ["l1", "l2", "v51", "q1", "l3", "l4", "l5"]}),
        );
        self.set_late(false);
    }

    /// A learner's way through one course: a view, an enrolment (not always), the items in order
    /// with drop-offs, unenrolments (some undone at once or later, some sent late), grades.
    fn journey(&mut self, user: &str, course: &Course, mut t: DateTime<Utc>, profile: Profile) -> Option<()> {
        let c = course.id;
        t = self.course_event(user, c, "course_viewed", t, json!({}))?;
        let mut enrolled = self.chance(0.9);
        if enrolled {
            t += self.seconds(10..600);
            t = self.course_event(user, c, "course_enrolled", t, json!({}))?;
        }
        let drop = match profile {
            Profile::Dropper => 0.15,
            Profile::Lapsed => 0.1,
            _ => 0.02,
        };
        let stop_after = match profile {
            Profile::Lapsed => self.rng.usize(2..7),
            _ => usize::MAX,
        };
        let mut finished = true;
        let mut reached = 0;
        for (step, item) in course.walk.iter().enumerate() {
            reached = step + 1;
            if step >= stop_after || (step > 0 && self.chance(drop)) {
                finished = false;
                break;
            }
            let gap = self.gap();
            t += gap;
            if gap > TimeDelta::seconds(SESSION_GAP_S) && self.chance(0.5) {
                // Coming back: a login and a page first, outside the course (the learner's own
                // sessions start earlier than the course's).
                let before = t - self.seconds(60..900);
                self.push(user, "login", before, json!({}));
                if self.chance(0.5) {
                    let duration = self.duration();
                    self.push(
                        user,
                        "page_view",
                        before + TimeDelta::seconds(20),
                        json!({"path": "/dashboard", "duration_s": duration}),
                    );
                }
            }
            t = match *item {
                Item::Lesson(l) => self.lesson(user, c, l, t)?,
                Item::Video(v, length) => self.watch(user, c, v, length, t)?,
                Item::Quiz(q, questions) => {
                    let (t, passed) = self.quiz(user, c, q, questions, t, profile)?;
                    if !passed && self.chance(0.6) {
                        finished = false;
                        break;
                    }
                    t
                }
            };
            if self.chance(0.04) {
                // A page after the course's event, sometimes more than 30 minutes later.
                let after = t + self.seconds(60..2_400);
                self.push(user, "page_view", after, json!({"path": "/courses"}));
            }
            if enrolled && self.chance(0.035) {
                t += self.gap();
                t = self.course_event(user, c, "course_unenrolled", t, json!({}))?;
                // Some unenrolments arrive after everything else (state changed only then).
                let late = self.chance(0.45);
                self.set_late(late);
                if self.chance(0.5) {
                    // Re-enrolled: sometimes in the same second (messageId decides), sometimes later.
                    if !self.chance(0.2) {
                        t += self.gap();
                    }
                    t = self.course_event(user, c, "course_enrolled", t, json!({}))?;
                } else {
                    enrolled = false;
                    if self.chance(0.7) {
                        finished = false;
                        break;
                    }
                }
            }
        }
        if profile != Profile::Lapsed {
            // Coming back to what was taken already: a lesson again, a video rewatched, a
            // question answered again after the right answer.
            for _ in 0..self.rng.usize(0..4) {
                t += TimeDelta::seconds(self.rng.i64(3_600..6 * 86_400));
                for _ in 0..self.rng.usize(1..=3) {
                    t = match course.walk[self.rng.usize(..reached)] {
                        Item::Lesson(l) => {
                            let l = self.id(l);
                            self.course_event(user, c, "content_viewed", t, json!({"item_id": l}))?
                        }
                        Item::Video(v, length) => self.watch(user, c, v, length, t)?,
                        Item::Quiz(q, questions) => {
                            let question = questions[self.rng.usize(..questions.len())];
                            let correct = self.chance(0.7);
                            let answer = json!({"item_id": question, "quiz_id": q, "correct": correct});
                            self.course_event(user, c, "question_answered", t, answer)?
                        }
                    };
                    t += self.seconds(30..1_200);
                }
            }
        }
        if finished && self.chance(0.3) {
            t += self.seconds(60..3_600);
            t = self.course_event(user, c, "course_completed", t, json!({}))?;
        }
        if (finished && self.chance(0.65)) || (!finished && self.chance(0.2)) {
            t += self.gap();
            let grade = self.grade(finished);
            t = self.course_event(user, c, "course_graded", t, grade)?;
            let first = self.events.len() - 1;
            if self.chance(0.3) {
                // A regrade, later by event time; the first grade is often sent after it.
                if !self.chance(0.1) {
                    t += self.seconds(3_600..5 * 86_400);
                }
                let good = self.rng.bool();
                let regrade = self.grade(good);
                if self.course_event(user, c, "course_graded", t, regrade).is_some() && self.chance(0.7) {
                    self.late[first] = true;
                }
            }
        }
        Some(())
    }

    /// A `course_graded`'s properties: a grade (three decimals away from every bucket edge, or an
    /// exact binary edge), a score out of 8 (9 of 8 is clamped to 1), a `passed` alone, both.
    fn grade(&mut self, good: bool) -> Value {
        let g = if good {
            f64::from(self.rng.u32(35..100) * 10 + 3) / 1000.0
        } else {
            f64::from(self.rng.u32(0..60) * 10 + 3) / 1000.0
        };
        let r = self.rng.f64();
        if r < 0.4 {
            json!({"grade": g})
        } else if r < 0.55 {
            // An instructor may pass a learner whatever the grade.
            let passed = if self.chance(0.2) { g < 0.5 } else { g >= 0.5 };
            json!({"grade": g, "passed": passed})
        } else if r < 0.7 {
            json!({"score": self.rng.u32(0..=9), "max_score": 8})
        } else if r < 0.8 {
            json!({"passed": good})
        } else if r < 0.9 {
            let edge = [0.0, 0.25, 0.5, 0.75, 1.0][self.rng.usize(..5)];
            json!({"grade": edge})
        } else {
            // `grade` wins over `score ÷ max_score`.
            json!({"grade": g, "score": self.rng.u32(0..=8), "max_score": 8})
        }
    }

    fn lesson(&mut self, user: &str, c: &str, lesson: &str, mut t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let l = self.id(lesson);
        if self.chance(0.5) {
            t = self.course_event(user, c, "content_viewed", t, json!({"item_id": l}))?;
            t += self.seconds(5..120);
        }
        let module = "m1";
        t = self.course_event(
            user,
            c,
            "lesson_started",
            t,
            json!({"lesson_id": l, "module_id": module}),
        )?;
        if self.chance(0.88) {
            let spent = self.duration();
            t += self.seconds(60..1_700);
            let mut properties = json!({"lesson_id": l, "module_id": module, "time_spent_s": spent});
            if self.chance(0.15) {
                // Both: `duration_s` is the one that counts.
                let duration = f64::from(self.rng.u32(1..900));
                properties["duration_s"] = self.number(duration);
            }
            t = self.course_event(user, c, "lesson_completed", t, properties)?;
        }
        Some(t)
    }

    /// Question answers (right at once, wrong then right, never right, right then wrong, a wrong
    /// and a right answer in the same second), then quiz submissions (runs of failures).
    fn quiz(
        &mut self,
        user: &str,
        c: &str,
        quiz: &str,
        questions: &[&str],
        mut t: DateTime<Utc>,
        profile: Profile,
    ) -> Option<(DateTime<Utc>, bool)> {
        for question in questions {
            let r = self.rng.f64();
            let answers: Vec<bool> = if r < 0.45 {
                vec![true]
            } else if r < 0.7 {
                let wrong = self.rng.usize(1..=2);
                std::iter::repeat_n(false, wrong).chain([true]).collect()
            } else if r < 0.85 {
                vec![false; self.rng.usize(1..=3)]
            } else if r < 0.95 {
                vec![true, false]
            } else {
                vec![false, true]
            };
            let tied = r >= 0.95;
            for (k, correct) in answers.into_iter().enumerate() {
                if !(tied && k > 0) {
                    t += self.seconds(8..120);
                }
                let mut properties = json!({"item_id": question, "quiz_id": quiz, "correct": correct});
                if self.chance(0.03) {
                    // Not a boolean: no attempt (it still reaches the question and the quiz).
                    properties["correct"] = json!("yes");
                } else if self.chance(0.01) {
                    // No item: no attempt.
                    properties.as_object_mut().unwrap().remove("item_id");
                }
                t = self.course_event(user, c, "question_answered", t, properties)?;
            }
        }
        let (fails, pass) = match profile {
            Profile::Struggler => (self.rng.usize(2..=4), self.chance(0.3)),
            _ if self.chance(0.25) => (self.rng.usize(1..=2), true),
            _ => (0, true),
        };
        for k in 0..fails + usize::from(pass) {
            if !self.chance(0.05) {
                t += self.seconds(30..900);
            }
            let passed = k == fails;
            let score = if passed {
                self.rng.u32(6..=10)
            } else {
                self.rng.u32(0..6)
            };
            let mut properties = json!({"quiz_id": quiz, "score": score, "max_score": 10, "passed": passed});
            if self.chance(0.2) {
                properties["time_spent_s"] = self.duration();
            }
            t = self.course_event(user, c, "quiz_submitted", t, properties)?;
        }
        Some((t, pass))
    }

    /// A video watched in stretches: each a play, ended by a pause, a seek (forward, or back:
    /// a rewatch) or the end, or by nothing (abandoned). A quarter of the watches are reported
    /// xAPI-style, each event after a play carrying the `segments` played since (sometimes an
    /// earlier segment again), positions in fifths of a second.
    fn watch(&mut self, user: &str, c: &str, video: &str, length: i64, mut t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let l = length as f64;
        let xapi = self.chance(0.25);
        let mut pos = if self.chance(0.15) {
            self.rng.i64(0..length / 2) as f64
        } else {
            0.0
        };
        let mut earlier: Option<String> = None;
        for stretch in 0..6 {
            let mut played = json!({"video_id": video, "position_s": self.number(pos)});
            if stretch == 0 || self.chance(0.5) {
                played["length_s"] = json!(length);
            } else if self.chance(0.5) {
                played["length_s"] = json!(length - 10);
            }
            t = self.course_event(user, c, "video_played", t, played)?;
            if video == EDGE_VIDEO && self.chance(0.3) {
                match self.rng.usize(0..4) {
                    0 => {
                        // Played again without an end: the first play has no interval.
                        t += self.seconds(2..30);
                        continue;
                    }
                    1 => {
                        // Paused where it began: a zero-length interval (reading 6).
                        t += TimeDelta::seconds(3);
                        let paused = json!({"video_id": video, "position_s": pos, "length_s": length});
                        return self.course_event(user, c, "video_paused", t, paused);
                    }
                    2 if pos >= 5.0 => {
                        // A seek from before the play's position: no interval.
                        t += TimeDelta::seconds(10);
                        let to = (pos + 50.0).min(l - 2.0);
                        let seeked = json!({"video_id": video, "from_s": pos - 5.0, "to_s": to});
                        t = self.course_event(user, c, "video_seeked", t, seeked)?;
                        pos = to;
                        continue;
                    }
                    _ => {
                        // A `segments` event between a play and a plain pause: the play has no
                        // interval, the segments count (reading 6).
                        let end = (pos + 40.0).min(l);
                        t += TimeDelta::seconds(41);
                        let reported = json!({"video_id": video, "position_s": end, "segments": segment(pos, end)});
                        t = self.course_event(user, c, "video_paused", t, reported)?;
                        t += TimeDelta::seconds(2);
                        let paused = json!({"video_id": video, "position_s": end});
                        return self.course_event(user, c, "video_paused", t, paused);
                    }
                }
            }
            let fraction = if xapi { f64::from(self.rng.u32(0..5)) * 0.2 } else { 0.0 };
            let w = if self.chance(0.3) {
                l - pos
            } else {
                (self.rng.i64(20..=length / 2) as f64 + fraction).min(l - pos)
            };
            let end = tenth(pos + w);
            t += TimeDelta::seconds(w.ceil() as i64);
            let mut with_segments = |g: &mut Self, mut properties: Value| {
                if xapi {
                    let mut played = segment(pos, end);
                    if let Some(e) = earlier.as_ref().filter(|_| g.chance(0.15)) {
                        // An earlier segment again: watched twice, as the intervals read.
                        played = format!("{e}[,]{played}");
                    }
                    properties["segments"] = played.clone().into();
                    earlier = Some(played);
                }
                properties
            };
            let r = self.rng.f64();
            if end >= l {
                let completed = json!({"video_id": video, "position_s": length});
                let completed = with_segments(self, completed);
                return self.course_event(user, c, "video_completed", t, completed);
            } else if r < 0.45 {
                let paused = json!({"video_id": video, "position_s": self.number(end)});
                let paused = with_segments(self, paused);
                t = self.course_event(user, c, "video_paused", t, paused)?;
                if !self.chance(0.6) {
                    return Some(t);
                }
                t += if self.chance(0.8) {
                    self.seconds(5..300)
                } else {
                    self.gap()
                };
                pos = end;
            } else if r < 0.88 {
                let to = if r < 0.65 {
                    tenth((end + self.rng.i64(10..120) as f64).min(l - 2.0))
                } else {
                    tenth((end - self.rng.i64(10..200) as f64).max(0.0))
                };
                let seeked = json!({"video_id": video, "from_s": self.number(end), "to_s": self.number(to)});
                let seeked = with_segments(self, seeked);
                t = self.course_event(user, c, "video_seeked", t, seeked)?;
                t += TimeDelta::seconds(1);
                pos = to;
            } else {
                // Abandoned: no event ends this play.
                return Some(t);
            }
        }
        Some(t)
    }
}

/// The order in which the events reach ingest: in time order in batches (three requests at a
/// time), except the late ones, sent after everything else in random order; and client resends
/// (the same event, same messageId) in later batches, a few inside the same request.
fn sending_plan(events: &[Ev], late: &[bool], rng: &mut fastrand::Rng) -> (Vec<Vec<usize>>, Vec<Vec<usize>>, usize) {
    let mut on_time: Vec<usize> = (0..events.len()).filter(|i| !late[*i]).collect();
    on_time.sort_by_key(|i| events[*i].ts);
    let mut late: Vec<usize> = (0..events.len()).filter(|i| late[*i]).collect();
    rng.shuffle(&mut late);
    let mut normal: Vec<Vec<usize>> = on_time.chunks(250).map(<[usize]>::to_vec).collect();
    let mut after: Vec<Vec<usize>> = late.chunks(250).map(<[usize]>::to_vec).collect();
    let mut resends = 0;
    for (b, batch) in normal.clone().iter().enumerate() {
        for &i in batch {
            if rng.f64() < 0.05 {
                resends += 1;
                match rng.usize(0..4) {
                    0 => normal[b].push(i),
                    1 => {
                        let n = after.len();
                        after[rng.usize(..n)].push(i);
                    }
                    _ => {
                        let later = rng.usize(b..normal.len());
                        normal[later].push(i);
                    }
                }
            }
        }
    }
    for batch in after.clone() {
        for i in batch {
            if rng.f64() < 0.05 {
                resends += 1;
                let n = after.len();
                after[rng.usize(..n)].push(i);
            }
        }
    }
    (normal, after, resends)
}

// ---------------------------------------------------------------------------------------------
// The brute force: each definition of §6 "Instructor metrics" straight over the distinct events.

/// A deliberately wrong reading of a definition: the api's answers must contradict each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrong {
    Nothing,
    /// The enrolment state by arrival, not by event time.
    EnrolmentByArrival,
    /// Events exactly 30 minutes apart in two sessions.
    SessionSplitAt30Minutes,
    /// Ties of event time broken by messageId descending.
    TiesReversed,
    /// `segments` ignored: only play → pause/seek/completed intervals.
    SegmentsIgnored,
    /// The earliest grade, not the latest.
    EarliestGrade,
}

const MUTATIONS: [Wrong; 5] = [
    Wrong::EnrolmentByArrival,
    Wrong::SessionSplitAt30Minutes,
    Wrong::TiesReversed,
    Wrong::SegmentsIgnored,
    Wrong::EarliestGrade,
];

/// A catalog entry as readers see it (§5, "The course catalog").
#[derive(Debug, Clone, Default)]
struct Entry {
    items: Option<Vec<String>>,
    total_lessons: Option<i64>,
}

/// The at-risk query (§6 "At-risk rules").
struct Rules {
    rules: &'static [&'static str],
    inactive_days: i64,
    behind_points: f64,
    failed_in_row: usize,
    pass_mark: f64,
}

impl Rules {
    const DEFAULT: Rules = Rules {
        rules: &RULES,
        inactive_days: 14,
        behind_points: 25.0,
        failed_in_row: 3,
        pass_mark: 0.5,
    };
}

struct Truth<'a> {
    /// Each course's activity (reading 1), in event order: time, then messageId bytewise.
    by_course: HashMap<String, Vec<&'a Ev>>,
    /// Every event, in event order.
    events: Vec<&'a Ev>,
    today: NaiveDate,
    /// Admin replacements of catalog entries, newer than every event.
    overrides: BTreeMap<String, Entry>,
    /// Each event's place in the order its first copy was sent (for [`Wrong::EnrolmentByArrival`]).
    arrival: &'a HashMap<String, usize>,
    wrong: Wrong,
}

/// Every day from `from` to `to`, inclusive.
fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |x| *x <= to)
}

fn ratio(a: usize, b: usize) -> Value {
    if b > 0 {
        json!(a as f64 / b as f64)
    } else {
        Value::Null
    }
}

/// Reading 4: the middle value, or the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn at(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The intervals of an xAPI `played-segments` value, `a[.]b[,]c[.]d`.
fn parse_segments(s: &str) -> Vec<(f64, f64)> {
    s.split("[,]")
        .filter_map(|part| {
            let (a, b) = part.split_once("[.]")?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

/// The length of the union of `intervals` within [0, length].
fn covered(intervals: &[(f64, f64)], length: f64) -> f64 {
    let mut sorted: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(a, b)| (a.max(0.0), b.min(length)))
        .filter(|(a, b)| a <= b)
        .collect();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (a, b) in sorted {
        match current {
            Some((s, e)) if a <= e => current = Some((s, e.max(b))),
            _ => {
                if let Some((s, e)) = current {
                    total += e - s;
                }
                current = Some((a, b));
            }
        }
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

const VIDEO_EVENTS: [&str; 4] = ["video_played", "video_paused", "video_seeked", "video_completed"];

impl<'a> Truth<'a> {
    fn new(
        events: impl IntoIterator<Item = &'a Ev>,
        today: NaiveDate,
        overrides: BTreeMap<String, Entry>,
        arrival: &'a HashMap<String, usize>,
        wrong: Wrong,
    ) -> Self {
        let mut events: Vec<&Ev> = events.into_iter().collect();
        if wrong == Wrong::TiesReversed {
            events.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| b.message_id.cmp(&a.message_id)));
        } else {
            events.sort_by(|a, b| (a.ts, &a.message_id).cmp(&(b.ts, &b.message_id)));
        }
        let mut by_course: HashMap<String, Vec<&Ev>> = HashMap::new();
        for e in &events {
            if let Some(c) = e.course() {
                by_course.entry(c).or_default().push(e);
            }
        }
        Self {
            by_course,
            events,
            today,
            overrides,
            arrival,
            wrong,
        }
    }

    fn of(&self, c: &str) -> &[&'a Ev] {
        self.by_course.get(c).map_or(&[], Vec::as_slice)
    }

    /// The catalog entry: each field from the latest publication carrying it (§5), unless an
    /// admin replaced the entry since.
    fn catalog(&self, c: &str) -> Entry {
        if let Some(entry) = self.overrides.get(c) {
            return entry.clone();
        }
        let mut entry = Entry::default();
        for e in &self.events {
            if e.name != "course_published" || e.id_of("course_id").as_deref() != Some(c) {
                continue;
            }
            if let Some(items) = e.properties.get("items").and_then(Value::as_array) {
                entry.items = Some(items.iter().filter_map(id_value).collect());
            }
            if let Some(total) = e.number("total_lessons") {
                entry.total_lessons = Some(total as i64);
            }
        }
        entry
    }

    /// Each learner's enrolment state: the latest enrolment or unenrolment.
    fn enrolment(&self, c: &str) -> BTreeMap<&'a str, bool> {
        let mut latest: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
        for (rank, e) in self.of(c).iter().enumerate() {
            let state = match e.name.as_str() {
                "course_enrolled" => true,
                "course_unenrolled" => false,
                _ => continue,
            };
            let rank = if self.wrong == Wrong::EnrolmentByArrival {
                self.arrival[&e.message_id]
            } else {
                rank
            };
            let entry = latest.entry(e.id.as_str()).or_insert((rank, state));
            if rank >= entry.0 {
                *entry = (rank, state);
            }
        }
        latest.into_iter().map(|(u, (_, s))| (u, s)).collect()
    }

    fn enrollees(&self, c: &str) -> Vec<&'a str> {
        self.enrolment(c)
            .into_iter()
            .filter_map(|(u, enrolled)| enrolled.then_some(u))
            .collect()
    }

    /// Each learner's latest event of the course.
    fn last_activity(&self, c: &str) -> BTreeMap<&'a str, DateTime<Utc>> {
        let mut last = BTreeMap::new();
        for e in self.of(c) {
            last.insert(e.id.as_str(), e.ts);
        }
        last
    }

    fn engagement(&self, c: &str) -> Value {
        let last = self.last_activity(c);
        let since = |n: u64| {
            last.values()
                .filter(|ts| ts.date_naive() >= self.today - Days::new(n))
                .count()
        };
        json!({"current_enrollees": self.enrollees(c).len(), "active_7d": since(6), "active_30d": since(29)})
    }

    /// Each learner's distinct completed lessons (§6 "Course progress").
    fn lessons(&self, c: &str) -> BTreeMap<&'a str, BTreeSet<String>> {
        let mut lessons: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for e in self.of(c).iter().filter(|e| e.name == "lesson_completed") {
            if let Some(l) = e.id_of("lesson_id") {
                lessons.entry(e.id.as_str()).or_default().insert(l);
            }
        }
        lessons
    }

    /// The grade and passed registers (reading 3).
    fn grades_of(&self, c: &str) -> BTreeMap<&'a str, (Option<f64>, Option<bool>)> {
        let mut registers: BTreeMap<&str, (Option<f64>, Option<bool>)> = BTreeMap::new();
        for e in self.of(c).iter().filter(|e| e.name == "course_graded") {
            let grade = e.number("grade").or_else(|| {
                let (score, max) = (e.number("score")?, e.number("max_score")?);
                (max > 0.0).then(|| score / max)
            });
            let passed = e.properties.get("passed").and_then(Value::as_bool);
            let r = registers.entry(e.id.as_str()).or_default();
            let keep = self.wrong == Wrong::EarliestGrade;
            if let Some(g) = grade {
                if !(keep && r.0.is_some()) {
                    r.0 = Some(g.clamp(0.0, 1.0));
                }
            }
            if let Some(p) = passed {
                if !(keep && r.1.is_some()) {
                    r.1 = Some(p);
                }
            }
        }
        registers
    }

    /// Each learner's failed `quiz_submitted` attempts in a row, counting back from the latest.
    fn failures(&self, c: &str) -> BTreeMap<&'a str, usize> {
        let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
        for e in self.of(c) {
            if e.name != "quiz_submitted" || e.id_of("quiz_id").is_none() {
                continue;
            }
            let n = failed.entry(e.id.as_str()).or_default();
            if e.properties.get("passed").and_then(Value::as_bool) == Some(true) {
                *n = 0;
            } else {
                *n += 1;
            }
        }
        failed
    }

    /// The flagged current enrollees, most reasons first, then by user id; and the median.
    fn at_risk(&self, c: &str, rules: &Rules) -> (Vec<Value>, Value) {
        let enrollees = self.enrollees(c);
        let total = self.catalog(c).total_lessons.filter(|t| *t > 0);
        let lessons = self.lessons(c);
        let pct = |u: &str| total.map(|t| lessons.get(u).map_or(0, BTreeSet::len) as f64 * 100.0 / t as f64);
        let median = total.and_then(|_| median(enrollees.iter().filter_map(|u| pct(u)).collect()));
        let last = self.last_activity(c);
        let failures = self.failures(c);
        let grades = self.grades_of(c);
        let on = |rule: &str| rules.rules.contains(&rule);
        let mut flagged: Vec<(usize, &str, Value)> = Vec::new();
        for u in enrollees {
            let mut reasons = Vec::new();
            let last_at = last[u];
            let inactive = (self.today - last_at.date_naive()).num_days();
            if on("inactive") && inactive >= rules.inactive_days {
                reasons.push(json!({"rule": "inactive", "value": inactive, "threshold": rules.inactive_days}));
            }
            if let (true, Some(m), Some(p)) = (on("behind"), median, pct(u)) {
                if m - p >= rules.behind_points {
                    reasons.push(json!({"rule": "behind", "value": m - p, "threshold": rules.behind_points}));
                }
            }
            let failed = failures.get(u).copied().unwrap_or(0);
            if on("failing") && failed >= rules.failed_in_row {
                reasons.push(json!({"rule": "failing", "value": failed, "threshold": rules.failed_in_row}));
            }
            let grade = grades.get(u).and_then(|g| g.0);
            if let (true, Some(g)) = (on("grade"), grade) {
                if g < rules.pass_mark {
                    reasons.push(json!({"rule": "grade", "value": g, "threshold": rules.pass_mark}));
                }
            }
            if !reasons.is_empty() {
                let item = json!({
                    "user_id": u, "reasons": reasons, "last_activity_at": at(last_at),
                    "progress_pct": pct(u), "failed_in_row": failed, "grade": grade,
                });
                flagged.push((reasons.len(), u, item));
            }
        }
        flagged.sort_by(|a, b| (Reverse(a.0), a.1).cmp(&(Reverse(b.0), b.1)));
        (flagged.into_iter().map(|(_, _, item)| item).collect(), json!(median))
    }

    /// Learners reaching each item (§6 "reach of an item").
    fn reach(&self, c: &str) -> BTreeMap<String, BTreeSet<&'a str>> {
        let mut reach: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for e in self.of(c) {
            for item in e.items() {
                reach.entry(item).or_default().insert(e.id.as_str());
            }
        }
        reach
    }

    fn drop_off(&self, c: &str) -> Value {
        let reach = self.reach(c);
        let catalog = self.catalog(c).items.unwrap_or_default();
        let learners = |id: &str| reach.get(id).map_or(0, BTreeSet::len);
        let items: Vec<Value> = catalog
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let from_previous = if i == 0 {
                    Value::Null
                } else {
                    ratio(learners(id), learners(&catalog[i - 1]))
                };
                // Positions from 1 (§6 "drop-off").
                json!({"item_id": id, "position": i + 1, "learners": learners(id), "from_previous": from_previous})
            })
            .collect();
        let uncatalogued: Vec<Value> = reach
            .iter()
            .filter(|(id, _)| !catalog.contains(id))
            .map(|(id, who)| json!({"item_id": id, "learners": who.len()}))
            .collect();
        json!({"items": items, "uncatalogued": uncatalogued})
    }

    /// Each item's attempts per learner, in event order (§6 "attempts").
    fn attempts(&self, c: &str) -> BTreeMap<String, BTreeMap<&'a str, Vec<bool>>> {
        let mut attempts: BTreeMap<String, BTreeMap<&str, Vec<bool>>> = BTreeMap::new();
        for e in self.of(c) {
            let (item, correct) = match e.name.as_str() {
                "question_answered" => {
                    let Some(item) = e.id_of("item_id") else { continue };
                    let Some(correct) = e.properties.get("correct").and_then(Value::as_bool) else {
                        continue;
                    };
                    (item, correct)
                }
                "quiz_submitted" => {
                    let Some(item) = e.id_of("quiz_id") else { continue };
                    (item, e.properties.get("passed").and_then(Value::as_bool) == Some(true))
                }
                _ => continue,
            };
            attempts
                .entry(item)
                .or_default()
                .entry(e.id.as_str())
                .or_default()
                .push(correct);
        }
        attempts
    }

    fn difficulty(&self, c: &str) -> Value {
        let items: Vec<Value> = self
            .attempts(c)
            .into_iter()
            .map(|(item, by_learner)| {
                let learners = by_learner.len();
                let until: Vec<usize> = by_learner
                    .values()
                    .filter_map(|a| a.iter().position(|ok| *ok).map(|i| i + 1))
                    .collect();
                json!({
                    "item_id": item,
                    "learners": learners,
                    "attempts": by_learner.values().map(Vec::len).sum::<usize>(),
                    "first_attempt_correct_rate": ratio(by_learner.values().filter(|a| a[0]).count(), learners),
                    "last_attempt_correct_rate": ratio(by_learner.values().filter(|a| a[a.len() - 1]).count(), learners),
                    "mean_attempts_until_correct": ratio(until.iter().sum(), until.len()),
                    "never_correct": learners - until.len(),
                })
            })
            .collect();
        json!({ "items": items })
    }

    /// Each video's length and each learner's watched intervals (§6 "watched intervals").
    #[allow(clippy::type_complexity)]
    fn intervals(&self, c: &str) -> BTreeMap<String, (Option<f64>, BTreeMap<&'a str, Vec<(f64, f64)>>)> {
        let mut events: BTreeMap<String, BTreeMap<&str, Vec<&Ev>>> = BTreeMap::new();
        for e in self.of(c) {
            if let (true, Some(v)) = (VIDEO_EVENTS.contains(&e.name.as_str()), e.id_of("video_id")) {
                events.entry(v).or_default().entry(e.id.as_str()).or_default().push(e);
            }
        }
        let ignored = self.wrong == Wrong::SegmentsIgnored;
        fn carried(e: &Ev, ignored: bool) -> Option<&str> {
            (!ignored)
                .then(|| e.properties.get("segments").and_then(Value::as_str))
                .flatten()
        }
        let segments = |e| carried(e, ignored);
        events
            .into_iter()
            .map(|(video, by_learner)| {
                let length = by_learner
                    .values()
                    .flatten()
                    .filter_map(|e| e.number("length_s"))
                    .reduce(f64::max);
                let intervals = by_learner
                    .into_iter()
                    .map(|(learner, events)| {
                        let mut watched = Vec::new();
                        for (i, e) in events.iter().enumerate() {
                            if let Some(s) = segments(e) {
                                watched.extend(parse_segments(s));
                                continue;
                            }
                            if e.name != "video_played" {
                                continue;
                            }
                            let (Some(from), Some(next)) = (e.number("position_s"), events.get(i + 1)) else {
                                continue;
                            };
                            // Reading 6: a next event carrying segments ends no interval.
                            if segments(next).is_some() {
                                continue;
                            }
                            let to = match next.name.as_str() {
                                "video_paused" | "video_completed" => next.number("position_s"),
                                "video_seeked" => next.number("from_s"),
                                _ => None,
                            };
                            if let Some(to) = to.filter(|to| *to >= from) {
                                watched.push((from, to));
                            }
                        }
                        (learner, watched)
                    })
                    .collect();
                (video, (length, intervals))
            })
            .collect()
    }

    fn videos(&self, c: &str) -> Value {
        let items: Vec<Value> = self
            .intervals(c)
            .into_iter()
            .map(|(video, (length, by_learner))| {
                let viewers = by_learner.values().filter(|w| !w.is_empty()).count();
                let Some(l) = length else {
                    return json!({"video_id": video, "length_s": null, "viewers": viewers});
                };
                let full = by_learner
                    .values()
                    .filter(|w| !w.is_empty() && covered(w, l) >= 0.95 * l)
                    .count();
                let segments: Vec<Value> = (0..20)
                    .map(|k| {
                        let mid = (f64::from(k) + 0.5) * l / 20.0;
                        let containing = |w: &Vec<(f64, f64)>| w.iter().filter(|(a, b)| *a <= mid && mid <= *b).count();
                        json!({
                            "index": k,
                            "from_s": f64::from(k) * l / 20.0,
                            "to_s": f64::from(k + 1) * l / 20.0,
                            "viewers": by_learner.values().filter(|w| containing(w) >= 1).count(),
                            "rewatched": by_learner.values().filter(|w| containing(w) >= 2).count(),
                        })
                    })
                    .collect();
                json!({"video_id": video, "length_s": l, "viewers": viewers, "full_views": full, "segments": segments})
            })
            .collect();
        json!({ "items": items })
    }

    /// Sessions of one learner's events (in time order): (start, end).
    fn sessions(&self, times: &[DateTime<Utc>]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let gap = TimeDelta::seconds(SESSION_GAP_S);
        let mut sessions: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for &t in times {
            match sessions.last_mut() {
                Some((_, end))
                    if t - *end < gap || (t - *end == gap && self.wrong != Wrong::SessionSplitAt30Minutes) =>
                {
                    *end = t;
                }
                _ => sessions.push((t, t)),
            }
        }
        sessions
    }

    /// §6 "time on task" over `events` (one course's, or one learner's), per day of the range.
    fn time_on_task(&self, events: &[&'a Ev], from: NaiveDate, to: NaiveDate, with_learners: bool) -> Value {
        let mut times: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
        let mut reported: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let mut active: BTreeMap<NaiveDate, BTreeSet<&str>> = BTreeMap::new();
        for e in events {
            times.entry(e.id.as_str()).or_default().push(e.ts);
            *reported.entry(e.day()).or_default() += e.reported_s();
            active.entry(e.day()).or_default().insert(e.id.as_str());
        }
        let mut sessions: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
        for t in times.values_mut() {
            t.sort();
            for (start, end) in self.sessions(t) {
                let day = sessions.entry(start.date_naive()).or_default();
                day.0 += 1;
                day.1 += (end - start).num_seconds();
            }
        }
        let (mut totals, mut everyone) = ([0i64; 3], BTreeSet::new());
        let series: Vec<Value> = days(from, to)
            .map(|d| {
                let (count, seconds) = sessions.get(&d).copied().unwrap_or_default();
                let r = reported.get(&d).copied().unwrap_or_default();
                for (sum, x) in totals.iter_mut().zip([r, seconds, count]) {
                    *sum += x;
                }
                let mut row = json!({"date": d.to_string(), "reported_s": r, "session_s": seconds, "sessions": count});
                if with_learners {
                    let who = active.get(&d).cloned().unwrap_or_default();
                    row["learners"] = who.len().into();
                    everyone.extend(who);
                }
                row
            })
            .collect();
        let mut answer = json!({"series": series});
        if with_learners {
            // Reading 7: learners distinct over the range.
            answer["totals"] = json!({"reported_s": totals[0], "session_s": totals[1], "sessions": totals[2],
                                      "learners": everyone.len()});
        }
        answer
    }

    fn course_time(&self, c: &str, from: NaiveDate, to: NaiveDate) -> Value {
        self.time_on_task(self.of(c), from, to, true)
    }

    fn user_time(&self, user: &str, course: Option<&str>, from: NaiveDate, to: NaiveDate) -> Value {
        let events: Vec<&Ev> = match course {
            Some(c) => self.of(c).iter().copied().filter(|e| e.id == user).collect(),
            None => self.events.iter().copied().filter(|e| e.id == user).collect(),
        };
        self.time_on_task(&events, from, to, false)
    }

    /// §6 "grade distribution".
    fn grades(&self, c: &str, buckets: usize, pass_mark: f64) -> Value {
        let registers = self.grades_of(c);
        let graded: Vec<f64> = registers.values().filter_map(|r| r.0).collect();
        let known = registers.values().filter(|r| r.0.is_some() || r.1.is_some()).count();
        let passed = registers
            .values()
            .filter(|(g, p)| p.or(g.map(|g| g >= pass_mark)) == Some(true))
            .count();
        let b = buckets as f64;
        // k = ⌊grade × b + 10⁻⁹⌋, a grade of 1 in the last bucket.
        let bucket = |g: f64| ((g * b + 1e-9).floor() as usize).min(buckets - 1);
        let counts: Vec<Value> = (0..buckets)
            .map(|k| {
                json!({"from": k as f64 / b, "to": (k + 1) as f64 / b,
                       "learners": graded.iter().filter(|g| bucket(**g) == k).count()})
            })
            .collect();
        json!({"graded": known, "passed": passed, "pass_rate": ratio(passed, known), "buckets": counts})
    }

    /// Every answer this test compares, by request path (read as an admin).
    fn answers(&self, courses: &[&str], users: &[(&str, Option<&str>)]) -> Vec<(String, Value)> {
        let (d0, today) = (self.today - Days::new(DATA_DAYS as u64 - 1), self.today);
        let (d10, d20, before) = (d0 + Days::new(10), d0 + Days::new(20), d0 - Days::new(5));
        let mut out = Vec::new();
        for &c in courses {
            let p = |route: &str| format!("/v1/courses/{c}/{route}");
            out.push((p("engagement"), self.engagement(c)));
            let queries: [(&str, Rules); 3] = [
                ("", Rules::DEFAULT),
                (
                    "rules=inactive,failing&inactive_days=7&failed_in_row=2&",
                    Rules {
                        rules: &["inactive", "failing"],
                        inactive_days: 7,
                        failed_in_row: 2,
                        ..Rules::DEFAULT
                    },
                ),
                (
                    "rules=behind,grade&behind_points=12&pass_mark=0.6&",
                    Rules {
                        rules: &["behind", "grade"],
                        behind_points: 12.0,
                        pass_mark: 0.6,
                        ..Rules::DEFAULT
                    },
                ),
            ];
            for (query, rules) in &queries {
                let (items, median) = self.at_risk(c, rules);
                let total = items.len();
                out.push((
                    p(&format!("at-risk?{query}limit=500")),
                    json!({"items": items, "total": total, "median_progress_pct": median}),
                ));
                if query.is_empty() && c == "c1" {
                    let page: Vec<Value> = items.iter().skip(3).take(5).cloned().collect();
                    let next = (3 + 5 < total).then_some(8);
                    out.push((
                        p("at-risk?limit=5&offset=3"),
                        json!({"items": page, "total": total, "limit": 5, "offset": 3, "next_offset": next,
                               "median_progress_pct": median}),
                    ));
                }
            }
            out.push((p("drop-off"), self.drop_off(c)));
            out.push((p("items/difficulty"), self.difficulty(c)));
            out.push((p("videos"), self.videos(c)));
            for (from, to) in [(d0, today), (before, d0 + Days::new(3)), (d10, d20)] {
                out.push((
                    p(&format!("time-on-task?from={from}&to={to}")),
                    self.course_time(c, from, to),
                ));
            }
            out.push((p("grades"), self.grades(c, 10, 0.5)));
            out.push((p("grades?buckets=4&pass_mark=0.6"), self.grades(c, 4, 0.6)));
        }
        for (user, course) in users {
            let (from, to) = (d0, today);
            let path = match course {
                Some(c) => format!("/v1/users/{user}/time-on-task?from={from}&to={to}&course_id={c}"),
                None => format!("/v1/users/{user}/time-on-task?from={from}&to={to}"),
            };
            out.push((path, self.user_time(user, *course, from, to)));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// The field a list's elements are told apart by, and its value.
fn key_of(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    ["user_id", "item_id", "video_id", "date", "rule", "index"]
        .iter()
        .find_map(|k| {
            o.get(*k)
                .map(|x| format!("{k}={}", x.as_str().map_or_else(|| x.to_string(), str::to_owned)))
        })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 600 {
        format!("{}…", s.chars().take(600).collect::<String>())
    } else {
        s
    }
}

/// Every difference between what the brute force expects and what the api answered (every key of
/// `expected`; numbers to 1e-9 relative, times as instants, lists of keyed objects element by
/// element with their order), with its path.
fn diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, v) in e {
                diff(&format!("{path}.{k}"), v, g.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(e), Value::Array(g))
            if !(e.is_empty() && g.is_empty()) && e.iter().chain(g).all(|v| key_of(v).is_some()) =>
        {
            let ek: Vec<String> = e.iter().filter_map(key_of).collect();
            let gk: Vec<String> = g.iter().filter_map(key_of).collect();
            for (k, v) in ek.iter().zip(e) {
                match gk.iter().position(|x| x == k) {
                    Some(i) => diff(&format!("{path}[{k}]"), v, &g[i], out),
                    None => out.push(format!("{path}[{k}]: expected {}, got nothing", short(v))),
                }
            }
            for (k, v) in gk.iter().zip(g) {
                if !ek.contains(k) {
                    out.push(format!("{path}[{k}]: expected nothing, got {}", short(v)));
                }
            }
            let common: Vec<&String> = gk.iter().filter(|k| ek.contains(k)).collect();
            let wanted: Vec<&String> = ek.iter().filter(|k| gk.contains(k)).collect();
            if common != wanted {
                out.push(format!("{path}: order expected {wanted:?}, got {common:?}"));
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (a, b)) in e.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let same = match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => x == y,
                _ => {
                    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0)
                }
            };
            if !same {
                out.push(format!("{path}: expected {a}, got {b}"));
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let instant = |s: &str| DateTime::parse_from_rfc3339(s).ok();
            if instant(a).is_none() || instant(a) != instant(b) {
                out.push(format!("{path}: expected {a:?}, got {b:?}"));
            }
        }
        _ if expected == got => {}
        _ => out.push(format!("{path}: expected {}, got {}", short(expected), short(got))),
    }
}

/// Reading 8: an at-risk learner's reasons in the rules table's order.
fn reasons_in_table_order(mut answer: Value) -> Value {
    if let Some(items) = answer.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(reasons) = item.get_mut("reasons").and_then(Value::as_array_mut) {
                reasons.sort_by_key(|r| RULES.iter().position(|x| r["rule"] == *x).unwrap_or(RULES.len()));
            }
        }
    }
    answer
}

#[derive(Default)]
struct Checker {
    answers: usize,
    mismatches: Vec<String>,
}

impl Checker {
    /// Compares one answer of the api (`status`, `got`) with the brute force's; prints each
    /// difference at once.
    fn check(&mut self, what: &str, expected: &Value, status: StatusCode, got: &Value) {
        self.answers += 1;
        let mut out = Vec::new();
        if status == StatusCode::OK {
            diff("", expected, &reasons_in_table_order(got.clone()), &mut out);
        } else {
            out.push(format!(": status {status}, {}", short(got)));
        }
        for m in out {
            let line = format!("{what} at {m}");
            eprintln!("MISMATCH {line}");
            self.mismatches.push(line);
        }
    }

    fn status(&mut self, what: &str, expected: StatusCode, got: StatusCode) {
        self.answers += 1;
        if expected != got {
            self.fail(format!("{what}: expected status {expected}, got {got}"));
        }
    }

    fn fail(&mut self, line: String) {
        eprintln!("MISMATCH {line}");
        self.mismatches.push(line);
    }
}

/// The differences between two sets of answers to the same paths.
fn differences(expected: &[(String, Value)], got: &HashMap<String, Value>) -> usize {
    expected
        .iter()
        .map(|(path, e)| {
            let mut out = Vec::new();
            diff("", e, got.get(path).unwrap_or(&Value::Null), &mut out);
            out.len()
        })
        .sum()
}

#[test]
fn the_comparison_reports_every_difference_with_its_path() {
    let mut out = Vec::new();
    diff(
        "",
        &json!({"a": [1, 2], "b": {"c": 0.5}, "d": null, "t": "2026-01-02T03:04:05.000Z",
                "items": [{"item_id": "x", "n": 1}, {"item_id": "y", "n": 2}, {"item_id": "z", "n": 3}]}),
        &json!({"a": [1, 3], "b": {"c": 0.5000001}, "d": 0, "extra": 1, "t": "2026-01-02T03:04:05Z",
                "items": [{"item_id": "y", "n": 2}, {"item_id": "x", "n": 5}, {"item_id": "w", "n": 0}]}),
        &mut out,
    );
    assert_eq!(
        out,
        [
            ".a[1]: expected 2, got 3",
            ".b.c: expected 0.5, got 0.5000001",
            ".d: expected null, got 0",
            ".items[item_id=x].n: expected 1, got 5",
            r#".items[item_id=z]: expected {"item_id":"z","n":3}, got nothing"#,
            r#".items[item_id=w]: expected nothing, got {"item_id":"w","n":0}"#,
            r#".items: order expected ["item_id=x", "item_id=y"], got ["item_id=y", "item_id=x"]"#,
        ]
    );
}

/// The brute force on a handful of events worked out by hand.
#[test]
fn the_brute_force_follows_the_definitions_on_a_worked_example() {
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().to_utc();
    let mut n = 0;
    let mut ev = |who: &str, name: &str, s: i64, properties: Value| {
        n += 1;
        let Value::Object(mut properties) = properties else {
            unreachable!()
        };
        properties.insert("course_id".into(), json!("c"));
        Ev {
            message_id: format!("m{n:02}"),
            id: who.into(),
            kind: "track",
            name: name.into(),
            ts: t0 + TimeDelta::seconds(s),
            properties,
        }
    };
    let events = vec![
        // a: enrolled, unenrolled and enrolled again in one second (m03 > m02: enrolled).
        ev("a", "course_enrolled", 0, json!({})),
        ev("a", "course_unenrolled", 60, json!({})),
        ev("a", "course_enrolled", 60, json!({})),
        // a: 30 minutes apart, one session; a second more, another.
        ev(
            "a",
            "lesson_completed",
            2_000,
            json!({"lesson_id": "l1", "time_spent_s": 99.7}),
        ),
        ev(
            "a",
            "lesson_completed",
            3_801,
            json!({"lesson_id": "l1", "duration_s": "20", "time_spent_s": 5}),
        ),
        // b: wrong, wrong, right; a: right then wrong.
        ev("b", "question_answered", 0, json!({"item_id": "q", "correct": false})),
        ev("b", "question_answered", 10, json!({"item_id": "q", "correct": false})),
        ev("b", "question_answered", 20, json!({"item_id": "q", "correct": true})),
        ev("a", "question_answered", 10, json!({"item_id": "q", "correct": true})),
        ev("a", "question_answered", 20, json!({"item_id": "q", "correct": "no"})),
        ev("a", "question_answered", 30, json!({"item_id": "q", "correct": false})),
        // b watches 0-40 and, after seeking back, 20-60 of 100 s; a 0-96 in two xAPI segments.
        ev(
            "b",
            "video_played",
            100,
            json!({"video_id": "v", "position_s": 0, "length_s": 90}),
        ),
        ev(
            "b",
            "video_seeked",
            140,
            json!({"video_id": "v", "from_s": 40, "to_s": 20, "length_s": 100}),
        ),
        ev("b", "video_played", 141, json!({"video_id": "v", "position_s": "20"})),
        ev("b", "video_paused", 181, json!({"video_id": "v", "position_s": 60})),
        ev("a", "video_played", 100, json!({"video_id": "v", "position_s": 0})),
        ev(
            "a",
            "video_completed",
            200,
            json!({"video_id": "v", "segments": "0[.]50[,]50[.]96"}),
        ),
        // Grades: b's latest grade is 0.25 (sent with score 7 of 8, which `grade` overrides),
        // passed from the earlier event; a: 9 of 8, clamped to 1.
        ev("b", "course_graded", 0, json!({"grade": 0.9, "passed": true})),
        ev(
            "b",
            "course_graded",
            10,
            json!({"grade": 0.25, "score": 7, "max_score": 8}),
        ),
        ev("a", "course_graded", 0, json!({"score": 9, "max_score": 8})),
    ];
    let arrival = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.message_id.clone(), i))
        .collect();
    let today = t0.date_naive();
    let truth = Truth::new(&events, today, BTreeMap::new(), &arrival, Wrong::Nothing);
    assert_eq!(truth.engagement("c")["current_enrollees"], 1);
    assert_eq!(
        truth.course_time("c", today, today)["totals"],
        json!({"reported_s": 120, "session_s": 2_000 + 181, "sessions": 3, "learners": 2})
    );
    let q = &truth.difficulty("c")["items"][0];
    assert_eq!(q["learners"], 2);
    assert_eq!(q["attempts"], 5);
    assert_eq!(q["first_attempt_correct_rate"], 0.5);
    assert_eq!(q["last_attempt_correct_rate"], 0.5);
    assert_eq!(q["mean_attempts_until_correct"], 2.0);
    assert_eq!(q["never_correct"], 0);
    let v = &truth.videos("c")["items"][0];
    assert_eq!(
        (v["length_s"].as_f64(), &v["viewers"], &v["full_views"]),
        (Some(100.0), &json!(2), &json!(1))
    );
    // Segment 6 (30-35 s, midpoint 32.5): b twice, a once.
    assert_eq!(
        v["segments"][6],
        json!({"index": 6, "from_s": 30.0, "to_s": 35.0, "viewers": 2, "rewatched": 1})
    );
    assert_eq!(v["segments"][19]["viewers"], 0);
    let grades = truth.grades("c", 4, 0.5);
    assert_eq!(grades["graded"], 2);
    assert_eq!(grades["passed"], 2);
    assert_eq!(grades["buckets"][1]["learners"], 1);
    assert_eq!(grades["buckets"][3]["learners"], 1);
    let wrong = Truth::new(
        &events,
        today,
        BTreeMap::new(),
        &arrival,
        Wrong::SessionSplitAt30Minutes,
    );
    assert_eq!(wrong.course_time("c", today, today)["totals"]["sessions"], 4);
    let wrong = Truth::new(&events, today, BTreeMap::new(), &arrival, Wrong::TiesReversed);
    assert_eq!(wrong.engagement("c")["current_enrollees"], 0);
}

// ---------------------------------------------------------------------------------------------
// The test.

/// The learners whose own time on task is compared: a few of each profile, and a visitor.
const PROBED_USERS: [(&str, Option<&str>); 7] = [
    ("u004", None),
    ("u005", None),
    ("u010", None),
    ("u011", Some("c1")),
    ("u018", None),
    ("u027", Some("c2")),
    ("anon-v01", None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instructor_answer_is_the_brute_force_over_the_events() {
    let started = Instant::now();
    let seed = std::env::var("EXACTNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("EXACTNESS_SEED={seed}");
    let now = Utc::now();
    let today = now.date_naive();
    let (events, late) = Generator::new(seed, now).generate();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let (normal, after, resends) = sending_plan(&events, &late, &mut rng);
    let mut arrival: HashMap<String, usize> = HashMap::new();
    for &i in normal.iter().chain(&after).flatten() {
        let next = arrival.len();
        arrival.entry(events[i].message_id.clone()).or_insert(next);
    }
    let on_time: Vec<&Ev> = events.iter().zip(&late).filter(|(_, l)| !**l).map(|(e, _)| e).collect();
    eprintln!(
        "{} distinct events, {} sent in time order in {} batches, {} late, {} resends",
        events.len(),
        on_time.len(),
        normal.len(),
        events.len() - on_time.len(),
        resends
    );

    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *names.entry(e.name.as_str()).or_default() += 1;
    }
    eprintln!("events by name: {names:?}");

    // The workload exercises what the metrics distinguish, before anything is sent.
    let truth = Truth::new(&events, today, BTreeMap::new(), &arrival, Wrong::Nothing);
    let early = Truth::new(
        on_time.iter().copied(),
        today,
        BTreeMap::new(),
        &arrival,
        Wrong::Nothing,
    );
    workload_exercises_every_definition(&truth, &early, &events, &late);
    let expected = truth.answers(&COURSE_IDS, &PROBED_USERS);
    for wrong in MUTATIONS {
        let answers = Truth::new(&events, today, BTreeMap::new(), &arrival, wrong).answers(&COURSE_IDS, &PROBED_USERS);
        let got: HashMap<String, Value> = answers.into_iter().collect();
        let n = differences(&expected, &got);
        eprintln!("the wrong reading {wrong:?} differs from the contract's in {n} places");
        assert!(n > 0, "the workload cannot tell {wrong:?} from the definition");
    }

    let pipeline = pipeline().await;
    let api = pipeline.api().await;
    let body = |batch: &[usize]| batch.iter().map(|i| events[*i].json()).collect::<Vec<Value>>();
    let mut totals: Vec<(u64, u64)> = futures::stream::iter(normal.iter().map(|b| pipeline.send(body(b))))
        .buffer_unordered(3)
        .collect()
        .await;
    pipeline.wait_counted(on_time.len()).await;
    eprintln!("events in time order counted after {:?}", started.elapsed());
    let mut check = Checker::default();

    // 1. The events sent in time order.
    let answers = early.answers(&COURSE_IDS, &PROBED_USERS);
    for (path, expected) in &answers {
        let (status, got) = api.get(path, READ_KEY).await;
        check.check(&format!("[in time order] GET {path}"), expected, status, &got);
    }

    // 2. Everything, late events included: a new api (an empty cache) answers; the first one
    // must come to the same answers once the workers' change notifications dropped its cache.
    for batch in &after {
        totals.push(pipeline.send(body(batch)).await);
    }
    let (accepted, duplicates) = totals.iter().fold((0, 0), |(a, d), (x, y)| (a + x, d + y));
    let copies: usize = normal.iter().chain(&after).map(Vec::len).sum();
    assert_eq!(
        accepted + duplicates,
        copies as u64,
        "ingest accepted or flagged every copy"
    );
    pipeline.wait_counted(events.len()).await;
    eprintln!("every event counted after {:?}", started.elapsed());
    let fresh = pipeline.api().await;
    let mut got_all: HashMap<String, Value> = HashMap::new();
    for (path, expected) in &expected {
        let (status, got) = fresh.get(path, READ_KEY).await;
        check.check(&format!("[all events] GET {path}"), expected, status, &got);
        got_all.insert(path.clone(), reasons_in_table_order(got));
    }
    let stale = eventually_the_same(&api, &got_all).await;
    for path in &stale {
        check.check(
            &format!("[the first api's cache, 10 s after the late events] GET {path}"),
            &got_all[path],
            StatusCode::OK,
            &api.get(path, READ_KEY).await.1,
        );
    }
    for (path, got) in &got_all {
        let as_of = &got["as_of"];
        if path.ends_with("/engagement") && !as_of.as_str().is_some_and(|s| s.starts_with(&today.to_string())) {
            check.fail(format!(
                "[all events] GET {path} at .as_of (reading 9): expected today, {today}, got {as_of}"
            ));
        }
    }
    // The mutation check: each wrong reading must disagree with the api; and where the api
    // follows one rather than the contract, that names the cause of those mismatches.
    for wrong in MUTATIONS {
        let answers = Truth::new(&events, today, BTreeMap::new(), &arrival, wrong).answers(&COURSE_IDS, &PROBED_USERS);
        let disagree = differences(&answers, &got_all);
        if disagree == 0 {
            check.fail(format!(
                "the wrong reading {wrong:?} agrees with every answer of the api"
            ));
        }
        let follows: Vec<&String> = answers
            .iter()
            .zip(&expected)
            .filter(|((path, w), (_, right))| {
                let (mut to_wrong, mut to_right) = (Vec::new(), Vec::new());
                diff("", w, &got_all[path], &mut to_wrong);
                diff("", right, &got_all[path], &mut to_right);
                to_wrong.is_empty() && !to_right.is_empty()
            })
            .map(|((path, _), _)| path)
            .collect();
        eprintln!(
            "the wrong reading {wrong:?} disagrees with the api in {disagree} places{}",
            if follows.is_empty() {
                String::new()
            } else {
                format!("; the api follows it in {follows:?}")
            }
        );
    }

    // 3. Who may read what (§7): an instructor their courses, a student their own time.
    let instructor = token(api::Role::Instructor, STAFF, &TAUGHT);
    let student = token(api::Role::Student, "u005", &[]);
    for (path, expected) in &expected {
        let Some(course) = path.strip_prefix("/v1/courses/").and_then(|p| p.split('/').next()) else {
            continue;
        };
        if TAUGHT.contains(&course) {
            let (status, got) = fresh.get(path, &instructor).await;
            check.check(&format!("[instructor of {course}] GET {path}"), expected, status, &got);
        } else {
            let (status, _) = fresh.get(path, &instructor).await;
            check.status(
                &format!("[instructor of c1, c2] GET {path}"),
                StatusCode::FORBIDDEN,
                status,
            );
        }
        let (status, _) = fresh.get(path, &student).await;
        check.status(&format!("[student u005] GET {path}"), StatusCode::FORBIDDEN, status);
    }
    let (from, to) = (today - Days::new(DATA_DAYS as u64 - 1), today);
    let own = format!("/v1/users/u005/time-on-task?from={from}&to={to}");
    let (status, got) = fresh.get(&own, &student).await;
    check.check(
        &format!("[student u005] GET {own}"),
        &truth.user_time("u005", None, from, to),
        status,
        &got,
    );
    for (who, credential) in [("student u005", &student), ("instructor", &instructor)] {
        let path = format!("/v1/users/u006/time-on-task?from={from}&to={to}");
        check.status(
            &format!("[{who}] GET {path}"),
            StatusCode::FORBIDDEN,
            fresh.get(&path, credential).await.0,
        );
    }
    let (status, _) = fresh.put("/v1/courses/c5", &instructor, &c5_override()).await;
    check.status("[instructor] PUT /v1/courses/c5", StatusCode::FORBIDDEN, status);

    // 4. An admin replaces c5's catalog entry: its items (drop-off) and total (progress, behind).
    let admin = token(api::Role::Admin, "admin", &[]);
    let (status, body) = fresh.put("/v1/courses/c5", &admin, &c5_override()).await;
    assert!(status.is_success(), "PUT /v1/courses/c5 as an admin: {status} {body}");
    let replaced = Entry {
        items: Some(["l1", "v51", "l2", "l3", "q1", "l5", "l6"].map(String::from).to_vec()),
        total_lessons: Some(4),
    };
    let overridden = Truth::new(
        &events,
        today,
        BTreeMap::from([("c5".to_owned(), replaced)]),
        &arrival,
        Wrong::Nothing,
    );
    let c5 = overridden.answers(&["c5"], &[]);
    for (path, expected) in &c5 {
        let (status, got) = fresh.get(path, READ_KEY).await;
        check.check(&format!("[after PUT c5] GET {path}"), expected, status, &got);
    }
    let (_, median) = overridden.at_risk("c5", &Rules::DEFAULT);
    assert!(median.is_number(), "c5 has a total after the PUT");

    assert_eq!(
        Utc::now().date_naive(),
        today,
        "the UTC date changed during the test (\"today\" moved): run it again"
    );
    eprintln!("done in {:?}", started.elapsed());
    assert!(
        check.mismatches.is_empty(),
        "seed {seed}: {} mismatches in {} answers (brute force = expected, api = got); each printed above as MISMATCH",
        check.mismatches.len(),
        check.answers,
    );
    eprintln!("seed {seed}: {} answers of the api all exact", check.answers);
}

/// Polls the first api until it answers every path as `answers` does (its cache dropped by the
/// workers' change notifications), for at most 10 s; returns the paths it still answers otherwise.
async fn eventually_the_same(api: &Api, answers: &HashMap<String, Value>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stale = Vec::new();
        for (path, expected) in answers {
            let (_, got) = api.get(path, READ_KEY).await;
            if reasons_in_table_order(got) != *expected {
                stale.push(path.clone());
            }
        }
        if stale.is_empty() || Instant::now() > deadline {
            stale.sort();
            return stale;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workload is what it should be, so that the comparisons mean something: each at-risk rule
/// flags someone, segments are rewatched and videos fully watched, sessions split, an unenrolment
/// sent late changes a learner's state, and the other situations the definitions tell apart.
fn workload_exercises_every_definition(truth: &Truth, early: &Truth, events: &[Ev], late: &[bool]) {
    let flagged: BTreeSet<String> = COURSE_IDS
        .iter()
        .flat_map(|c| truth.at_risk(c, &Rules::DEFAULT).0)
        .flat_map(|item| item["reasons"].as_array().unwrap().clone())
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        flagged,
        RULES.iter().map(|r| (*r).to_owned()).collect(),
        "every at-risk rule flags someone"
    );
    let videos: Vec<Value> = COURSE_IDS
        .iter()
        .flat_map(|c| truth.videos(c)["items"].as_array().unwrap().clone())
        .collect();
    assert!(
        videos.iter().any(|v| v["full_views"].as_u64() > Some(0)),
        "someone watches a video fully"
    );
    assert!(
        videos.iter().any(|v| v["full_views"].as_u64() < v["viewers"].as_u64()),
        "someone watches a video in part"
    );
    assert!(
        videos
            .iter()
            .flat_map(|v| v["segments"].as_array().unwrap())
            .any(|s| s["rewatched"].as_u64() > Some(0)),
        "someone rewatches a segment"
    );
    assert!(
        events.iter().any(|e| e.properties.contains_key("segments")),
        "some events carry xAPI segments"
    );
    let series = truth.course_time("c1", truth.today - Days::new(DATA_DAYS as u64 - 1), truth.today);
    let learners_days: u64 = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["learners"].as_u64().unwrap())
        .sum();
    assert!(
        series["totals"]["sessions"].as_u64() > Some(learners_days),
        "sessions split within a learner's day: {}",
        series["totals"]
    );
    // A late unenrolment changed a learner's state: enrolled on the events in time order,
    // unenrolled once it arrived.
    let changed = COURSE_IDS.iter().any(|c| {
        let (before, after) = (early.enrolment(c), truth.enrolment(c));
        after.iter().any(|(u, enrolled)| {
            !enrolled
                && before.get(u) == Some(&true)
                && events
                    .iter()
                    .zip(late)
                    .any(|(e, l)| *l && e.id == *u && e.name == "course_unenrolled" && e.course().as_deref() == Some(c))
        })
    });
    assert!(changed, "a late unenrolment changes a learner's state");
    let difficulty: Vec<Value> = COURSE_IDS
        .iter()
        .flat_map(|c| truth.difficulty(c)["items"].as_array().unwrap().clone())
        .collect();
    assert!(
        difficulty.iter().any(|i| i["never_correct"].as_u64() > Some(0)),
        "someone is never right"
    );
    assert!(
        difficulty
            .iter()
            .any(|i| i["mean_attempts_until_correct"].as_f64() > Some(1.0)),
        "someone is right after being wrong"
    );
    let drop = truth.drop_off("c3");
    assert!(
        drop["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["learners"] == 0 && i["from_previous"] == 0.0),
        "an item nobody reaches: {drop}"
    );
    assert!(
        truth.drop_off("c4")["uncatalogued"].as_array().unwrap().len() > 3,
        "a course without items has uncatalogued items only"
    );
    let grades: Vec<Value> = COURSE_IDS.iter().map(|c| truth.grades(c, 10, 0.5)).collect();
    assert!(
        grades.iter().all(|g| g["graded"].as_u64() > Some(2)),
        "every course has grades"
    );
    // c2's total comes from its older publication, sent late.
    assert_eq!(early.catalog("c2").total_lessons, None);
    assert_eq!(truth.catalog("c2").total_lessons, Some(4));
    assert_eq!(truth.catalog("c2").items.unwrap()[7], "v22");
    let (items, median) = truth.at_risk("c2", &Rules::DEFAULT);
    assert!(
        median.is_number() && !items.is_empty(),
        "c2's at-risk list once its total arrived"
    );
}
