//! The api's answers are exact: a seeded, generated workload (learners, anonymous visitors,
//! course funnels with drop-offs, late events, client resends) goes in through the real ingest,
//! workers and servers, and every answer of the api is compared with a brute-force computation
//! over the distinct generated events, written here from the definitions of docs/contract.md §6 and the
//! api's documentation, not from its code. `EXACTNESS_SEED=<n>` replays a workload.
//!
//! And the api degrades as documented: a query past the statement timeout, or PostgreSQL out of
//! reach, answers 503 with the reason and `Retry-After`, promptly.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::{DateTime, Datelike as _, Days, NaiveDate, SecondsFormat, TimeDelta, Utc};
use clap::Parser as _;
use futures::StreamExt as _;
use reqwest::{header, StatusCode};
use serde_json::{json, Map, Value};
use test_support::{eventually, TestEnv};
use tokio_util::sync::CancellationToken;

const WRITE_KEY: &str = "wk_exactness";
const READ_KEY: &str = "rk_exactness";
const PROJECT: &str = "exact";
const DEFAULT_SEED: u64 = 20_261_203;
/// The group a third of the learners join (its id needs escaping in a query string).
const GROUP: &str = "class 1/a";

/// Days of generated data: `day(0)` to `day(DATA_DAYS - 1)`, which is yesterday, so that the
/// latest cohorts' D7 and D30 are still in the future.
const DATA_DAYS: i64 = 40;
const LEARNERS: usize = 300;
const VISITORS: usize = 70;

// ---------------------------------------------------------------------------------------------
// The services.

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

async fn start_api(env: &TestEnv, database_url: &str, extra: &[&str]) -> Api {
    let mut args = vec![
        "api",
        "--database-url",
        database_url,
        "--nats-url",
        &env.nats.url,
        "--nats-stream",
        &env.nats.stream,
        "--nats-subject-prefix",
        &env.nats.subject_prefix,
        "--read-key",
        READ_KEY,
        "--project",
        PROJECT,
    ];
    args.extend_from_slice(extra);
    let config = api::Config::parse_from(args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = api::App::build(config).await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.serve(listener, shutdown.clone()));
    Api {
        base,
        // No request of these tests may hang: a hung one fails the test instead.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
    }
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(READ_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn funnel(&self, request: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/funnels", self.base))
            .bearer_auth(READ_KEY)
            .json(request)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/funnels {request}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "POST /v1/funnels {request}: {body}");
        body
    }
}

/// Ingest and workers in-process on this test's stream and databases.
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

