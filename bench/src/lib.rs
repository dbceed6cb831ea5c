//! A realistic, deterministic e-learning workload (docs/contract.md §3): learners who log in, browse,
//! view courses, enrol, work through lessons, videos and quizzes, drop off along the way, buy, earn
//! badges and take typing tests, over a number of days, and anonymous visitors who only browse.
//! The same seed gives the same events.
//!
//! The generator also knows the answers. [`Generated`] computes, by brute force over its distinct
//! events and from the contract's definitions (docs/contract.md §4–§6, never the workers' or the api's
//! code), what the api must report: DAU, top events and pages, each course's analytics and each
//! learner's stats. [`Generated::deliveries`] turns the events into the requests a real fleet of
//! clients would send ([`Mix`]): single events resent in a later request, whole batches sent twice,
//! events that arrive late (after later days of the same learner). The distinct events are the
//! truth however they are delivered, so the demo and tests can check the pipeline against it.

pub mod load;
pub mod normalised;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub learners: usize,
    pub courses: usize,
    pub days: i64,
    /// Lessons per course.
    pub lessons: usize,
    pub seed: u64,
    /// The last day of activity (UTC); events fall on `end - days + 1 ..= end`.
    pub end: NaiveDate,
}

/// Generated events and the answers the generator knows.
#[derive(Debug, Default)]
pub struct Generated {
    /// Segment-style track/page events, each once (distinct messageIds), in time order per learner
    /// (learners first, then anonymous visitors).
    pub events: Vec<Value>,
    /// Exact distinct active users per day.
    pub dau: BTreeMap<NaiveDate, usize>,
    /// The workload's seed; the delivery mix draws from it too.
    pub seed: u64,
    /// The workload's first and last day.
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// Anonymous visitors per learner: one in ten.
const VISITORS_PER_LEARNER: usize = 10;
/// Mixed into the seed for the visitors' own generator, so the learners' events stay what they
/// were before visitors existed.
const VISITOR_SEED: u64 = 0x7669_7369_746f_7273;
/// Mixed into the seed for the delivery mix.
const MIX_SEED: u64 = 0x6465_6c69_7665_7279;

impl Workload {
    pub fn generate(&self) -> Generated {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut out = Generated::default();
        let start = self.end - Duration::days(self.days - 1);
        for learner in 0..self.learners {
            let user = format!("learner-{learner:05}");
            // Engagement: most learners come rarely, some daily.
            let activity = match rng.u8(0..10) {
                0..=4 => 0.12,
                5..=7 => 0.35,
                _ => 0.75,
            };
            let first_day = rng.i64(0..self.days);
            let mut progress: BTreeMap<usize, usize> = BTreeMap::new();
            let mut seq = 0u32;
            for offset in first_day..self.days {
                if offset != first_day && rng.f64() > activity {
                    continue;
                }
                let day = start + Duration::days(offset);
                let mut clock = day
                    .and_hms_opt(rng.u32(6..20), rng.u32(0..60), rng.u32(0..60))
                    .unwrap_or_default()
                    .and_utc();
                // A learner's day stays within that day, however busy.
                let day_end = day.and_hms_milli_opt(23, 59, 59, 999).unwrap_or_default().and_utc();
                let mut emit = |rng: &mut fastrand::Rng, name: &str, properties: Value| {
                    clock = (clock + Duration::seconds(rng.i64(5..240))).min(day_end);
                    seq += 1;
                    out.events.push(event(Who::User(&user), seq, name, clock, properties));
                };
                if offset == first_day {
                    emit(&mut rng, "User Created", json!({}));
                }
                let method = if rng.bool() { "password" } else { "google" };
                emit(&mut rng, "Login", json!({"method": method}));
                emit(&mut rng, PAGE, json!({"path": "/dashboard"}));
                // Browse: view a course, maybe enrol (the course funnel).
                let course = rng.usize(0..self.courses);
                let course_id = format!("course-{course:02}");
                emit(&mut rng, "Course Viewed", json!({"course_id": course_id}));
                emit(&mut rng, PAGE, json!({"path": format!("/courses/{course_id}")}));
                if !progress.contains_key(&course) && rng.f64() < 0.45 {
                    emit(&mut rng, "Product View", json!({"course_id": course_id}));
                    if rng.f64() < 0.6 {
                        emit(&mut rng, "Add To Cart", json!({"course_id": course_id, "amount": 49}));
                        if rng.f64() < 0.7 {
                            emit(
                                &mut rng,
                                "Purchase",
                                json!({"course_id": course_id, "amount": 49, "currency": "USD"}),
                            );
                            emit(
                                &mut rng,
                                "Course Enrolled",
                                json!({"course_id": course_id, "amount": 49}),
                            );
                            progress.insert(course, 0);
                        }
                    }
                }
                // Study the courses enrolled in; drop-offs come from learners not returning.
                let enrolled: Vec<usize> = progress.keys().copied().collect();
                for course in enrolled {
                    let course_id = format!("course-{course:02}");
                    let done = progress.get(&course).copied().unwrap_or_default();
                    if done >= self.lessons || rng.f64() < 0.3 {
                        continue;
                    }
                    let lessons_today = rng.usize(1..=3).min(self.lessons - done);
                    for lesson in done..done + lessons_today {
                        let module_id = format!("module-{}", lesson / 4 + 1);
                        let lesson_id = format!("{course_id}-lesson-{:02}", lesson + 1);
                        let ids = json!({"course_id": course_id, "module_id": module_id, "lesson_id": lesson_id});
                        emit(&mut rng, "Lesson Started", ids.clone());
                        let spent = rng.i64(120..1_800);
                        emit(
                            &mut rng,
                            "Video Progress",
                            json!({"course_id": course_id, "lesson_id": lesson_id, "percent": 100, "time_spent_s": spent}),
                        );
                        let mut completed = ids;
                        completed["time_spent_s"] = json!(spent);
                        emit(&mut rng, "Lesson Completed", completed);
                        if lesson % 4 == 3 {
                            let score = rng.u32(40..=100);
                            emit(
                                &mut rng,
                                "Quiz Submitted",
                                json!({"course_id": course_id, "quiz_id": format!("{course_id}-quiz-{}", lesson / 4 + 1), "score": score, "max_score": 100, "passed": score >= 60}),
                            );
                        }
                    }
                    progress.insert(course, done + lessons_today);
                    if done + lessons_today == self.lessons {
                        emit(&mut rng, "Course Completed", json!({"course_id": course_id}));
                        emit(
                            &mut rng,
                            "Badge Earned",
                            json!({"badge_id": format!("finisher-{course_id}"), "points": 100}),
                        );
                    }
                }
                if rng.f64() < 0.15 {
                    let (wpm, accuracy) = (rng.u32(20..120), f64::from(rng.u32(80..100)) / 100.0);
                    emit(
                        &mut rng,
                        "Typing Test Completed",
                        json!({"wpm": wpm, "accuracy": accuracy}),
                    );
                }
            }
        }
        self.visitors(&mut out.events, start);
        out.dau = dau(&out.events);
        out.seed = self.seed;
        out.from = start;
        out.to = self.end;
        out
    }