async fn pipeline(workers: usize) -> Pipeline {
    let env = TestEnv::new().await;
    let shutdown = CancellationToken::new();
    for _ in 0..workers {
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
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
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
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// One distinct generated event, as the client sent it.
#[derive(Debug, Clone)]
struct Ev {
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    /// An alias call's earlier id.
    previous_id: Option<String>,
    /// Segment call type: track, page, identify, alias, or group (joining [`GROUP`]).
    kind: &'static str,
    /// The name as sent (track calls; some in other spellings than snake_case).
    sent_name: String,
    /// The event's name once normalised (docs/contract.md §4): what every metric names it by.
    name: String,
    ts: DateTime<Utc>,
    properties: Map<String, Value>,
}

impl Ev {
    /// Who metrics count: the user id, else the anonymous id.
    fn key(&self) -> &str {
        self.user_id.as_deref().or(self.anonymous_id.as_deref()).unwrap()
    }

    fn day(&self) -> NaiveDate {
        self.ts.date_naive()
    }

    /// A property as stored: page calls carry their path as `page` too.
    fn property(&self, name: &str) -> Option<&Value> {
        match (self.kind, name) {
            ("page", "page") => self.properties.get("page").or_else(|| self.properties.get("path")),
            _ => self.properties.get(name),
        }
    }

    /// An id-like property: strings as they are, numbers printed.
    fn id(&self, name: &str) -> Option<String> {
        match self.property(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn course(&self) -> Option<String> {
        self.id("course_id")
    }

    /// Seconds of learning of a lesson completion: positive amounts, rounded.
    fn seconds(&self) -> i64 {
        if self.name != "lesson_completed" {
            return 0;
        }
        match self.property("time_spent_s").and_then(Value::as_f64) {
            Some(s) if s > 0.0 && s < 1e9 => s.round() as i64,
            _ => 0,
        }
    }

    fn json(&self) -> Value {
        let mut event = json!({
            "type": self.kind,
            "messageId": self.message_id,
            "timestamp": self.ts.to_rfc3339_opts(SecondsFormat::Secs, true),
            "properties": self.properties,
        });
        if self.kind == "track" {
            event["event"] = self.sent_name.clone().into();
        }
        if self.kind == "identify" {
            event["traits"] = json!({"plan": "free"});
        }
        if self.kind == "group" {
            (event["groupId"], event["traits"]) = (GROUP.into(), json!({"name": "Class 1A"}));
        }
        if let Some(user) = &self.user_id {
            event["userId"] = user.clone().into();
        }
        if let Some(anonymous) = &self.anonymous_id {
            event["anonymousId"] = anonymous.clone().into();
        }
        if let Some(previous) = &self.previous_id {
            event["previousId"] = previous.clone().into();
        }
        event
    }
}

#[derive(Debug, Clone)]
struct Who {
    user_id: Option<String>,
    anonymous_id: Option<String>,
}

const COURSES: [&str; 4] = ["c1", "c2", "c3", "7"];
const PAGES: [&str; 5] = ["/", "/courses", "/pricing", "/blog/rust", "/account"];
const LESSONS: u32 = 12;

struct Generator {
    rng: fastrand::Rng,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    events: Vec<Ev>,
    /// Event times (seconds) taken: every event has a time of its own, so that "in that order"
    /// never depends on how ties are broken, whichever ids turn out to be one person.
    taken: HashSet<i64>,
}

/// Title Case With Spaces: one of the spellings ingest normalises back to snake_case.
fn spelled(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Generator {
    fn new(seed: u64, today: NaiveDate) -> Self {
        let end = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            start: end - TimeDelta::days(DATA_DAYS),
            end,
            events: Vec::new(),
            taken: HashSet::new(),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn day_start(&self, day: i64) -> DateTime<Utc> {
        self.start + TimeDelta::days(day)
    }

    /// Records an event at `ts` (moved a second on where the user has one then); None when
    /// outside the data's days.
    fn push(
        &mut self,
        who: &Who,
        kind: &'static str,
        name: &str,
        ts: DateTime<Utc>,
        properties: Value,
    ) -> Option<DateTime<Utc>> {
        if ts < self.start {
            return None;
        }
        let taken = &mut self.taken;
        let mut second = ts.timestamp();
        while taken.contains(&second) {
            second += 1;
        }
        if second >= self.end.timestamp() {
            return None;
        }
        taken.insert(second);
        let ts = DateTime::from_timestamp(second, 0).unwrap();
        let sent_name = if kind == "track" && self.chance(0.1) {
            spelled(name)
        } else {
            name.to_owned()
        };
        let Value::Object(properties) = properties else {
            unreachable!()
        };
        self.events.push(Ev {
            message_id: format!("ev-{:05}-{:08x}", self.events.len(), self.rng.u32(..)),
            user_id: who.user_id.clone(),
            anonymous_id: who.anonymous_id.clone(),
            previous_id: None,
            kind,
            sent_name,
            name: name.to_owned(),
            ts,
            properties,
        });
        Some(ts)
    }

    fn track(&mut self, who: &Who, name: &str, ts: DateTime<Utc>, properties: Value) -> Option<DateTime<Utc>> {
        self.push(who, "track", name, ts, properties)
    }

    fn page(&mut self, who: &Who, ts: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let page = PAGES[self.rng.usize(..PAGES.len())];
        self.push(who, "page", "page_view", ts, json!({ "path": page }))
    }

    /// The time between two steps of a journey: mostly minutes, some exactly at the 1 h and 1 d
    /// windows' edges (and a second past them), some hours, some days.
    fn gap(&mut self) -> TimeDelta {
        let r = self.rng.f64();
        let seconds = if r < 0.5 {
            self.rng.i64(20..3_000)
        } else if r < 0.55 {
            3_600
        } else if r < 0.58 {
            3_601
        } else if r < 0.8 {
            self.rng.i64(3_600..30 * 3_600)
        } else if r < 0.84 {
            86_400
        } else if r < 0.86 {
            86_401
        } else {
            self.rng.i64(86_400..10 * 86_400)
        };
        TimeDelta::seconds(seconds)
    }

    fn course(&mut self) -> &'static str {
        let r = self.rng.f64();
        COURSES[if r < 0.4 {
            0
        } else if r < 0.7 {
            1
        } else if r < 0.9 {
            2
        } else {
            3
        }]
    }

    /// The course id as a client sends it: course "7" sometimes as a number.
    fn course_value(&mut self, course: &str) -> Value {
        match course.parse::<i64>() {
            Ok(n) if self.rng.bool() => n.into(),
            _ => course.into(),
        }
    }

    /// A learner's way through one course: view → product view → cart → purchase → enrolment →
    /// lessons (with quizzes) → completion, dropping off at every step.
    fn journey(&mut self, who: &Who, course: &str, t: DateTime<Utc>) -> Option<()> {
        let c = self.course_value(course);
        let pro = self.rng.bool();
        let (plan, amount) = if pro { ("pro", 99) } else { ("basic", 49) };
        let mut t = self.track(who, "course_viewed", t, json!({ "course_id": c }))?;
        if !self.chance(0.75) {
            return None;
        }
        let gap = self.gap();
        t = self.track(who, "product_view", t + gap, json!({ "course_id": c, "plan": plan }))?;
        if !self.chance(0.6) {
            return None;
        }
        let gap = self.gap();
        t = self.track(
            who,
            "add_to_cart",
            t + gap,
            json!({ "course_id": c, "plan": plan, "amount": amount }),
        )?;
        if !self.chance(0.7) {
            return None;
        }
        let currency = if self.chance(0.3) { "EUR" } else { "USD" };
        let gap = self.gap();
        t = self.track(
            who,
            "purchase",
            t + gap,
            json!({ "course_id": c, "plan": plan, "amount": amount, "currency": currency }),
        )?;
        if !self.chance(0.85) {
            return None;
        }
        let gap = self.gap();
        t = self.track(who, "course_enrolled", t + gap, json!({ "course_id": c }))?;
        for lesson in 1..=LESSONS {
            if !self.chance(0.88) {
                return None;
            }
            let module = format!("m{}", lesson.div_ceil(2));
            let lesson_id = format!("l{lesson}");
            let pause = if self.chance(0.1) {
                self.gap()
            } else {
                TimeDelta::seconds(self.rng.i64(60..7_200))
            };
            t = self.track(
                who,
                "lesson_started",
                t + pause,
                json!({ "course_id": c, "module_id": module, "lesson_id": lesson_id }),
            )?;
            for _ in 0..(1 + usize::from(self.chance(0.05))) {
                let spent: Value = if self.chance(0.1) {
                    (f64::from(self.rng.u32(300..18_000)) / 10.0 + 0.01).into()
                } else {
                    self.rng.i64(30..1_800).into()
                };
                let mut properties = json!({ "course_id": c, "lesson_id": lesson_id, "time_spent_s": spent });
                if !self.chance(0.05) {
                    properties["module_id"] = module.clone().into();
                }
                let pause = TimeDelta::seconds(self.rng.i64(60..3_600));
                t = self.track(who, "lesson_completed", t + pause, properties)?;
            }
            if lesson % 4 == 0 {
                let score = self.rng.u32(0..=10);
                let pause = TimeDelta::seconds(self.rng.i64(30..600));
                t = self.track(
                    who,
                    "quiz_submitted",
                    t + pause,
                    json!({ "course_id": c, "quiz_id": format!("q{lesson}"), "score": score, "max_score": 10,
                            "passed": score >= 6 }),
                )?;
            }
        }
        if self.chance(0.8) {
            let gap = self.gap();
            self.track(who, "course_completed", t + gap, json!({ "course_id": c }))?;
        }
        Some(())
    }

    fn generate(mut self) -> Vec<Ev> {
        for i in 0..LEARNERS {
            let user = format!("u{i:03}");
            let first = (DATA_DAYS as f64 * self.rng.f64().powf(1.4)) as i64;
            let p = 0.02 + 0.22 * self.rng.f64();
            let days: Vec<i64> = std::iter::once(first)
                .chain((first + 1..DATA_DAYS).filter(|_| self.rng.f64() < p))
                .collect();
            // Some browse anonymously before signing up (another user key: no identity
            // stitching), and send both ids on their first day.
            let anonymous = self.chance(0.25).then(|| format!("anon-{i:03}"));
            if let Some(anonymous) = &anonymous {
                let visitor = Who {
                    user_id: None,
                    anonymous_id: Some(anonymous.clone()),
                };
                let (before, at) = (i64::from(self.rng.bool()), self.rng.i64(0..20_000));
                let t = self.day_start(first - before) + TimeDelta::seconds(at);
                self.page(&visitor, t);
                if self.chance(0.5) {
                    let course = self.course();
                    let c = self.course_value(course);
                    self.track(
                        &visitor,
                        "course_viewed",
                        t + TimeDelta::seconds(90),
                        json!({ "course_id": c }),
                    );
                }
            }
            let learner = Who {
                user_id: Some(user.clone()),
                anonymous_id: None,
            };
            for (n, day) in days.iter().enumerate() {
                let who = if n == 0 {
                    Who {
                        user_id: Some(user.clone()),
                        anonymous_id: anonymous.clone(),
                    }
                } else {
                    learner.clone()
                };
                let at = self.rng.i64(21_600..79_200);
                let mut t = self.day_start(*day) + TimeDelta::seconds(at);
                if n == 0 && self.chance(0.3) {
                    self.push(&who, "identify", "identify", t - TimeDelta::seconds(30), json!({}));
                }
                if self.chance(0.8) {
                    self.track(&who, "login", t, json!({}));
                }
                for _ in 0..self.rng.usize(0..3) {
                    t += TimeDelta::seconds(self.rng.i64(10..900));
                    self.page(&who, t);
                }
                if self.chance(0.05) {
                    let badge = format!("b{}", self.rng.u32(1..4));
                    self.track(
                        &who,
                        "badge_earned",
                        t + TimeDelta::seconds(5),
                        json!({ "badge_id": badge, "points": 10 }),
                    );
                }
            }
            for j in 0..(1 + usize::from(self.chance(0.4))) {
                let day = if j == 0 && self.chance(0.6) {
                    first
                } else {
                    days[self.rng.usize(..days.len())]
                };
                let course = self.course();
                let at = self.rng.i64(0..86_000);
                let t = self.day_start(day) + TimeDelta::seconds(at);
                self.journey(&learner, course, t);
            }
            // Coming back to a course page later: a second entry a funnel must not restart on.
            if self.chance(0.3) {
                let day = days[self.rng.usize(..days.len())];
                let course = self.course();
                let c = self.course_value(course);
                let at = self.rng.i64(0..86_000);
                let t = self.day_start(day) + TimeDelta::seconds(at);
                self.track(&learner, "course_viewed", t, json!({ "course_id": c }));
            }
        }
        for j in 0..VISITORS {
            let visitor = Who {
                user_id: None,
                anonymous_id: Some(format!("visitor-{j:02}")),
            };
            for _ in 0..self.rng.usize(1..=3) {
                let (day, at) = (self.rng.i64(0..DATA_DAYS), self.rng.i64(0..80_000));
                let mut t = self.day_start(day) + TimeDelta::seconds(at);
                for _ in 0..self.rng.usize(1..=3) {
                    self.page(&visitor, t);
                    t += TimeDelta::seconds(self.rng.i64(5..600));
                }
                if self.chance(0.7) {
                    let course = self.course();
                    let c = self.course_value(course);
                    t += self.gap();
                    self.track(&visitor, "course_viewed", t, json!({ "course_id": c }));
                    t += self.gap();
                    if self.chance(0.4) {
                        self.track(&visitor, "product_view", t, json!({ "course_id": c, "plan": "basic" }));
                    }
                    t += self.gap();
                    if self.chance(0.15) {
                        let cart = json!({ "course_id": c, "plan": "basic", "amount": 49 });
                        self.track(&visitor, "add_to_cart", t, cart);
                    }
                }
            }
        }
        self.identities();
        self.events
    }

    /// The links of docs/contract.md §6 "One person" beyond the sign-ups above (an `identify`
    /// with both ids): learners who change their id (an alias, then their later events under
    /// the new id), two learners signing in on one shared device (the second refused), an alias
    /// between two learners (refused), and sign-ins from a placeholder anonymous id (refused).
    fn identities(&mut self) {
        let mut rng = fastrand::Rng::with_seed(self.rng.u64(..));
        let mut span: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
        for e in &self.events {
            if let Some(user) = &e.user_id {
                let (first, last) = span.entry(user.clone()).or_insert((e.ts, e.ts));
                (*first, *last) = ((*first).min(e.ts), (*last).max(e.ts));
            }
        }
        let user = |i: usize| format!("u{i:03}");
        for i in 0..LEARNERS {
            let Some((first, last)) = span.get(&user(i)).copied() else {
                continue;
            };
            if i % 17 == 5 && last - first > TimeDelta::days(2) {
                // A new id from halfway on: anon → user → renamed user is one person.
                let renamed = format!("{}-r", user(i));
                let at = first + (last - first) / 2;
                let who = Who {
                    user_id: Some(renamed.clone()),
                    anonymous_id: None,
                };
                if let Some(at) = self.push(&who, "alias", "alias", at, json!({})) {
                    self.events.last_mut().unwrap().previous_id = Some(user(i));
                    for e in &mut self.events {
                        if e.user_id.as_deref() == Some(user(i).as_str()) && e.ts > at {
                            e.user_id = Some(renamed.clone());
                        }
                    }
                }
            }
            if i % 31 == 2 && i + 1 < LEARNERS {
                let kiosk = format!("kiosk-{i:03}");
                let visitor = Who {
                    user_id: None,
                    anonymous_id: Some(kiosk.clone()),
                };
                let at = first - TimeDelta::seconds(rng.i64(600..7_200));
                self.push(&visitor, "page", "page_view", at, json!({ "path": "/" }));
                for j in [i, i + 1] {
                    if let Some((first, _)) = span.get(&user(j)).copied() {
                        let who = Who {
                            user_id: Some(user(j)),
                            anonymous_id: Some(kiosk.clone()),
                        };
                        self.push(&who, "identify", "identify", first - TimeDelta::seconds(20), json!({}));
                    }
                }
            }
            if i % 29 == 11 && i + 1 < LEARNERS {
                if let Some((_, other_last)) = span.get(&user(i + 1)).copied() {
                    let who = Who {
                        user_id: Some(user(i + 1)),
                        anonymous_id: None,
                    };
                    let at = last.max(other_last) - TimeDelta::seconds(rng.i64(60..3_600));
                    if self.push(&who, "alias", "alias", at, json!({})).is_some() {
                        self.events.last_mut().unwrap().previous_id = Some(user(i));
                    }
                }
            }
            if i % 37 == 4 {
                let who = Who {
                    user_id: Some(user(i)),
                    anonymous_id: Some("undefined".into()),
                };
                self.push(&who, "identify", "identify", first + TimeDelta::seconds(5), json!({}));
            }
        }
    }
}

/// The order in which the events reach ingest: in time order in batches, except the late ones
/// (offline devices; among them whole first days of some learners, so their cohort moves
/// earlier), sent after everything else; and with client resends (the same event, same
/// messageId) in later batches, a few inside the same request.
fn sending_plan(events: &[Ev], rng: &mut fastrand::Rng) -> (Vec<Vec<usize>>, Vec<Vec<usize>>, usize) {
    let mut first_day: HashMap<&str, NaiveDate> = HashMap::new();
    for e in events {
        let day = first_day.entry(e.key()).or_insert(e.day());
        *day = (*day).min(e.day());
    }
    let late_users: HashSet<String> = (0..LEARNERS)
        .filter(|i| i % 10 == 3)
        .map(|i| format!("u{i:03}"))
        .collect();
    let late: Vec<bool> = events
        .iter()
        .map(|e| (late_users.contains(e.key()) && first_day[e.key()] == e.day()) || rng.f64() < 0.08)
        .collect();
    let mut on_time: Vec<usize> = (0..events.len()).filter(|i| !late[*i]).collect();
    on_time.sort_by_key(|i| events[*i].ts);
    let mut late: Vec<usize> = (0..events.len()).filter(|i| late[*i]).collect();
    rng.shuffle(&mut late);
    let mut normal: Vec<Vec<usize>> = on_time.chunks(200).map(<[usize]>::to_vec).collect();
    let mut after: Vec<Vec<usize>> = late.chunks(200).map(<[usize]>::to_vec).collect();
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
// The brute force: each metric straight from its definition, over the distinct events.

struct Truth<'a> {
    events: &'a [Ev],
    /// Each id's person (a label shared by the ids of one person; ids of their own are absent).
    persons: &'a HashMap<String, String>,
    /// Users with an event, by day.
    active: BTreeMap<NaiveDate, BTreeSet<&'a str>>,
    /// Each user's first active day, over all their events.
    first_day: HashMap<&'a str, NaiveDate>,
    today: NaiveDate,
}

fn d(day: NaiveDate, n: i64) -> NaiveDate {
    if n >= 0 {
        day + Days::new(n as u64)
    } else {
        day - Days::new(n.unsigned_abs())
    }
}

fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |x| *x <= to)
}

fn ratio(a: i64, b: i64) -> Value {
    if b > 0 {
        json!(a as f64 / b as f64)
    } else {
        Value::Null
    }
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A funnel step: an event name, optionally narrowed to a course and to property values.
#[derive(Clone)]
struct Step {
    /// As sent in the request (any spelling).
    sent: &'static str,
    event: &'static str,
    course: Option<&'static str>,
    properties: Vec<(&'static str, Value)>,
}

fn step(event: &'static str) -> Step {
    Step {
        sent: event,
        event,
        course: None,
        properties: Vec::new(),
    }
}

impl Step {
    fn spelled(mut self, sent: &'static str) -> Self {
        self.sent = sent;
        self
    }

    fn course(mut self, course: &'static str) -> Self {
        self.course = Some(course);
        self
    }

    fn property(mut self, name: &'static str, value: Value) -> Self {
        self.properties.push((name, value));
        self
    }

    fn request(&self) -> Value {
        if self.course.is_none() && self.properties.is_empty() {
            return self.sent.into();
        }
        let mut step = json!({ "event": self.sent });
        if let Some(course) = self.course {
            step["course_id"] = course.into();
        }
        if !self.properties.is_empty() {
            step["properties"] = self
                .properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
        }
        step
    }

    fn matches(&self, e: &Ev) -> bool {
        e.name == self.event
            && self.course.is_none_or(|c| e.course().as_deref() == Some(c))
            && self
                .properties
                .iter()
                .all(|(k, want)| e.property(k).is_some_and(|v| same_scalar(v, want)))
    }
}

/// Users reaching each step and the gaps (ms) between consecutive steps of those who did.
struct FunnelTruth {
    reached: Vec<i64>,
    gaps: Vec<Vec<i64>>,
}

fn median_seconds(gaps: &[i64]) -> Value {
    if gaps.is_empty() {
        return Value::Null;
    }
    let mut sorted = gaps.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let ms = if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0
    };
    json!(ms / 1000.0)
}

/// Placeholder ids that link nothing (docs/contract.md §6 "One person"; the workload uses one).
const PLACEHOLDERS: [&str; 2] = ["undefined", "null"];

/// The persons of docs/contract.md §6 "One person", by brute force: every link (an `identify`
/// with both ids, an `alias`) in (time, messageId) order; an identify is refused when the
/// anonymous id's person already has an id that was an event's userId earlier, an alias when
/// both persons have. Returns each linked id's person label, and the refused links' messageIds.
fn persons(events: &[Ev]) -> (HashMap<String, String>, BTreeSet<String>) {
    let mut identified: HashMap<&str, (DateTime<Utc>, &str)> = HashMap::new();
    for e in events {
        if let Some(user) = &e.user_id {
            let first = identified.entry(user).or_insert((e.ts, &e.message_id));
            *first = (*first).min((e.ts, &e.message_id));
        }
    }
    let mut links: Vec<(&Ev, &str, &str)> = events
        .iter()
        .filter_map(|e| {
            let from = match e.kind {
                "identify" => e.anonymous_id.as_deref()?,
                "alias" => e.previous_id.as_deref()?,
                _ => return None,
            };
            let to = e.user_id.as_deref()?;
            (from != to).then_some((e, from, to))
        })
        .collect();
    links.sort_by(|a, b| (a.0.ts, &a.0.message_id).cmp(&(b.0.ts, &b.0.message_id)));
    let mut person: HashMap<String, String> = HashMap::new();
    let mut refused = BTreeSet::new();
    for (e, from, to) in links {
        if PLACEHOLDERS.contains(&from) || PLACEHOLDERS.contains(&to) {
            refused.insert(e.message_id.clone());
            continue;
        }
        let of = |person: &HashMap<String, String>, id: &str| person.get(id).cloned().unwrap_or_else(|| id.to_owned());
        let (p_from, p_to) = (of(&person, from), of(&person, to));
        if p_from == p_to {
            continue;
        }
        let before = |p: &str| {
            identified
                .iter()
                .any(|(id, first)| of(&person, id) == p && *first < (e.ts, e.message_id.as_str()))
        };
        let no = match e.kind {
            "identify" => before(&p_from),
            _ => before(&p_from) && before(&p_to),
        };
        if no {
            refused.insert(e.message_id.clone());
            continue;
        }
        for label in person.values_mut().filter(|l| **l == p_from) {
            label.clone_from(&p_to);
        }
        person.insert(from.to_owned(), p_to.clone());
        person.insert(p_from, p_to.clone());
        person.insert(to.to_owned(), p_to);
    }
    (person, refused)
}

impl<'a> Truth<'a> {
    fn new(events: &'a [Ev], persons: &'a HashMap<String, String>, today: NaiveDate) -> Self {
        let mut truth = Self {
            events,
            persons,
            active: BTreeMap::new(),
            first_day: HashMap::new(),
            today,
        };
        for e in events {
            let who = truth.who(e);
            truth.active.entry(e.day()).or_default().insert(who);
            let first = truth.first_day.entry(who).or_insert(e.day());
            *first = (*first).min(e.day());
        }
        truth
    }

    /// Whom distinct counts count for an event: its id's person.
    fn who(&self, e: &'a Ev) -> &'a str {
        self.persons.get(e.key()).map_or(e.key(), String::as_str)
    }

    fn distinct_users(&self, from: NaiveDate, to: NaiveDate) -> usize {
        let mut users: BTreeSet<&str> = BTreeSet::new();
        for (_, day) in self.active.range(from..=to) {
            users.extend(day.iter());
        }
        users.len()
    }

    fn active_users_daily(&self, from: NaiveDate, to: NaiveDate) -> Value {
        days(from, to)
            .map(|x| {
                json!({
                    "date": x.to_string(),
                    "dau": self.distinct_users(x, x),
                    "wau": self.distinct_users(d(x, -6), x),
                    "mau": self.distinct_users(d(x, -29), x),
                })
            })
            .collect()
    }

    /// Distinct users of each calendar week (from Monday) or month, clipped to the range.
    fn active_users_buckets(&self, from: NaiveDate, to: NaiveDate, interval: &str) -> Value {
        let bucket = |x: NaiveDate| match interval {
            "week" => (x.iso_week().year(), x.iso_week().week()),
            _ => (x.year(), x.month()),
        };
        let mut out: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for x in days(from, to) {
            match out.last_mut() {
                Some((start, end)) if bucket(*start) == bucket(x) => *end = x,
                _ => out.push((x, x)),
            }
        }
        out.into_iter()
            .map(|(start, end)| json!({"start": start.to_string(), "active_users": self.distinct_users(start, end)}))
            .collect()
    }

    /// Cohorts by first active day in the range: day-N retention is the share of the cohort
    /// active on exactly cohort + N, unknown (null) while that day is after today.
    fn retention(&self, from: NaiveDate, to: NaiveDate, matrix: Option<i64>) -> Value {
        let mut cohorts = Vec::new();
        for cohort in days(from, to) {
            let members: Vec<&str> = self
                .first_day
                .iter()
                .filter(|(_, first)| **first == cohort)
                .map(|(user, _)| *user)
                .collect();
            if members.is_empty() {
                continue;
            }
            let size = members.len() as i64;
            let on = |n: i64| -> Option<i64> {
                let later = d(cohort, n);
                (later <= self.today).then(|| {
                    let active = self.active.get(&later);
                    members
                        .iter()
                        .filter(|u| active.is_some_and(|a| a.contains(*u)))
                        .count() as i64
                })
            };
            let mut entry = json!({ "cohort": cohort.to_string(), "size": size });
            for n in [1, 7, 30] {
                entry[format!("d{n}")] = match on(n) {
                    Some(users) => json!({ "users": users, "rate": users as f64 / size as f64 }),
                    None => json!({ "users": 0, "rate": null }),
                };
            }
            if let Some(n) = matrix {
                entry["matrix"] = (0..=n).map(|k| json!(on(k))).collect();
            }
            cohorts.push(entry);
        }
        json!({ "days": [1, 7, 30], "matrix_days": matrix, "cohorts": cohorts })
    }

    fn in_range(&self, from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = &'a Ev> {
        self.events.iter().filter(move |e| e.day() >= from && e.day() <= to)
    }

    fn top(items: HashMap<String, i64>, limit: usize, name: &str, count: &str) -> Value {
        let mut items: Vec<(String, i64)> = items.into_iter().collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        items
            .into_iter()
            .take(limit)
            .map(|(n, c)| json!({ name: n, count: c }))
            .collect()
    }

    fn top_events(&self, from: NaiveDate, to: NaiveDate, limit: usize) -> Value {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for e in self.in_range(from, to) {
            *counts.entry(e.name.clone()).or_default() += 1;
        }
        Self::top(counts, limit, "event", "events")
    }

    fn top_pages(&self, from: NaiveDate, to: NaiveDate, limit: usize) -> Value {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for e in self.in_range(from, to).filter(|e| e.name == "page_view") {
            if let Some(Value::String(page)) = e.property("page") {
                *counts.entry(page.clone()).or_default() += 1;
            }
        }
        Self::top(counts, limit, "page", "views")
    }

    /// `GET /v1/courses`: every course with activity, its learners enrolled and, of them, completed.
    fn courses(&self) -> Value {
        let mut learners: BTreeMap<String, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
        for e in self.events {
            let Some(course) = e.course() else { continue };
            let (enrolled, completed) = learners.entry(course).or_default();
            match e.name.as_str() {
                "course_enrolled" => enrolled.insert(e.key()),
                "course_completed" => completed.insert(e.key()),
                _ => false,
            };
        }
        learners
            .into_iter()
            .map(|(course, (enrolled, completed))| {
                let done = enrolled.intersection(&completed).count() as i64;
                json!({
                    "course_id": course, "enrolled": enrolled.len(), "completed": done,
                    "completion_rate": ratio(done, enrolled.len() as i64),
                })
            })
            .collect()
    }

    /// docs/contract.md §6 "Course daily analytics": per day and for the range.
    fn course(&self, course: &str, from: NaiveDate, to: NaiveDate) -> Value {
        let of_course: Vec<&Ev> = self
            .events
            .iter()
            .filter(|e| e.course().as_deref() == Some(course))
            .collect();
        // Each learner's first enrolment and first completion, whenever they were.
        let mut enrolled: HashMap<&str, NaiveDate> = HashMap::new();
        let mut completed: HashMap<&str, NaiveDate> = HashMap::new();
        for e in &of_course {
            let first = match e.name.as_str() {
                "course_enrolled" => &mut enrolled,
                "course_completed" => &mut completed,
                _ => continue,
            };
            let at = first.entry(e.key()).or_insert(e.day());
            *at = (*at).min(e.day());
        }
        let mut series = Vec::new();
        let (mut viewers_all, mut learners_all) = (BTreeSet::new(), BTreeSet::new());
        let mut sums = [0i64; 6];
        let mut last_rate = Value::Null;
        for x in days(from, to) {
            let on_day: Vec<&Ev> = of_course.iter().copied().filter(|e| e.day() == x).collect();
            let count = |name: &str| on_day.iter().filter(|e| e.name == name).count() as i64;
            let viewers: BTreeSet<&str> = on_day
                .iter()
                .filter(|e| e.name == "course_viewed")
                .map(|e| self.who(e))
                .collect();
            let learners: BTreeSet<&str> = on_day.iter().map(|e| self.who(e)).collect();
            let time: i64 = on_day.iter().map(|e| e.seconds()).sum();
            let enrolled_by = enrolled.values().filter(|at| **at <= x).count() as i64;
            let completed_by = enrolled
                .iter()
                .filter(|(user, at)| **at <= x && completed.get(*user).is_some_and(|c| *c <= x))
                .count() as i64;
            let row = [
                count("course_viewed"),
                on_day.len() as i64 - count("course_viewed"),
                count("course_enrolled"),
                count("lesson_completed"),
                count("course_completed"),
                time,
            ];
            for (sum, value) in sums.iter_mut().zip(row) {
                *sum += value;
            }
            last_rate = ratio(completed_by, enrolled_by);
            series.push(json!({
                "date": x.to_string(), "views": row[0], "unique_viewers": viewers.len(),
                "active_learners": learners.len(), "interactions": row[1], "enrollments": row[2],
                "lesson_completions": row[3], "course_completions": row[4], "time_spent_s": time,
                "avg_time_spent_s": ratio(time, learners.len() as i64),
                "enrolled_by_end_of_day": enrolled_by, "completed_by_end_of_day": completed_by,
                "completion_rate": ratio(completed_by, enrolled_by),
            }));
            viewers_all.extend(viewers);
            learners_all.extend(learners);
        }
        let mut modules: HashMap<String, i64> = HashMap::new();
        for e in of_course
            .iter()
            .filter(|e| e.name == "lesson_completed" && e.day() >= from && e.day() <= to)
        {
            if let Some(module) = e.id("module_id") {
                *modules.entry(module).or_default() += 1;
            }
        }
        json!({
            "course_id": course, "from": from.to_string(), "to": to.to_string(),
            "totals": {
                "views": sums[0], "unique_viewers": viewers_all.len(), "active_learners": learners_all.len(),
                "interactions": sums[1], "enrollments": sums[2], "lesson_completions": sums[3],
                "course_completions": sums[4], "time_spent_s": sums[5],
                "avg_time_spent_s": ratio(sums[5], learners_all.len() as i64), "completion_rate": last_rate,
            },
            "popular_modules": Self::top(modules, 5, "module_id", "lesson_completions"),
            "series": series,
        })
    }

    /// The ordered funnel: each user enters at their first event of the range matching step 1;
    /// step i is reached when steps 2..=i match strictly later events of the range, in that
    /// order, at most `window_s` after entering (the earliest such chain gives the times).
    fn funnel(&self, steps: &[Step], from: NaiveDate, to: NaiveDate, window_s: i64) -> FunnelTruth {
        let mut by_user: HashMap<&str, Vec<&Ev>> = HashMap::new();
        for e in self.in_range(from, to) {
            by_user.entry(self.who(e)).or_default().push(e);
        }
        let mut truth = FunnelTruth {
            reached: vec![0; steps.len()],
            gaps: vec![Vec::new(); steps.len()],
        };
        for events in by_user.values() {
            let Some(entered) = events.iter().filter(|e| steps[0].matches(e)).map(|e| e.ts).min() else {
                continue;
            };
            let deadline = entered + TimeDelta::seconds(window_s);
            truth.reached[0] += 1;
            let mut previous = entered;
            for (i, s) in steps.iter().enumerate().skip(1) {
                let next = events
                    .iter()
                    .filter(|e| e.ts > previous && e.ts <= deadline && s.matches(e))
                    .map(|e| e.ts)
                    .min();
                let Some(at) = next else { break };
                truth.reached[i] += 1;
                truth.gaps[i].push((at - previous).num_milliseconds());
                previous = at;
            }
        }
        truth
    }

    fn funnel_answer(&self, steps: &[Step], from: NaiveDate, to: NaiveDate, window_s: i64) -> (Value, FunnelTruth) {
        let truth = self.funnel(steps, from, to, window_s);
        let r = &truth.reached;
        let items: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut item = json!({
                    "step": i + 1,
                    "event": s.event,
                    "users": r[i],
                    "conversion_from_previous": if i == 0 { if r[0] > 0 { json!(1.0) } else { Value::Null } } else { ratio(r[i], r[i - 1]) },
                    "conversion_overall": ratio(r[i], r[0]),
                    "median_seconds_from_previous": if i == 0 { Value::Null } else { median_seconds(&truth.gaps[i]) },
                });
                if let Some(course) = s.course {
                    item["course_id"] = course.into();
                }
                if !s.properties.is_empty() {
                    item["properties"] = s.properties.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
                }
                item
            })
            .collect();
        let k = steps.len();
        let answer = json!({
            "from": from.to_string(), "to": to.to_string(), "window_seconds": window_s,
            "steps": items, "overall_conversion": ratio(r[k - 1], r[0]),
        });
        (answer, truth)
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison.

/// Every difference between what the brute force expects and what the api answered (every key of
/// `expected`; floats to 1e-9 relative, everything else exactly), with its path.
fn diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, v) in e {
                diff(&format!("{path}.{k}"), v, g.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (a, b)) in e.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            if (a - b).abs() > 1e-9 * a.abs().max(1.0) {
                out.push(format!("{path}: expected {a}, got {b}"));
            }
        }
        _ if expected == got => {}
        _ => {
            let short = |v: &Value| {
                let s = v.to_string();
                if s.len() > 1_500 {
                    format!("{}…", &s[..1_500])
                } else {
                    s
                }
            };
            out.push(format!("{path}: expected {}, got {}", short(expected), short(got)));
        }
    }
}

#[derive(Default)]
struct Checker {
    compared: usize,
    mismatches: Vec<String>,
    /// The first differences of each answer that has some, and how many it has.
    report: Vec<String>,
}

impl Checker {
    /// Compares one answer; `what` names the request and its parameters.
    fn check(&mut self, what: &str, expected: &Value, got: &Value) {
        self.compared += 1;
        let mut out = Vec::new();
        diff("", expected, got, &mut out);
        if !out.is_empty() {
            self.report.push(format!("{what}: {} differences", out.len()));
            self.report.extend(out.iter().take(5).map(|m| format!("    at {m}")));
        }
        for m in out {
            self.mismatches.push(format!("{what} at {m}"));
        }
    }

    fn finish(self, seed: u64) {
        assert!(
            self.mismatches.is_empty(),
            "seed {seed}: {} mismatches in {} answers (brute force = expected, api = got):\n{}",
            self.mismatches.len(),
            self.compared,
            self.report.join("\n")
        );
        eprintln!("seed {seed}: {} answers of the api all exact", self.compared);
    }
}

#[test]
fn the_comparison_reports_every_difference_with_its_path() {
    let mut checker = Checker::default();
    checker.check(
        "self-test",
        &json!({"a": [1, 2], "b": {"c": 0.5}, "d": null}),
        &json!({"a": [1, 3], "b": {"c": 0.5000001}, "d": 0, "extra": 1}),
    );
    checker.check("self-test", &json!([1, 2]), &json!([1]));
    assert_eq!(
        checker.mismatches,
        [
            "self-test at .a[1]: expected 2, got 3",
            "self-test at .b.c: expected 0.5, got 0.5000001",
            "self-test at .d: expected null, got 0",
            "self-test at : expected [1,2], got [1]",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_exactly_the_brute_force_over_the_events() {
    let started = Instant::now();
    let seed = std::env::var("EXACTNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("EXACTNESS_SEED={seed}");
    let today = Utc::now().date_naive();
    let events = Generator::new(seed, today).generate();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let (normal, late, resends) = sending_plan(&events, &mut rng);
    let anonymous_only = events.iter().filter(|e| e.user_id.is_none()).count();
    let late_count: usize = late.iter().map(Vec::len).sum();
    eprintln!(
        "{} distinct events ({} anonymous-only), {} batches in time order, {} late events, {} resends",
        events.len(),
        anonymous_only,
        normal.len(),
        late_count,
        resends
    );
    assert!(anonymous_only > 0 && resends > 0 && late_count > 0);

    // Through ingest (three requests at a time, so that ingest coalesces them) into two workers.
    let pipeline = pipeline(2).await;
    let body = |batch: &[usize]| batch.iter().map(|i| events[*i].json()).collect::<Vec<Value>>();
    let sent: Vec<(u64, u64)> = futures::stream::iter(normal.iter().map(|b| pipeline.send(body(b))))
        .buffer_unordered(3)
        .collect()
        .await;
    let mut totals = sent;
    for batch in &late {
        totals.push(pipeline.send(body(batch)).await);
    }
    let (accepted, duplicates) = totals.iter().fold((0, 0), |(a, d), (x, y)| (a + x, d + y));
    let copies: usize = normal.iter().chain(&late).map(Vec::len).sum();
    assert_eq!(
        accepted + duplicates,
        copies as u64,
        "ingest accepted or flagged every copy"
    );
    pipeline.wait_counted(events.len()).await;
    eprintln!("ingested and counted in {:?}", started.elapsed());

    // A fresh api (an empty cache) over what the workers made.
    let api = start_api(&pipeline.env, &pipeline.env.database_url, &[]).await;
    let (people, refused) = persons(&events);
    let linked_persons: BTreeSet<&String> = people.values().collect();
    eprintln!(
        "{} ids linked into {} persons, {} links refused",
        people.len(),
        linked_persons.len(),
        refused.len()
    );
    // The workers' record of refusals is the brute force's.
    let db = sqlx::PgPool::connect(&pipeline.env.database_url).await.unwrap();
    let stored_refused: BTreeSet<String> =
        sqlx::query_scalar("select message_id from identity_links where project = $1 and refused is not null")
            .bind(PROJECT)
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(stored_refused, refused, "the links refused");
    let mut check = Checker::default();
    // A person as `GET /v1/identities/{id}` shows it: its ids and every link touching them.
    let label = |id: &str| people.get(id).cloned().unwrap_or_else(|| id.to_owned());
    let probes: Vec<String> = people
        .keys()
        .filter(|id| id.ends_with("-r") || id.starts_with("kiosk-"))
        .cloned()
        .chain(["u004".to_owned()])
        .collect();
    for probe in &probes {
        let mut ids: Vec<String> = events
            .iter()
            .flat_map(|e| [e.user_id.clone(), e.anonymous_id.clone(), e.previous_id.clone()])
            .flatten()
            .filter(|id| label(id) == label(probe))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        ids.sort();
        let mut links: Vec<&Ev> = events
            .iter()
            .filter(|e| matches!(e.kind, "identify" | "alias"))
            .filter(|e| {
                let from = if e.kind == "alias" {
                    &e.previous_id
                } else {
                    &e.anonymous_id
                };
                from.is_some()
                    && from != &e.user_id
                    && [from, &e.user_id]
                        .iter()
                        .any(|id| id.as_ref().is_some_and(|id| ids.contains(id)))
            })
            .collect();
        links.sort_by(|a, b| (a.ts, &a.message_id).cmp(&(b.ts, &b.message_id)));
        let links: Vec<Value> = links
            .into_iter()
            .map(|e| {
                let from = if e.kind == "alias" {
                    &e.previous_id
                } else {
                    &e.anonymous_id
                };
                let reason = match from.as_deref() {
                    _ if !refused.contains(&e.message_id) => Value::Null,
                    Some(id) if PLACEHOLDERS.contains(&id) => json!("invalid_id"),
                    _ => json!("identified"),
                };
                json!({
                    "message_id": e.message_id, "kind": e.kind, "from": from, "to": e.user_id,
                    "at": e.ts.to_rfc3339_opts(SecondsFormat::Secs, true), "refused": reason,
                })
            })
            .collect();
        let path = format!("/v1/identities/{probe}");
        check.check(
            &path,
            &json!({"id": probe, "ids": ids, "links": links}),
            &api.ok(&path).await,
        );
    }
    assert_eq!(api.get("/v1/identities/nobody-at-all").await.0, StatusCode::NOT_FOUND);
    let truth = Truth::new(&events, &people, today);
    let day = |n: i64| d(today, n - DATA_DAYS);

    // Active users: ranges starting before the data (rolling windows crossing its start), over
    // all of it, into the future, entirely before it, single days, and some at random.
    let mut ranges = vec![
        (-10, 5),
        (0, DATA_DAYS - 1),
        (25, DATA_DAYS + 5),
        (-60, -41),
        (17, 17),
        (-29, 0),
    ];
    for _ in 0..4 {
        let from = rng.i64(-35..DATA_DAYS);
        ranges.push((from, from + rng.i64(0..45)));
    }
    for (from, to) in &ranges {
        let (from, to) = (day(*from), day(*to));
        let path = format!("/v1/metrics/active-users?from={from}&to={to}");
        let got = api.ok(&path).await;
        check.check(&path, &truth.active_users_daily(from, to), &got["series"]);
    }
    for (from, to, interval) in [
        (-3, DATA_DAYS + 2, "week"),
        (-45, DATA_DAYS, "month"),
        (9, 9, "week"),
        (5, 33, "week"),
        (-70, DATA_DAYS + 40, "month"),
    ] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/metrics/active-users?from={from}&to={to}&interval={interval}");
        let got = api.ok(&path).await;
        check.check(&path, &truth.active_users_buckets(from, to, interval), &got["series"]);
    }

    // Retention, with the N-day matrix; the latest cohorts' later days are still unknown.
    for (from, to, matrix) in [
        (-5, DATA_DAYS - 1, None),
        (10, 20, Some(14)),
        (0, DATA_DAYS - 1, Some(45)),
        (30, DATA_DAYS + 2, Some(3)),
    ] {
        let (from, to) = (day(from), day(to));
        let path = match matrix {
            Some(n) => format!("/v1/retention?from={from}&to={to}&matrix={n}"),
            None => format!("/v1/retention?from={from}&to={to}"),
        };
        let got = api.ok(&path).await;
        check.check(&path, &truth.retention(from, to, matrix), &got);
    }

    // Top events and pages, with ties at the limit.
    for (from, to, limit) in [(0, DATA_DAYS - 1, 100), (5, 12, 5), (-20, -1, 10), (20, 20, 3)] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/metrics/events/top?from={from}&to={to}&limit={limit}");
        check.check(&path, &truth.top_events(from, to, limit), &api.ok(&path).await["items"]);
        let path = format!("/v1/metrics/pages/top?from={from}&to={to}&limit={limit}");
        check.check(&path, &truth.top_pages(from, to, limit), &api.ok(&path).await["items"]);
    }

    // Course analytics: daily series, totals and modules; "7" is sent as a string or a number.
    for (course, from, to) in [
        ("c1", -2, DATA_DAYS + 1),
        ("c2", 5, 12),
        ("c3", 30, DATA_DAYS - 1),
        ("7", 0, DATA_DAYS - 1),
        ("c9", 0, 5),
    ] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/courses/{course}/analytics?from={from}&to={to}");
        check.check(&path, &truth.course(course, from, to), &api.ok(&path).await);
    }

    // The course list's totals (maintained by triggers on enrollments, migrations/0006).
    let listed: Vec<Value> = api.ok("/v1/courses?limit=500").await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| {
            json!({
                "course_id": c["course_id"], "enrolled": c["enrolled"], "completed": c["completed"],
                "completion_rate": c["completion_rate"],
            })
        })
        .collect();
    check.check("/v1/courses", &truth.courses(), &Value::Array(listed));

    // Funnels.
    let purchase = [
        step("course_viewed"),
        step("product_view"),
        step("add_to_cart"),
        step("purchase"),
    ];
    let funnels: Vec<(Vec<Step>, i64, i64, Value)> = vec![
        (purchase.to_vec(), 0, DATA_DAYS - 1, json!("7d")),
        // Shorter than many gaps between steps.
        (purchase.to_vec(), 0, DATA_DAYS - 1, json!("1h")),
        (purchase.to_vec(), -3, DATA_DAYS + 3, json!(86_400)),
        (purchase[1..].to_vec(), 10, 25, json!("1d")),
        (
            vec![step("course_viewed").course("c2"), step("purchase").course("c2")],
            0,
            DATA_DAYS - 1,
            json!("30d"),
        ),
        (
            vec![
                step("product_view"),
                step("purchase").property("currency", json!("EUR")),
            ],
            0,
            DATA_DAYS - 1,
            json!("7d"),
        ),
        // Numbers by value: 99 matches 99.0.
        (
            vec![
                step("add_to_cart"),
                step("purchase")
                    .property("plan", json!("pro"))
                    .property("amount", json!(99.0)),
            ],
            0,
            DATA_DAYS - 1,
            json!("2d"),
        ),
        // The same event twice: two lessons.
        (
            vec![
                step("course_enrolled"),
                step("lesson_completed"),
                step("lesson_completed"),
                step("course_completed"),
            ],
            0,
            DATA_DAYS - 1,
            json!("14d"),
        ),
        (
            vec![step("course_viewed").course("7"), step("course_enrolled").course("7")],
            0,
            DATA_DAYS - 1,
            json!(3_600 * 24 * 10),
        ),
        (
            vec![
                step("course_viewed").spelled("Course Viewed"),
                step("product_view").spelled("productView"),
            ],
            12,
            12,
            json!("2h"),
        ),
        (
            vec![
                step("page_view").property("page", json!("/pricing")),
                step("course_viewed"),
            ],
            0,
            DATA_DAYS - 1,
            json!("1d"),
        ),
        // The window's edge: some steps are exactly 1 h (and 1 d) apart.
        (
            vec![step("product_view"), step("add_to_cart")],
            0,
            DATA_DAYS - 1,
            json!(3_600),
        ),
        (
            vec![step("add_to_cart"), step("purchase")],
            0,
            DATA_DAYS - 1,
            json!("24h"),
        ),
        // `course_id` is a property like any other.
        (
            vec![
                step("course_viewed"),
                step("purchase").property("course_id", json!("c1")),
            ],
            0,
            DATA_DAYS - 1,
            json!("7d"),
        ),
        // Anonymous browsing, then an enrolment once signed up: one person.
        (
            vec![step("course_viewed"), step("course_enrolled")],
            0,
            DATA_DAYS - 1,
            json!("30d"),
        ),
        // Order matters: a purchase, then a later course page view.
        (
            vec![step("purchase"), step("course_viewed")],
            0,
            DATA_DAYS - 1,
            json!("30d"),
        ),
        (
            vec![
                step("lesson_started").property("lesson_id", json!("l1")),
                step("quiz_submitted").property("passed", json!(true)),
            ],
            0,
            DATA_DAYS - 1,
            json!("7d"),
        ),
    ];
    let mut truths = Vec::new();
    for (steps, from, to, window) in &funnels {
        let (from, to) = (day(*from), day(*to));
        let window_s = match window {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(s) => common::config::parse_duration(s).unwrap().as_secs() as i64,
            _ => unreachable!(),
        };
        let request = json!({
            "steps": steps.iter().map(Step::request).collect::<Vec<_>>(),
            "from": from, "to": to, "window": window,
        });
        let (expected, t) = truth.funnel_answer(steps, from, to, window_s);
        check.check(
            &format!("POST /v1/funnels {request}"),
            &expected,
            &api.funnel(&request).await,
        );
        truths.push(t);
    }

    // A group: a third of the learners join it (Segment `group` calls, sent after everything
    // else, so a member's earlier events count too). Course analytics and funnels filtered by the
    // group are exactly those of a workload of the members' events alone.
    let members: BTreeSet<String> = (0..LEARNERS)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("u{i:03}"))
        .collect();
    let calls: Vec<Ev> = members
        .iter()
        .map(|user| Ev {
            message_id: format!("join-{user}"),
            user_id: Some(user.clone()),
            anonymous_id: None,
            previous_id: None,
            kind: "group",
            sent_name: "group".into(),
            name: "group".into(),
            ts: day(DATA_DAYS - 1).and_hms_opt(12, 0, 0).unwrap().and_utc(),
            properties: Map::new(),
        })
        .collect();
    pipeline.send(calls.iter().map(Ev::json).collect()).await;
    pipeline.wait_counted(events.len() + calls.len()).await;
    // A person is a member when one of its ids joined: its other ids' events count too.
    let person_of = |id: &str| people.get(id).map_or(id.to_owned(), String::clone);
    let member_persons: BTreeSet<String> = members.iter().map(|m| person_of(m)).collect();
    let member_events: Vec<Ev> = events
        .iter()
        .filter(|e| member_persons.contains(&person_of(e.key())))
        .chain(&calls)
        .cloned()
        .collect();
    assert!(
        member_events.len() > events.len() / 5 && member_events.len() < events.len() / 2,
        "the group has some of the events: {} of {}",
        member_events.len(),
        events.len()
    );
    let in_group = Truth::new(&member_events, &people, today);
    let group = "group=class%201%2Fa";
    for (from, to) in [(-10, 5), (0, DATA_DAYS - 1), (25, DATA_DAYS + 5)] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/metrics/active-users?from={from}&to={to}&{group}");
        check.check(
            &path,
            &in_group.active_users_daily(from, to),
            &api.ok(&path).await["series"],
        );
    }
    for (from, to, matrix) in [(-5, DATA_DAYS - 1, None), (10, 20, Some(14))] {
        let (from, to) = (day(from), day(to));
        let path = match matrix {
            Some(n) => format!("/v1/retention?from={from}&to={to}&matrix={n}&{group}"),
            None => format!("/v1/retention?from={from}&to={to}&{group}"),
        };
        check.check(&path, &in_group.retention(from, to, matrix), &api.ok(&path).await);
    }
    for (from, to, limit) in [(0, DATA_DAYS - 1, 100), (5, 12, 5)] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/metrics/events/top?from={from}&to={to}&limit={limit}&{group}");
        check.check(
            &path,
            &in_group.top_events(from, to, limit),
            &api.ok(&path).await["items"],
        );
        let path = format!("/v1/metrics/pages/top?from={from}&to={to}&limit={limit}&{group}");
        check.check(
            &path,
            &in_group.top_pages(from, to, limit),
            &api.ok(&path).await["items"],
        );
    }
    for (course, from, to) in [("c1", -2, DATA_DAYS + 1), ("c2", 5, 12), ("7", 0, DATA_DAYS - 1)] {
        let (from, to) = (day(from), day(to));
        let path = format!("/v1/courses/{course}/analytics?from={from}&to={to}&{group}");
        check.check(&path, &in_group.course(course, from, to), &api.ok(&path).await);
    }
    for (steps, from, to, window) in funnels.iter().take(6) {
        let (from, to) = (day(*from), day(*to));
        let window_s = match window {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(s) => common::config::parse_duration(s).unwrap().as_secs() as i64,
            _ => unreachable!(),
        };
        let request = json!({
            "steps": steps.iter().map(Step::request).collect::<Vec<_>>(),
            "from": from, "to": to, "window": window, "group": GROUP,
        });
        let (expected, _) = in_group.funnel_answer(steps, from, to, window_s);
        check.check(
            &format!("POST /v1/funnels {request}"),
            &expected,
            &api.funnel(&request).await,
        );
    }

    check.finish(seed);

    // The workload is what it should be, so that the comparisons above mean something.
    let full = truth.active_users_daily(day(0), day(DATA_DAYS - 1));
    let dau: i64 = full
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["dau"].as_i64().unwrap())
        .sum();
    assert!(dau > 500, "too little activity to compare: {dau} user-days");
    let reached = |i: usize| &truths[i].reached;
    assert!(
        reached(0)[3] > 0 && reached(0)[3] < reached(0)[0],
        "the purchase funnel converts some and drops some: {:?}",
        reached(0)
    );
    assert!(
        reached(1)[3] < reached(0)[3],
        "a 1 h window converts fewer than 7 days: {:?} vs {:?}",
        reached(1),
        reached(0)
    );
    assert!(truths.iter().all(|t| t.reached[0] > 0), "every funnel has entries");
    // Learners whose first day was sent after their later days: their cohort had to move.
    let moved = (0..LEARNERS)
        .filter(|i| i % 10 == 3)
        .map(|i| format!("u{i:03}"))
        .filter(|u| truth.active.values().filter(|a| a.contains(u.as_str())).count() > 1)
        .count();
    assert!(moved > 0, "no learner's cohort moved earlier");
    // Linking ids changes the answers: without it, more users, and fewer sign-ups convert.
    let unlinked = HashMap::new();
    let apart = Truth::new(&events, &unlinked, today);
    let whole = (day(0), day(DATA_DAYS - 1));
    assert!(
        truth.distinct_users(whole.0, whole.1) < apart.distinct_users(whole.0, whole.1),
        "linked ids count once"
    );
    // A person who viewed a course anonymously enters the funnel there: fewer entries, and their
    // enrolment, sent identified, follows the anonymous view.
    let signup = [step("course_viewed"), step("course_enrolled")];
    let (linked, unlinked) = (
        truth.funnel(&signup, whole.0, whole.1, 30 * 86_400),
        apart.funnel(&signup, whole.0, whole.1, 30 * 86_400),
    );
    assert!(
        linked.reached[0] < unlinked.reached[0] && linked.gaps[1] != unlinked.gaps[1],
        "funnels that start anonymous end identified: {:?} vs {:?}",
        linked.reached,
        unlinked.reached
    );
    let refused_calls: Vec<&Ev> = events.iter().filter(|e| refused.contains(&e.message_id)).collect();
    let kiosk = |e: &&Ev| e.anonymous_id.as_deref().is_some_and(|a| a.starts_with("kiosk-"));
    assert!(
        refused_calls.iter().any(kiosk),
        "a second sign-in on a shared device is refused"
    );
    assert!(
        refused_calls.iter().any(|e| e.kind == "alias"),
        "an alias of two learners is refused"
    );
    assert!(
        refused_calls
            .iter()
            .any(|e| e.anonymous_id.as_deref() == Some("undefined")),
        "a placeholder links nothing"
    );
    assert!(
        people.keys().any(|id| id.ends_with("-r")),
        "a renamed learner is one person"
    );
    let retained = truth.retention(day(0), day(DATA_DAYS - 1), None);
    assert!(
        retained["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["d1"]["users"].as_i64() > Some(0)),
        "someone comes back the next day"
    );
    let c1 = truth.course("c1", day(0), day(DATA_DAYS - 1));
    assert!(c1["totals"]["unique_viewers"].as_i64() > Some(10), "{}", c1["totals"]);
    assert!(
        COURSES
            .iter()
            .any(|c| truth.course(c, day(0), day(DATA_DAYS - 1))["totals"]["completion_rate"].as_f64() > Some(0.0)),
        "someone completes a course"
    );
    assert_eq!(
        Utc::now().date_naive(),
        today,
        "the UTC date changed during the test (retention's unknown days moved): run it again"
    );
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_query_past_the_statement_timeout_answers_503_with_the_reason() {
    let env = TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::MIGRATOR.run(&pool).await.unwrap();
    let api = start_api(&env, &env.database_url, &["--statement-timeout", "300ms"]).await;
    let active = "/v1/metrics/active-users?from=2026-01-01&to=2026-03-31";
    let funnel = json!({"steps": ["course_viewed", "purchase"], "from": "2026-01-01", "to": "2026-03-31"});
    api.ok("/v1/metrics/events/top?from=2026-01-01&to=2026-01-31").await;

    // Another session holds the tables these queries read (as a long migration would): each
    // query waits for the lock until PostgreSQL cancels it at the statement timeout.
    let mut migration = pool.begin().await.unwrap();
    sqlx::query("lock table activity_bitmaps, event_log in access exclusive mode")
        .execute(&mut *migration)
        .await
        .unwrap();
    for request in [
        api.http.get(format!("{}{active}", api.base)),
        api.http.post(format!("{}/v1/funnels", api.base)).json(&funnel),
    ] {
        let start = Instant::now();
        let response = request
            .bearer_auth(READ_KEY)
            .send()
            .await
            .expect("an answer, not a hang");
        let elapsed = start.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("statement timeout"), "{body}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
            "answered after {elapsed:?}, with a 300 ms statement timeout"
        );
    }
    migration.rollback().await.unwrap();
    // The 503 was not cached: the same requests answer once the tables are free.
    assert_eq!(api.ok(active).await["series"].as_array().unwrap().len(), 90);
    assert_eq!(api.funnel(&funnel).await["steps"][0]["users"], 0);
}