    /// Anonymous visitors (an `anonymousId`, never a `userId`): on a day or two they land on the
    /// home page, list the courses, look at one and sometimes at its price, and leave. They count
    /// as active users and course viewers under their anonymous id (docs/contract.md §6).
    fn visitors(&self, events: &mut Vec<Value>, start: NaiveDate) {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ VISITOR_SEED);
        for visitor in 0..self.learners.div_ceil(VISITORS_PER_LEARNER) {
            let anonymous = format!("anon-{visitor:05}");
            let mut days: Vec<i64> = (0..rng.usize(1..=2)).map(|_| rng.i64(0..self.days)).collect();
            days.sort_unstable();
            days.dedup();
            let mut seq = 0u32;
            for offset in days {
                let day = start + Duration::days(offset);
                let mut clock = day
                    .and_hms_opt(rng.u32(0..22), rng.u32(0..60), rng.u32(0..60))
                    .unwrap_or_default()
                    .and_utc();
                let day_end = day.and_hms_milli_opt(23, 59, 59, 999).unwrap_or_default().and_utc();
                let mut emit = |rng: &mut fastrand::Rng, name: &str, properties: Value| {
                    clock = (clock + Duration::seconds(rng.i64(5..120))).min(day_end);
                    seq += 1;
                    events.push(event(Who::Anonymous(&anonymous), seq, name, clock, properties));
                };
                emit(&mut rng, PAGE, json!({"path": "/"}));
                emit(&mut rng, PAGE, json!({"path": "/courses"}));
                let course_id = format!("course-{:02}", rng.usize(0..self.courses));
                emit(&mut rng, "Course Viewed", json!({"course_id": course_id}));
                emit(&mut rng, PAGE, json!({"path": format!("/courses/{course_id}")}));
                if rng.f64() < 0.3 {
                    emit(&mut rng, "Product View", json!({"course_id": course_id}));
                    emit(&mut rng, PAGE, json!({"path": "/pricing"}));
                }
            }
        }
    }
}

/// Distinct users per UTC day of `timestamp`, counted from the events themselves: a user is the
/// `userId`, else the `anonymousId` (docs/contract.md §6).
pub fn dau(events: &[Value]) -> BTreeMap<NaiveDate, usize> {
    let mut days: BTreeMap<NaiveDate, BTreeSet<&str>> = BTreeMap::new();
    for event in events {
        if let (Some(day), Some(user)) = (day_of(event), user_of(event)) {
            days.entry(day).or_default().insert(user);
        }
    }
    days.into_iter().map(|(day, users)| (day, users.len())).collect()
}

/// The user an event counts for: its `userId`, else its `anonymousId`.
pub fn user_of(event: &Value) -> Option<&str> {
    event["userId"]
        .as_str()
        .filter(|u| !u.is_empty())
        .or_else(|| event["anonymousId"].as_str().filter(|a| !a.is_empty()))
}

/// The UTC day of an event's `timestamp`.
fn day_of(event: &Value) -> Option<NaiveDate> {
    event["timestamp"]
        .as_str()
        .and_then(|t| t.get(..10))
        .and_then(|d| d.parse().ok())
}

fn time_of(event: &Value) -> Option<DateTime<Utc>> {
    event["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The name under which the generator emits a Segment `page` call (ingest turns it into
/// `page_view` with `properties.page`) rather than a track call.
const PAGE: &str = "(page)";

/// Whom an event is from.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    User(&'a str),
    Anonymous(&'a str),
}

fn event(who: Who<'_>, seq: u32, name: &str, ts: DateTime<Utc>, properties: Value) -> Value {
    let (kind, name_field) = if name == PAGE {
        ("page", "name")
    } else {
        ("track", "event")
    };
    let name = if name == PAGE {
        properties["path"].as_str().unwrap_or("/").to_owned()
    } else {
        name.to_owned()
    };
    let (id_field, id) = match who {
        Who::User(user) => ("userId", user),
        Who::Anonymous(anonymous) => ("anonymousId", anonymous),
    };
    json!({
        "type": kind,
        name_field: name,
        id_field: id,
        "messageId": format!("{id}-{seq:06}"),
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "properties": properties,
        "context": {"library": {"name": "bench-loadgen", "version": "1"}},
    })
}

/// How the clients deliver the events: the realistic mess a pipeline must count exactly once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Events per request (before resends and late events join a request).
    pub batch_size: usize,
    /// Share of the distinct events a client sends a second time (same messageId, same body),
    /// alone among other events in a later request: a retry after a lost reply.
    pub resend_fraction: f64,
    /// Whole requests sent twice, the copy a little later (an SDK retrying a batch).
    pub duplicate_batches: usize,
    /// Share of the distinct events that arrive late: held back (an offline device) and sent in a
    /// request well after one holding a later day's events of the same learner.
    pub late_fraction: f64,
}

/// A resent event travels 1 to this many requests after the request of its first copy.
const RESEND_REQUESTS: usize = 30;
/// A duplicated request is sent again 1 to this many requests later.
const DUPLICATE_REQUESTS: usize = 20;
/// A late event travels this many requests after the learner's last request, at the least and
/// at the most (more than the requests a load generator keeps in flight).
const LATE_REQUESTS: (usize, usize) = (20, 80);
/// The most events a request may hold (ingest's default limit per batch).
const MAX_BATCH: usize = 1_000;

impl Mix {
    /// Every event once, in order, `batch_size` to a request: the old behaviour.
    pub fn none(batch_size: usize) -> Self {
        Self {
            batch_size,
            resend_fraction: 0.0,
            duplicate_batches: 0,
            late_fraction: 0.0,
        }
    }

    /// What a real fleet of web and mobile clients sends: 3% of events resent, a few whole
    /// batches twice, 1.5% late.
    pub fn realistic(batch_size: usize) -> Self {
        Self {
            batch_size,
            resend_fraction: 0.03,
            duplicate_batches: 5,
            late_fraction: 0.015,
        }
    }
}

/// The requests of a delivery mix, in send order, and what they hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deliveries {
    /// The events (`batch`) of each request, in send order.
    pub requests: Vec<Vec<Value>>,
    /// Distinct events (messageIds) among them: all of [`Generated::events`].
    pub distinct: usize,
    /// Single events sent a second time in a later request.
    pub resends: usize,
    /// Requests sent twice, and the events in them.
    pub duplicate_batches: usize,
    pub duplicate_batch_events: usize,
    /// Events sent after a later day's events of the same learner.
    pub late: usize,
}

impl Deliveries {
    /// Events on the wire, every copy counted.
    pub fn events_sent(&self) -> usize {
        self.requests.iter().map(Vec::len).sum()
    }
}

/// The number of `fraction` of `n`, rounded, within `0..=n`.
fn share(n: usize, fraction: f64) -> usize {
    if fraction.is_finite() && fraction > 0.0 {
        ((n as f64 * fraction).round() as usize).min(n)
    } else {
        0
    }
}

/// Puts event `index` at a random place in the first request from `target` on with room for it
/// (a new request at the end if none has), and returns that request.
fn place(batches: &mut Vec<Vec<usize>>, target: usize, index: usize, room: usize, rng: &mut fastrand::Rng) -> usize {
    let at = (target..batches.len())
        .find(|b| batches[*b].len() < room)
        .unwrap_or_else(|| {
            batches.push(Vec::new());
            batches.len() - 1
        });
    let position = rng.usize(0..=batches[at].len());
    batches[at].insert(position, index);
    at
}

impl Generated {
    /// The requests that deliver every event under `mix`, in send order; deterministic from the
    /// workload's seed. With [`Mix::none`], the events in order, `batch_size` to a request.
    pub fn deliveries(&self, mix: &Mix) -> Deliveries {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ MIX_SEED);
        let n = self.events.len();
        let batch_size = mix.batch_size.clamp(1, MAX_BATCH);
        let users: Vec<&str> = self.events.iter().map(|e| user_of(e).unwrap_or_default()).collect();
        let days: Vec<Option<NaiveDate>> = self.events.iter().map(day_of).collect();
        let mut last_day: BTreeMap<&str, NaiveDate> = BTreeMap::new();
        for (user, day) in users.iter().zip(&days) {
            if let Some(day) = day {
                let last = last_day.entry(user).or_insert(*day);
                *last = (*last).max(*day);
            }
        }
        // Late events: some of those with a later day of the same learner (the events of a
        // learner's last day are never late, so that later day is always sent first).
        let mut candidates: Vec<usize> = (0..n)
            .filter(|&i| days[i].is_some_and(|d| last_day.get(users[i]).is_some_and(|last| d < *last)))
            .collect();
        rng.shuffle(&mut candidates);
        candidates.truncate(share(n, mix.late_fraction));
        let late: BTreeSet<usize> = candidates.into_iter().collect();

        let on_time: Vec<usize> = (0..n).filter(|i| !late.contains(i)).collect();
        let mut batches: Vec<Vec<usize>> = on_time.chunks(batch_size).map(<[usize]>::to_vec).collect();
        let mut last_batch: BTreeMap<&str, usize> = BTreeMap::new();
        for (b, batch) in batches.iter().enumerate() {
            for &i in batch {
                last_batch.insert(users[i], b);
            }
        }
        // Requests grow by the events that join them, within ingest's limit.
        let room = (batch_size * 2).clamp(batch_size + 1, MAX_BATCH);
        let mut batch_of: Vec<usize> = vec![0; n];
        for (b, batch) in batches.iter().enumerate() {
            for &i in batch {
                batch_of[i] = b;
            }
        }
        for &i in &late {
            let after = last_batch.get(users[i]).copied().unwrap_or_default();
            let target = after + rng.usize(LATE_REQUESTS.0..=LATE_REQUESTS.1);
            batch_of[i] = place(&mut batches, target, i, room, &mut rng);
        }
        // Resends: a second copy in a later request than the first.
        let mut resent: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut resent);
        resent.truncate(share(n, mix.resend_fraction));
        resent.sort_unstable();
        for &i in &resent {
            let target = batch_of[i] + rng.usize(1..=RESEND_REQUESTS);
            place(&mut batches, target, i, room, &mut rng);
        }
        // Whole requests sent twice, each copy a few requests after its original.
        let mut duplicated: Vec<usize> = (0..batches.len()).collect();
        rng.shuffle(&mut duplicated);
        duplicated.truncate(mix.duplicate_batches.min(batches.len()));
        duplicated.sort_unstable();
        let mut order: Vec<(usize, usize, usize)> = (0..batches.len()).map(|b| (b, 0, b)).collect();
        for (k, &b) in duplicated.iter().enumerate() {
            order.push((b + rng.usize(1..=DUPLICATE_REQUESTS), k + 1, b));
        }
        order.sort_unstable();
        Deliveries {
            requests: order
                .iter()
                .map(|&(_, _, b)| batches[b].iter().map(|&i| self.events[i].clone()).collect())
                .collect(),
            distinct: n,
            resends: resent.len(),
            duplicate_batches: duplicated.len(),
            duplicate_batch_events: duplicated.iter().map(|&b| batches[b].len()).sum(),
            late: late.len(),
        }
    }
}