/// What the proxy in front of PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Every connection is dropped and new ones are closed at once (the server is down).
    Down,
    /// Connections stay open and nothing comes back (a partition, a frozen host).
    Silent,
}

/// A TCP proxy to the real PostgreSQL that the test can cut, so that only this test's api loses
/// its database.
struct PgProxy {
    addr: std::net::SocketAddr,
    link: tokio::sync::watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

/// Waits until the link is no longer `now`.
async fn until(state: &mut tokio::sync::watch::Receiver<Link>, now: Link) {
    let _changed = state.wait_for(|l| *l != now).await.is_ok();
}

impl PgProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, watch) = tokio::sync::watch::channel(Link::Up);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = watch.clone();
                let now = *state.borrow();
                match now {
                    Link::Down => continue,
                    Link::Silent => {
                        tokio::spawn(async move {
                            until(&mut state, Link::Silent).await;
                            drop(inbound);
                        });
                        continue;
                    }
                    Link::Up => {}
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = until(&mut state, Link::Up) => {
                            // Silent: hold both ends open, forwarding nothing, until it changes.
                            until(&mut state, Link::Silent).await;
                        }
                    }
                });
            }
        });
        Self { addr, link, task }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.set(Link::Down);
        self.task.abort();
    }
}

#[tokio::test]
async fn an_unreachable_postgresql_answers_503_not_500_and_does_not_hang() {
    let env = TestEnv::new().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    common::schema::MIGRATOR.run(&pool).await.unwrap();
    let url = reqwest::Url::parse(&env.database_url).unwrap();
    let target = tokio::net::lookup_host((url.host_str().unwrap(), url.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = PgProxy::start(target).await;
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.addr.port())).unwrap();
    let api = start_api(
        &env,
        proxied.as_str(),
        &["--statement-timeout", "2s", "--request-timeout", "4s"],
    )
    .await;
    // Each request its own range, so that none is answered from the cache.
    let path = |month: u32| format!("/v1/metrics/active-users?from=2026-{month:02}-01&to=2026-{month:02}-28");
    api.ok(&path(1)).await;

    let unavailable = async |what: &str, request: reqwest::RequestBuilder| {
        let start = Instant::now();
        let response = request
            .bearer_auth(READ_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer ({e}) after {:?}", start.elapsed()));
        let elapsed = start.elapsed();
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(body["error"], "unavailable", "{what}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains("PostgreSQL"),
            "{what}: {body}"
        );
        assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"), "{what}");
        assert!(elapsed < Duration::from_secs(8), "{what}: answered after {elapsed:?}");
    };

    proxy.set(Link::Down);
    unavailable("down: active users", api.http.get(format!("{}{}", api.base, path(2)))).await;
    unavailable(
        "down: funnel",
        api.http
            .post(format!("{}/v1/funnels", api.base))
            .json(&json!({"steps": ["a", "b"], "from": "2026-02-01", "to": "2026-02-02"})),
    )
    .await;
    unavailable(
        "down: course analytics",
        api.http.get(format!(
            "{}/v1/courses/c1/analytics?from=2026-02-01&to=2026-02-02",
            api.base
        )),
    )
    .await;

    // Back up, a connection in the pool again; then silence.
    proxy.set(Link::Up);
    eventually("the api to reach PostgreSQL again", Duration::from_secs(20), || async {
        (api.get(&path(3)).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    proxy.set(Link::Silent);
    unavailable("silent: active users", api.http.get(format!("{}{}", api.base, path(4)))).await;
    unavailable(
        "silent: top events",
        api.http.get(format!(
            "{}/v1/metrics/events/top?from=2026-04-01&to=2026-04-02",
            api.base
        )),
    )
    .await;

    // A partition while a query runs: the answer must not wait for a reply that never comes.
    proxy.set(Link::Up);
    eventually("the api to reach PostgreSQL again", Duration::from_secs(20), || async {
        (api.get(&path(5)).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let mut migration = pool.begin().await.unwrap();
    sqlx::query("lock table activity_bitmaps in access exclusive mode")
        .execute(&mut *migration)
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let request = api.http.get(format!("{}{}", api.base, path(6)));
        async move {
            let start = Instant::now();
            let response = request.bearer_auth(READ_KEY).send().await;
            (start.elapsed(), response.map(|r| r.status()))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Link::Silent);
    let (elapsed, status) = in_flight.await.unwrap();
    migration.rollback().await.unwrap();
    assert_eq!(
        status.as_ref().ok().copied(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "a query cut off mid-flight: {status:?} after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "answered after {elapsed:?}");

    proxy.set(Link::Up);
    eventually("the api to recover", Duration::from_secs(20), || async {
        (api.get(&path(7)).await.0 == StatusCode::OK).then_some(())
    })
    .await;
}