/// An event name as ingest stores it (docs/contract.md §4): names are snake_case, so runs of
/// characters other than letters and digits become one `_` and a lower-to-upper case change
/// starts a word (`"Course Viewed"` and `courseViewed` are `course_viewed`); page calls are
/// `page_view`, screen calls `screen_view`.
pub fn stored_name(event: &Value) -> String {
    match event["type"].as_str() {
        Some("page") => return "page_view".into(),
        Some("screen") => return "screen_view".into(),
        Some("identify") => return "identify".into(),
        _ => {}
    }
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut previous: Option<char> = None;
    for c in event["event"].as_str().unwrap_or_default().chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else {
            if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) && !word.is_empty()
            {
                words.push(std::mem::take(&mut word));
            }
            word.extend(c.to_lowercase());
        }
        previous = Some(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.join("_")
}

/// One distinct event as the metrics see it.
#[derive(Debug)]
struct Fact<'a> {
    user: &'a str,
    name: String,
    day: NaiveDate,
    ts: DateTime<Utc>,
    properties: &'a Value,
}

impl<'a> Fact<'a> {
    fn course(&self) -> Option<&'a str> {
        let properties: &'a Value = self.properties;
        properties["course_id"].as_str()
    }

    fn number(&self, field: &str) -> Option<f64> {
        self.properties[field].as_f64()
    }

    /// Learning time: the seconds a completed lesson took. `video_progress` reports the same
    /// seconds of the same lesson again, so it does not add to them.
    fn learning_time_s(&self) -> i64 {
        if self.name == "lesson_completed" {
            self.number("time_spent_s")
                .filter(|s| *s > 0.0)
                .map_or(0, |s| s.round() as i64)
        } else {
            0
        }
    }
}

/// Days `from..=to`.
fn each_day(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

fn ratio(a: i64, b: i64) -> Value {
    if b > 0 {
        json!(a as f64 / b as f64)
    } else {
        Value::Null
    }
}

/// (current, longest) runs of consecutive days in `days`; the current run ends today or
/// yesterday, else it is 0.
fn streaks(days: &BTreeSet<NaiveDate>, today: NaiveDate) -> (i64, i64) {
    let mut runs: Vec<(NaiveDate, i64)> = Vec::new();
    for day in days {
        match runs.last_mut() {
            Some((end, length)) if end.succ_opt() == Some(*day) => {
                *end = *day;
                *length += 1;
            }
            _ => runs.push((*day, 1)),
        }
    }
    let longest = runs.iter().map(|(_, l)| *l).max().unwrap_or(0);
    let current = match runs.last() {
        Some((end, length)) if *end == today || end.succ_opt() == Some(today) => *length,
        _ => 0,
    };
    (current, longest)
}

impl Generated {
    /// The answers the api must give, computed by brute force over the distinct events (build
    /// it once: it reads every event).
    pub fn truth(&self) -> Truth<'_> {
        let mut seen = BTreeSet::new();
        let facts: Vec<Fact<'_>> = self
            .events
            .iter()
            .filter(|e| seen.insert(e["messageId"].as_str().unwrap_or_default()))
            .filter_map(|e| {
                let ts = time_of(e)?;
                Some(Fact {
                    user: user_of(e)?,
                    name: stored_name(e),
                    day: ts.date_naive(),
                    ts,
                    properties: &e["properties"],
                })
            })
            .collect();
        let (mut by_course, mut by_user) = (Index::new(), Index::new());
        for (i, fact) in facts.iter().enumerate() {
            by_user.entry(fact.user).or_default().push(i);
            if let Some(course) = fact.course() {
                by_course.entry(course).or_default().push(i);
            }
        }
        Truth {
            facts,
            by_course,
            by_user,
        }
    }

    /// Every course id the events name.
    pub fn courses(&self) -> Vec<String> {
        let courses: BTreeSet<String> = self
            .events
            .iter()
            .filter_map(|e| e["properties"]["course_id"].as_str().map(str::to_owned))
            .collect();
        courses.into_iter().collect()
    }

    /// Every user (userId, else anonymousId), by id.
    pub fn users(&self) -> Vec<String> {
        let users: BTreeSet<&str> = self.events.iter().filter_map(user_of).collect();
        users.into_iter().map(str::to_owned).collect()
    }

    /// `n` users spread evenly over [`Generated::users`] (learners and anonymous visitors alike).
    pub fn sample_users(&self, n: usize) -> Vec<String> {
        let users = self.users();
        if n == 0 || users.is_empty() {
            return Vec::new();
        }
        let n = n.min(users.len());
        (0..n).map(|k| users[k * users.len() / n].clone()).collect()
    }
}

/// The distinct events as the metrics see them (docs/contract.md §4–§6), indexed by course and by
/// user, and the answers the api must give, computed from them by brute force.
#[derive(Debug)]
pub struct Truth<'a> {
    facts: Vec<Fact<'a>>,
    by_course: Index<'a>,
    by_user: Index<'a>,
}

/// The facts of each course or user, by position.
type Index<'a> = BTreeMap<&'a str, Vec<usize>>;

impl<'a> Truth<'a> {
    fn of(&self, index: &Index<'a>, key: &str) -> Vec<&Fact<'a>> {
        index.get(key).into_iter().flatten().map(|&i| &self.facts[i]).collect()
    }

    /// Events per stored name over `from..=to`, as `{name: count}` (the api's top events).
    pub fn top_events(&self, from: NaiveDate, to: NaiveDate) -> Value {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for fact in self.facts.iter().filter(|f| (from..=to).contains(&f.day)) {
            *counts.entry(&fact.name).or_default() += 1;
        }
        json!(counts)
    }

    /// Page views per page (path) over `from..=to`, as `{page: views}` (the api's top pages).
    pub fn top_pages(&self, from: NaiveDate, to: NaiveDate) -> Value {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for fact in &self.facts {
            if fact.name == "page_view" && (from..=to).contains(&fact.day) {
                if let Some(page) = fact.properties["page"].as_str().or(fact.properties["path"].as_str()) {
                    *counts.entry(page).or_default() += 1;
                }
            }
        }
        json!(counts)
    }

    /// A course's analytics over `from..=to` (docs/contract.md §6 "Course daily analytics"), in the
    /// shape of the api's `GET /v1/courses/{id}/analytics`: `totals`, the `series` of every day
    /// and the five `popular_modules`. Views are `course_viewed` events; interactions are the
    /// course's other events; active learners are the users with any event of the course, viewers
    /// those who viewed it; time spent is learning time; the completion rate on day d is the
    /// learners who completed the course by the end of d over those enrolled by then.
    pub fn course_analytics(&self, course: &str, from: NaiveDate, to: NaiveDate) -> Value {
        let facts = self.of(&self.by_course, course);
        // First enrolment and completion of each learner, whenever they happened.
        let mut enrolled: BTreeMap<&str, NaiveDate> = BTreeMap::new();
        let mut completed: BTreeMap<&str, NaiveDate> = BTreeMap::new();
        for fact in &facts {
            let first = match fact.name.as_str() {
                "course_enrolled" => &mut enrolled,
                "course_completed" => &mut completed,
                _ => continue,
            };
            let day = first.entry(fact.user).or_insert(fact.day);
            *day = (*day).min(fact.day);
        }
        let by =
            |firsts: &BTreeMap<&str, NaiveDate>, day: NaiveDate| firsts.values().filter(|d| **d <= day).count() as i64;
        let in_range = |f: &&Fact<'_>| (from..=to).contains(&f.day);
        let (mut viewers, mut learners) = (BTreeSet::new(), BTreeSet::new());
        let mut series = Vec::new();
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for day in each_day(from, to) {
            let today: Vec<&Fact<'_>> = facts.iter().copied().filter(|f| f.day == day).collect();
            let count = |name: &str| today.iter().filter(|f| f.name == name).count() as i64;
            let day_viewers: BTreeSet<&str> = today
                .iter()
                .filter(|f| f.name == "course_viewed")
                .map(|f| f.user)
                .collect();
            let day_learners: BTreeSet<&str> = today.iter().map(|f| f.user).collect();
            let time: i64 = today.iter().map(|f| f.learning_time_s()).sum();
            let (enrolled_by, completed_by) = (by(&enrolled, day), by(&completed, day));
            let row = [
                ("views", count("course_viewed")),
                (
                    "interactions",
                    today.iter().filter(|f| f.name != "course_viewed").count() as i64,
                ),
                ("enrollments", count("course_enrolled")),
                ("lesson_completions", count("lesson_completed")),
                ("course_completions", count("course_completed")),
                ("time_spent_s", time),
            ];
            let mut entry = json!({
                "date": day,
                "unique_viewers": day_viewers.len(),
                "active_learners": day_learners.len(),
                "avg_time_spent_s": ratio(time, day_learners.len() as i64),
                "enrolled_by_end_of_day": enrolled_by,
                "completed_by_end_of_day": completed_by,
                "completion_rate": ratio(completed_by, enrolled_by),
            });
            for (field, value) in row {
                entry[field] = json!(value);
                *sums.entry(field).or_default() += value;
            }
            series.push(entry);
            viewers.extend(day_viewers);
            learners.extend(day_learners);
        }
        let mut modules: BTreeMap<&str, i64> = BTreeMap::new();
        for fact in facts
            .iter()
            .copied()
            .filter(in_range)
            .filter(|f| f.name == "lesson_completed")
        {
            if let Some(module) = fact.properties["module_id"].as_str() {
                *modules.entry(module).or_default() += 1;
            }
        }
        let mut popular: Vec<(&str, i64)> = modules.into_iter().collect();
        popular.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        popular.truncate(5);
        let mut totals = json!({
            "unique_viewers": viewers.len(),
            "active_learners": learners.len(),
            "avg_time_spent_s": ratio(sums.get("time_spent_s").copied().unwrap_or(0), learners.len() as i64),
            "completion_rate": ratio(by(&completed, to), by(&enrolled, to)),
        });
        for (field, value) in sums {
            totals[field] = json!(value);
        }
        json!({
            "course_id": course,
            "totals": totals,
            "popular_modules": popular.into_iter()
                .map(|(m, n)| json!({"module_id": m, "lesson_completions": n}))
                .collect::<Vec<_>>(),
            "series": series,
        })
    }

    /// A user's learning stats (docs/contract.md §6 "User learning stats") as of `today`, in the shape
    /// of the api's `GET /v1/users/{id}/stats`; None for a user without events. Quizzes taken and
    /// passed are distinct quizzes (passed: any attempt passed); the average quiz score is over
    /// attempts, each as a percentage of its maximum; points are those of each distinct badge
    /// when first earned.
    pub fn user_stats(&self, user: &str, today: NaiveDate) -> Option<Value> {
        let facts = self.of(&self.by_user, user);
        let first = facts.iter().copied().map(|f| f.ts).min()?;
        let last = facts.iter().copied().map(|f| f.ts).max()?;
        let distinct = |name: &str, field: &str| -> BTreeSet<&str> {
            facts
                .iter()
                .filter(|f| f.name == name)
                .filter_map(|f| f.properties[field].as_str())
                .collect()
        };
        let quizzes: Vec<&Fact<'_>> = facts.iter().copied().filter(|f| f.name == "quiz_submitted").collect();
        let passed: BTreeSet<&str> = quizzes
            .iter()
            .filter(|f| f.properties["passed"].as_bool() == Some(true))
            .filter_map(|f| f.properties["quiz_id"].as_str())
            .collect();
        let scores: Vec<f64> = quizzes
            .iter()
            .map(|f| {
                let max = f.number("max_score").filter(|m| *m > 0.0).unwrap_or(100.0);
                (f.number("score").unwrap_or(0.0) / max * 100.0).clamp(0.0, 100.0)
            })
            .collect();
        let mut badges: BTreeMap<&str, (DateTime<Utc>, i64)> = BTreeMap::new();
        for fact in facts.iter().copied().filter(|f| f.name == "badge_earned") {
            if let Some(badge) = fact.properties["badge_id"].as_str() {
                let points = fact.number("points").map_or(0, |p| p.round() as i64);
                let entry = badges.entry(badge).or_insert((fact.ts, points));
                if fact.ts < entry.0 {
                    *entry = (fact.ts, points);
                }
            }
        }
        let days: BTreeSet<NaiveDate> = facts.iter().copied().map(|f| f.day).collect();
        let (current, longest) = streaks(&days, today);
        let millis = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Some(json!({
            "user_id": user,
            "courses_enrolled": distinct("course_enrolled", "course_id").len(),
            "courses_completed": distinct("course_completed", "course_id").len(),
            "learning_time_s": facts.iter().copied().map(Fact::learning_time_s).sum::<i64>(),
            "quizzes_taken": distinct("quiz_submitted", "quiz_id").len(),
            "quizzes_passed": passed.len(),
            "average_quiz_score": if scores.is_empty() { Value::Null } else { json!(scores.iter().sum::<f64>() / scores.len() as f64) },
            "points": badges.values().map(|(_, p)| p).sum::<i64>(),
            "badges": badges.len(),
            "current_streak_days": current,
            "longest_streak_days": longest,
            "active_days": days.len(),
            "first_seen_at": millis(first),
            "last_activity_at": millis(last),
        }))
    }
}

/// Where an api answer differs from the expected one.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The field, e.g. `series[2026-03-01].views`.
    pub path: String,
    pub expected: Value,
    pub actual: Value,
}

/// Every field of `expected` that `actual` does not have equal (fields `actual` has besides are
/// not compared). Integers compare exactly, other numbers within 1e-9 relative; strings that are
/// both RFC 3339 times compare as instants; array items pair by position and are named by their
/// `date`, `module_id` or index.
pub fn differences(expected: &Value, actual: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    compare(String::new(), expected, actual, &mut out);
    out
}

fn compare(path: String, expected: &Value, actual: &Value, out: &mut Vec<Difference>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (expected, actual) {
        (Value::Object(fields), Value::Object(_)) => {
            for (key, value) in fields {
                compare(join(key), value, actual.get(key).unwrap_or(&Value::Null), out);
            }
            return;
        }
        (Value::Array(items), Value::Array(others)) => {
            for i in 0..items.len().max(others.len()) {
                let (e, a) = (
                    items.get(i).unwrap_or(&Value::Null),
                    others.get(i).unwrap_or(&Value::Null),
                );
                let label = ["date", "module_id"]
                    .iter()
                    .find_map(|k| e.get(k).or_else(|| a.get(k)).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_owned);
                compare(format!("{path}[{label}]"), e, a, out);
            }
            return;
        }
        (Value::Number(e), Value::Number(a)) => {
            let equal = match (e.as_i64(), a.as_i64()) {
                (Some(e), Some(a)) => e == a,
                _ => match (e.as_f64(), a.as_f64()) {
                    (Some(e), Some(a)) => (e - a).abs() <= 1e-9 * e.abs().max(1.0),
                    _ => false,
                },
            };
            if equal {
                return;
            }
        }
        (Value::String(e), Value::String(a)) => {
            let instant = |s: &str| DateTime::parse_from_rfc3339(s).ok();
            if e == a || instant(e).is_some_and(|e| Some(e) == instant(a)) {
                return;
            }
        }
        (e, a) if e == a => return,
        _ => {}
    }
    out.push(Difference {
        path,
        expected: expected.clone(),
        actual: actual.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Workload {
        Workload {
            learners: 50,
            courses: 4,
            days: 10,
            lessons: 8,
            seed: 7,
            end: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let (a, b) = (small().generate(), small().generate());
        assert_eq!(a.events, b.events);
        assert_eq!(a.dau, b.dau);
    }

    #[test]
    fn every_day_of_the_range_has_learners_and_the_funnels_have_drop_offs() {
        let generated = small().generate();
        assert_eq!(generated.dau.len(), 10);
        assert_eq!(*generated.dau.keys().next_back().unwrap(), small().end);
        let count = |name: &str| generated.events.iter().filter(|e| e["event"] == name).count();
        assert!(count("Product View") > count("Add To Cart"));
        assert!(generated
            .events
            .iter()
            .any(|e| e["type"] == "page" && e["properties"]["path"] == "/dashboard"));
        assert!(count("Add To Cart") > count("Purchase"));
        assert!(count("Course Completed") > 0);
    }

    #[test]
    fn anonymous_visitors_browse_without_a_user_id_and_count_as_active_users() {
        let generated = small().generate();
        let anonymous: Vec<&Value> = generated.events.iter().filter(|e| e["userId"].is_null()).collect();
        assert!(!anonymous.is_empty());
        assert!(anonymous
            .iter()
            .all(|e| e["anonymousId"].as_str().is_some_and(|a| a.starts_with("anon-"))));
        assert!(anonymous.iter().any(|e| e["event"] == "Course Viewed"));
        let learners_only: Vec<Value> = generated
            .events
            .iter()
            .filter(|e| !e["userId"].is_null())
            .cloned()
            .collect();
        let visitors_days: usize =
            dau(&generated.events).values().sum::<usize>() - dau(&learners_only).values().sum::<usize>();
        let visitor_days: BTreeSet<(String, NaiveDate)> = anonymous
            .iter()
            .map(|e| (user_of(e).unwrap().to_owned(), day_of(e).unwrap()))
            .collect();
        assert_eq!(visitors_days, visitor_days.len());
        let ids: BTreeSet<&str> = generated
            .events
            .iter()
            .map(|e| e["messageId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), generated.events.len(), "every generated event is distinct");
    }

    fn mix() -> Mix {
        Mix {
            batch_size: 20,
            resend_fraction: 0.05,
            duplicate_batches: 4,
            late_fraction: 0.02,
        }
    }

    fn id(event: &Value) -> &str {
        event["messageId"].as_str().unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_deliveries() {
        let (a, b) = (
            small().generate().deliveries(&mix()),
            small().generate().deliveries(&mix()),
        );
        assert_eq!(a, b);
        let other = Workload { seed: 8, ..small() }.generate().deliveries(&mix());
        assert_ne!(a.requests, other.requests);
    }

    #[test]
    fn the_distinct_events_of_the_deliveries_are_the_generated_events() {
        let generated = small().generate();
        for mix in [mix(), Mix::realistic(100), Mix::none(100)] {
            let deliveries = generated.deliveries(&mix);
            let mut distinct: BTreeMap<&str, &Value> = BTreeMap::new();
            for event in deliveries.requests.iter().flatten() {
                let first = distinct.entry(id(event)).or_insert(event);
                assert_eq!(*first, event, "every copy of an event is the same event");
            }
            let generated_ids: BTreeMap<&str, &Value> = generated.events.iter().map(|e| (id(e), e)).collect();
            assert_eq!(distinct, generated_ids);
            assert_eq!(deliveries.distinct, generated.events.len());
            assert!(deliveries
                .requests
                .iter()
                .all(|r| !r.is_empty() && r.len() <= MAX_BATCH));
            for request in &deliveries.requests {
                let ids: BTreeSet<&str> = request.iter().map(id).collect();
                assert_eq!(ids.len(), request.len(), "no request repeats an event");
            }
        }
        let none = generated.deliveries(&Mix::none(100));
        let chunks: Vec<Vec<Value>> = generated.events.chunks(100).map(<[Value]>::to_vec).collect();
        assert_eq!(none.requests, chunks, "no mix: the events in order");
        assert_eq!((none.resends, none.duplicate_batches, none.late), (0, 0, 0));
    }

    #[test]
    fn resends_duplicates_and_late_events_are_as_configured() {
        let generated = small().generate();
        let n = generated.events.len();
        let mix = mix();
        let deliveries = generated.deliveries(&mix);
        assert_eq!(deliveries.resends, (n as f64 * mix.resend_fraction).round() as usize);
        assert_eq!(deliveries.late, (n as f64 * mix.late_fraction).round() as usize);
        assert_eq!(deliveries.duplicate_batches, mix.duplicate_batches);
        assert!(deliveries.resends > 0 && deliveries.late > 0);

        // Duplicated requests: the same events as an earlier request.
        let mut seen: BTreeSet<Vec<&str>> = BTreeSet::new();
        let mut originals = Vec::new();
        let mut copies = 0;
        for request in &deliveries.requests {
            if seen.insert(request.iter().map(id).collect()) {
                originals.push(request);
            } else {
                copies += request.len();
            }
        }
        assert_eq!(deliveries.requests.len() - originals.len(), mix.duplicate_batches);
        assert_eq!(copies, deliveries.duplicate_batch_events);
        // Without them, each resent event is there twice, in two requests, and the others once.
        let mut sent: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (r, request) in originals.iter().enumerate() {
            for event in request.iter() {
                sent.entry(id(event)).or_default().push(r);
            }
        }
        assert_eq!(sent.values().filter(|r| r.len() == 2).count(), deliveries.resends);
        assert!(sent.values().all(|r| r.len() <= 2 && r.first() != r.get(1)));
        assert_eq!(
            deliveries.events_sent(),
            n + deliveries.resends + deliveries.duplicate_batch_events
        );
        // Late: first sent in a request after one that held a later day of the same learner.
        let mut latest_sent: BTreeMap<&str, NaiveDate> = BTreeMap::new();
        let mut first_sent = BTreeSet::new();
        let mut late = 0;
        for request in &originals {
            for event in request.iter().filter(|e| first_sent.insert(id(e))) {
                let (user, day) = (user_of(event).unwrap(), day_of(event).unwrap());
                if latest_sent.get(user).is_some_and(|d| *d > day) {
                    late += 1;
                }
            }
            for event in request.iter() {
                let latest = latest_sent
                    .entry(user_of(event).unwrap())
                    .or_insert(day_of(event).unwrap());
                *latest = (*latest).max(day_of(event).unwrap());
            }
        }
        assert_eq!(late, deliveries.late);
    }

    #[test]
    fn stored_names_are_snake_case_and_pages_are_page_views() {
        let name = |event: &str| stored_name(&json!({"type": "track", "event": event}));
        assert_eq!(name("Course Viewed"), "course_viewed");
        assert_eq!(name("Typing Test Completed"), "typing_test_completed");
        assert_eq!(name("courseViewed"), "course_viewed");
        assert_eq!(name("COURSE_VIEWED"), "course_viewed");
        assert_eq!(name("  add -- to cart "), "add_to_cart");
        assert_eq!(stored_name(&json!({"type": "page", "name": "/dashboard"})), "page_view");
    }

    #[test]
    fn the_expected_answers_add_up() {
        let generated = small().generate();
        let truth = generated.truth();
        let (from, to) = (generated.from, generated.to);
        let top = truth.top_events(from, to);
        let total = |v: &Value| {
            v.as_object()
                .unwrap()
                .values()
                .map(|n| n.as_i64().unwrap())
                .sum::<i64>()
        };
        assert_eq!(total(&top) as usize, generated.events.len());
        assert_eq!(top["page_view"], json!(total(&truth.top_pages(from, to))));
        assert_eq!(top["user_created"], json!(50), "every learner signs up once");
        assert!(top["course_viewed"].as_i64().unwrap() > 0);
        assert!(top.get("Course Viewed").is_none());

        let courses = generated.courses();
        assert_eq!(courses.len(), 4);
        let (mut views, mut completions, mut time) = (0, 0, 0);
        for course in &courses {
            let analytics = truth.course_analytics(course, from, to);
            let totals = &analytics["totals"];
            let series = analytics["series"].as_array().unwrap();
            assert_eq!(series.len(), 10);
            for field in [
                "views",
                "interactions",
                "enrollments",
                "lesson_completions",
                "time_spent_s",
            ] {
                let sum: i64 = series.iter().map(|d| d[field].as_i64().unwrap()).sum();
                assert_eq!(totals[field], json!(sum), "{course} {field}");
            }
            let max_daily = series
                .iter()
                .map(|d| d["unique_viewers"].as_i64().unwrap())
                .max()
                .unwrap();
            let viewers = totals["unique_viewers"].as_i64().unwrap();
            assert!(max_daily <= viewers && viewers <= totals["views"].as_i64().unwrap());
            assert!(totals["active_learners"].as_i64().unwrap() >= viewers);
            let modules: i64 = analytics["popular_modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["lesson_completions"].as_i64().unwrap())
                .sum();
            assert_eq!(
                modules,
                totals["lesson_completions"].as_i64().unwrap(),
                "two modules: all in the top five"
            );
            views += totals["views"].as_i64().unwrap();
            completions += totals["lesson_completions"].as_i64().unwrap();
            time += totals["time_spent_s"].as_i64().unwrap();
        }
        assert_eq!(json!(views), top["course_viewed"]);
        assert_eq!(json!(completions), top["lesson_completed"]);

        let users = generated.users();
        assert_eq!(users.len(), 50 + 5);
        let stats: Vec<Value> = users.iter().map(|u| truth.user_stats(u, to).unwrap()).collect();
        let sum = |field: &str| stats.iter().map(|s| s[field].as_i64().unwrap()).sum::<i64>();
        assert_eq!(sum("learning_time_s"), time, "learning time is the courses' time spent");
        assert_eq!(json!(sum("courses_enrolled")), top["course_enrolled"]);
        assert_eq!(json!(sum("badges")), top["badge_earned"]);
        assert_eq!(json!(sum("quizzes_taken")), top["quiz_submitted"]);
        assert_eq!(sum("active_days") as usize, generated.dau.values().sum::<usize>());
        assert!(stats
            .iter()
            .all(|s| s["longest_streak_days"].as_i64() >= s["current_streak_days"].as_i64()));
        assert!(truth.user_stats("nobody", to).is_none());
        let sample = generated.sample_users(20);
        assert_eq!(sample.len(), 20);
        assert!(sample.iter().any(|u| u.starts_with("anon-")) && sample.iter().any(|u| u.starts_with("learner-")));
    }

    #[test]
    fn streaks_are_runs_of_days_and_the_current_one_ends_today_or_yesterday() {
        let d = |n: u32| NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        let days: BTreeSet<NaiveDate> = [d(1), d(2), d(3), d(5), d(6)].into_iter().collect();
        assert_eq!(streaks(&days, d(6)), (2, 3));
        assert_eq!(streaks(&days, d(7)), (2, 3));
        assert_eq!(streaks(&days, d(8)), (0, 3));
        assert_eq!(streaks(&BTreeSet::new(), d(8)), (0, 0));
    }

    #[test]
    fn differences_name_the_fields_that_differ() {
        let expected = json!({"totals": {"views": 3, "rate": 0.5, "at": "2026-03-01T10:00:00.000Z"},
                              "series": [{"date": "2026-03-01", "views": 1}, {"date": "2026-03-02", "views": 2}]});
        let same = json!({"totals": {"views": 3, "rate": 0.5000000000001, "at": "2026-03-01T10:00:00Z", "extra": 1},
                          "series": [{"date": "2026-03-01", "views": 1}, {"date": "2026-03-02", "views": 2}]});
        assert_eq!(differences(&expected, &same), []);
        let other = json!({"totals": {"views": 4, "rate": 0.5, "at": "2026-03-01T10:00:00Z"},
                           "series": [{"date": "2026-03-01", "views": 1}]});
        let found: BTreeSet<String> = differences(&expected, &other).into_iter().map(|d| d.path).collect();
        assert_eq!(
            found,
            ["series[2026-03-02]".to_owned(), "totals.views".to_owned()].into()
        );
    }
}
