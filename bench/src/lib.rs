//! A realistic, deterministic e-learning workload (docs/contract.md §3): instructors who publish
//! their courses with the items in course order (lessons, videos, quizzes and their questions);
//! learners who log in, browse, view courses, enrol, work through the items in order (lessons,
//! videos played, paused, skipped and rewound, quiz questions answered and quizzes retaken after a
//! failure), give up part way (some unenrol, some stop coming at all), complete and are graded,
//! buy, earn badges and take typing tests, over a number of days; and anonymous visitors who only
//! browse. The same seed gives the same events.
//!
//! The generator also knows the answers. [`Generated`] computes, by brute force over its distinct
//! events and from the contract's definitions (docs/contract.md §4–§6, never the workers' or the api's
//! code), what the api must report: DAU, top events and pages, each course's analytics and
//! instructor metrics (engagement, at-risk learners, drop-off, item difficulty, videos, grades,
//! time on task) and each learner's stats and time on task. [`Generated::deliveries`] turns the events into the requests a real fleet of
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
    /// (the instructors' `course_published` first, then learners, then anonymous visitors).
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

/// Mixed into the seed for the courses' own shape (video lengths, question difficulty).
const CATALOG_SEED: u64 = 0x6361_7461_6c6f_6775;
/// Lessons per module; each module ends with a quiz.
const LESSONS_PER_QUIZ: usize = 4;
/// Every third lesson (the 2nd, 5th, 8th, ...) is followed by a video.
const LESSONS_PER_VIDEO: usize = 3;
/// Questions per quiz.
const QUESTIONS_PER_QUIZ: usize = 3;
/// Attempts a learner makes at most at one quiz.
const QUIZ_ATTEMPTS: usize = 3;
/// Score (of 100) that passes a quiz, and grade (0-1) that passes a course.
const QUIZ_PASS_SCORE: u32 = 60;
const COURSE_PASS_GRADE: f64 = 0.6;

/// What a course is made of, the same for every learner: its items in course order as its
/// `course_published` lists them (lessons, each third followed by a video, each fourth by a quiz
/// and the quiz's questions), its videos' lengths and its questions' difficulty.
#[derive(Debug, Clone)]
struct Course {
    id: String,
    items: Vec<String>,
    /// The video after lesson index `k`: (id, length in seconds).
    videos: BTreeMap<usize, (String, u32)>,
    /// The quiz after lesson index `k`: (id, its questions as (id, difficulty in 0-1)).
    quizzes: BTreeMap<usize, (String, Vec<(String, f64)>)>,
}

impl Course {
    fn new(course: usize, lessons: usize, rng: &mut fastrand::Rng) -> Self {
        let id = format!("course-{course:02}");
        let (mut items, mut videos, mut quizzes) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
        for lesson in 0..lessons {
            items.push(lesson_id(&id, lesson));
            if lesson % LESSONS_PER_VIDEO == 1 {
                let video = format!("{id}-video-{:02}", lesson + 1);
                items.push(video.clone());
                videos.insert(lesson, (video, rng.u32(180..=900)));
            }
            if lesson % LESSONS_PER_QUIZ == LESSONS_PER_QUIZ - 1 {
                let quiz = format!("{id}-quiz-{}", lesson / LESSONS_PER_QUIZ + 1);
                items.push(quiz.clone());
                let questions: Vec<(String, f64)> = (1..=QUESTIONS_PER_QUIZ)
                    .map(|q| (format!("{quiz}-q{q}"), rng.f64() * 0.8))
                    .collect();
                items.extend(questions.iter().map(|(q, _)| q.clone()));
                quizzes.insert(lesson, (quiz, questions));
            }
        }
        Self {
            id,
            items,
            videos,
            quizzes,
        }
    }
}

fn lesson_id(course_id: &str, lesson: usize) -> String {
    format!("{course_id}-lesson-{:02}", lesson + 1)
}

/// A learner's state in a course they enrolled in.
#[derive(Debug, Default)]
struct Enrolment {
    /// Lessons completed, in order.
    done: usize,
    /// The lesson at which the learner gives up: they open it and leave (35% of enrolments).
    quits_at: Option<usize>,
    /// Gave up, unenrolled or failed a quiz for good: no more study of the course.
    stopped: bool,
    /// The best score of each quiz taken.
    best_scores: Vec<u32>,
}

/// A learner's clock on one day of activity: each event comes `delay` seconds after the previous
/// one, and the day stays within its UTC day, however busy.
struct Today<'a> {
    user: &'a str,
    clock: DateTime<Utc>,
    day_end: DateTime<Utc>,
    seq: &'a mut u32,
    events: &'a mut Vec<Value>,
}

impl Today<'_> {
    fn emit(&mut self, delay: i64, name: &str, properties: Value) {
        self.clock = (self.clock + Duration::seconds(delay)).min(self.day_end);
        *self.seq += 1;
        self.events
            .push(event(Who::User(self.user), *self.seq, name, self.clock, properties));
    }

    /// A click's worth of time: 5 s to 4 min.
    fn next(&mut self, rng: &mut fastrand::Rng, name: &str, properties: Value) {
        self.emit(rng.i64(5..240), name, properties);
    }

    /// One viewing of a video, as players report it: play from the start, then to the end, or
    /// with a pause, a skip ahead, a rewind, or abandoned part way.
    fn watch(&mut self, rng: &mut fastrand::Rng, course_id: &str, video_id: &str, length: u32) {
        let at = |position: u32| json!({"course_id": course_id, "video_id": video_id, "length_s": length, "position_s": position});
        let watched = |from: u32, to: u32| {
            let mut properties = at(to);
            properties["duration_s"] = json!(to - from);
            properties
        };
        self.next(rng, "Video Played", at(0));
        let seek = |from: u32, to: u32| json!({"course_id": course_id, "video_id": video_id, "length_s": length, "from_s": from, "to_s": to});
        match rng.u8(0..100) {
            0..=54 => self.emit(i64::from(length), "Video Completed", watched(0, length)),
            55..=74 => {
                let paused = rng.u32(10..length - 10);
                self.emit(i64::from(paused), "Video Paused", watched(0, paused));
                self.next(rng, "Video Played", at(paused));
                self.emit(i64::from(length - paused), "Video Completed", watched(paused, length));
            }
            75..=86 => {
                // Skips ahead: the part skipped is not watched.
                let from = rng.u32(5..length / 2);
                let to = from + rng.u32(10..length / 3);
                self.emit(i64::from(from), "Video Seeked", seek(from, to));
                self.emit(1, "Video Played", at(to));
                self.emit(i64::from(length - to), "Video Completed", watched(to, length));
            }
            87..=94 => {
                // Rewinds to see a part again.
                let from = rng.u32(length / 2..length - 5);
                let to = rng.u32(0..from / 2);
                self.emit(i64::from(from), "Video Seeked", seek(from, to));
                self.emit(1, "Video Played", at(to));
                self.emit(i64::from(length - to), "Video Completed", watched(to, length));
            }
            _ => {
                let paused = rng.u32(5..length * 2 / 3);
                self.emit(i64::from(paused), "Video Paused", watched(0, paused));
            }
        }
    }

    /// Takes a quiz: each attempt answers every question once and submits; a failed attempt is
    /// often retaken, up to [`QUIZ_ATTEMPTS`]. Returns the best score and whether any passed.
    fn quiz(
        &mut self,
        rng: &mut fastrand::Rng,
        course_id: &str,
        quiz_id: &str,
        questions: &[(String, f64)],
        skill: f64,
    ) -> (u32, bool) {
        let mut best = 0;
        for attempt in 0..QUIZ_ATTEMPTS {
            let mut correct = 0;
            for (question, difficulty) in questions {
                let p = (0.35 + 0.6 * skill - 0.5 * difficulty + 0.15 * attempt as f64).clamp(0.05, 0.97);
                let right = rng.f64() < p;
                let spent = rng.i64(15..150);
                self.emit(
                    spent,
                    "Question Answered",
                    json!({"course_id": course_id, "quiz_id": quiz_id, "item_id": question, "correct": right, "duration_s": spent}),
                );
                correct += u32::from(right);
            }
            let score = (correct * 100 + questions.len() as u32 / 2) / questions.len().max(1) as u32;
            let passed = score >= QUIZ_PASS_SCORE;
            self.next(
                rng,
                "Quiz Submitted",
                json!({"course_id": course_id, "quiz_id": quiz_id, "score": score, "max_score": 100, "passed": passed}),
            );
            best = best.max(score);
            if passed {
                return (best, true);
            }
            if rng.f64() < 0.3 {
                break;
            }
        }
        (best, false)
    }
}

impl Workload {
    /// The courses' shapes, drawn from their own generator so that the learners' draws do not
    /// move them.
    fn catalog(&self) -> Vec<Course> {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ CATALOG_SEED);
        (0..self.courses)
            .map(|c| Course::new(c, self.lessons, &mut rng))
            .collect()
    }

    pub fn generate(&self) -> Generated {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut out = Generated::default();
        let start = self.end - Duration::days(self.days - 1);
        let catalog = self.catalog();
        self.publish(&catalog, &mut out.events, start);
        for learner in 0..self.learners {
            let user = format!("learner-{learner:05}");
            // Engagement: most learners come rarely, some daily.
            let activity = match rng.u8(0..10) {
                0..=4 => 0.12,
                5..=7 => 0.35,
                _ => 0.75,
            };
            // One in eight struggles with the quizzes.
            let skill = if rng.f64() < 0.125 {
                0.1 + 0.3 * rng.f64()
            } else {
                0.5 + 0.5 * rng.f64()
            };
            let first_day = rng.i64(0..self.days);
            // One in twelve stops coming at all after some day.
            let last_day = if rng.f64() < 1.0 / 12.0 {
                first_day + rng.i64(0..self.days)
            } else {
                self.days
            };
            let mut enrolments: BTreeMap<usize, Enrolment> = BTreeMap::new();
            let mut seq = 0u32;
            for offset in first_day..self.days.min(last_day + 1) {
                if offset != first_day && rng.f64() > activity {
                    continue;
                }
                let day = start + Duration::days(offset);
                let mut today = Today {
                    user: &user,
                    clock: day
                        .and_hms_opt(rng.u32(6..20), rng.u32(0..60), rng.u32(0..60))
                        .unwrap_or_default()
                        .and_utc(),
                    day_end: day.and_hms_milli_opt(23, 59, 59, 999).unwrap_or_default().and_utc(),
                    seq: &mut seq,
                    events: &mut out.events,
                };
                if offset == first_day {
                    today.next(&mut rng, "User Created", json!({}));
                }
                let method = if rng.bool() { "password" } else { "google" };
                today.next(&mut rng, "Login", json!({"method": method}));
                today.next(&mut rng, PAGE, json!({"path": "/dashboard"}));
                // Browse: view a course, maybe enrol (the course funnel).
                let course = rng.usize(0..self.courses);
                let course_id = &catalog[course].id;
                today.next(&mut rng, "Course Viewed", json!({"course_id": course_id}));
                today.next(&mut rng, PAGE, json!({"path": format!("/courses/{course_id}")}));
                if !enrolments.contains_key(&course) && rng.f64() < 0.45 {
                    today.next(&mut rng, "Product View", json!({"course_id": course_id}));
                    if rng.f64() < 0.6 {
                        today.next(&mut rng, "Add To Cart", json!({"course_id": course_id, "amount": 49}));
                        if rng.f64() < 0.7 {
                            today.next(
                                &mut rng,
                                "Purchase",
                                json!({"course_id": course_id, "amount": 49, "currency": "USD"}),
                            );
                            today.next(
                                &mut rng,
                                "Course Enrolled",
                                json!({"course_id": course_id, "amount": 49}),
                            );
                            // Drop-offs come from learners giving up (early more often than
                            // late) and from learners not returning.
                            let quits_at =
                                (rng.f64() < 0.35).then(|| rng.usize(0..self.lessons).min(rng.usize(0..self.lessons)));
                            enrolments.insert(
                                course,
                                Enrolment {
                                    quits_at,
                                    ..Enrolment::default()
                                },
                            );
                        }
                    }
                }
                // Study the courses enrolled in, along the course's items in order.
                for (&course, enrolment) in &mut enrolments {
                    let shape = &catalog[course];
                    let course_id = &shape.id;
                    if enrolment.stopped || enrolment.done >= self.lessons || rng.f64() < 0.3 {
                        continue;
                    }
                    let lessons_today = rng.usize(1..=3).min(self.lessons - enrolment.done);
                    for lesson in enrolment.done..enrolment.done + lessons_today {
                        let module_id = format!("module-{}", lesson / LESSONS_PER_QUIZ + 1);
                        let lesson_id = lesson_id(course_id, lesson);
                        if enrolment.quits_at == Some(lesson) {
                            // Opens the lesson, reads a little, and leaves; some unenrol.
                            let read = rng.i64(5..90);
                            today.next(
                                &mut rng,
                                "Content Viewed",
                                json!({"course_id": course_id, "item_id": lesson_id, "duration_s": read}),
                            );
                            if rng.f64() < 0.3 {
                                today.next(&mut rng, "Course Unenrolled", json!({"course_id": course_id}));
                            }
                            enrolment.stopped = true;
                            break;
                        }
                        let ids = json!({"course_id": course_id, "module_id": module_id, "lesson_id": lesson_id});
                        today.next(&mut rng, "Lesson Started", ids.clone());
                        let spent = rng.i64(120..1_800);
                        let mut completed = ids;
                        completed["time_spent_s"] = json!(spent);
                        today.emit(spent, "Lesson Completed", completed);
                        enrolment.done = lesson + 1;
                        if let Some((video, length)) = shape.videos.get(&lesson) {
                            today.watch(&mut rng, course_id, video, *length);
                        }
                        if let Some((quiz, questions)) = shape.quizzes.get(&lesson) {
                            let (best, passed) = today.quiz(&mut rng, course_id, quiz, questions, skill);
                            enrolment.best_scores.push(best);
                            // Failing for good makes some give up, still enrolled.
                            if !passed && rng.bool() {
                                enrolment.stopped = true;
                                break;
                            }
                        }
                    }
                    if enrolment.done == self.lessons && !enrolment.stopped {
                        today.next(&mut rng, "Course Completed", json!({"course_id": course_id}));
                        let scores = &enrolment.best_scores;
                        let mean = scores.iter().map(|s| f64::from(*s)).sum::<f64>() / scores.len().max(1) as f64;
                        let grade = (mean).round() / 100.0;
                        today.next(
                            &mut rng,
                            "Course Graded",
                            json!({"course_id": course_id, "grade": grade, "passed": grade >= COURSE_PASS_GRADE}),
                        );
                        today.next(
                            &mut rng,
                            "Badge Earned",
                            json!({"badge_id": format!("finisher-{course_id}"), "points": 100}),
                        );
                    }
                }
                if rng.f64() < 0.15 {
                    let (wpm, accuracy) = (rng.u32(20..120), f64::from(rng.u32(80..100)) / 100.0);
                    today.next(
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

    /// Each course's `course_published`, by its instructor, early on the first day: the catalog
    /// entry with the items in course order, before any learner comes.
    fn publish(&self, catalog: &[Course], events: &mut Vec<Value>, start: NaiveDate) {
        let at = start.and_hms_opt(0, 30, 0).unwrap_or_default().and_utc();
        for (n, course) in catalog.iter().enumerate() {
            let instructor = format!("instructor-{:02}", n % 5);
            let properties = json!({
                "course_id": course.id, "title": format!("Course {n}"), "total_lessons": self.lessons,
                "instructor_id": instructor, "items": course.items,
            });
            events.push(event(
                Who::User(&instructor),
                n as u32 + 1,
                "Course Published",
                at + Duration::seconds(n as i64),
                properties,
            ));
        }
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
    /// Breaks ties of event time (docs/contract.md §6 "Instructor metrics").
    message_id: &'a str,
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
                    message_id: e["messageId"].as_str().unwrap_or_default(),
                    name: stored_name(e),
                    day: ts.date_naive(),
                    ts,
                    properties: &e["properties"],
                })
            })
            .collect();
        let (mut by_course, mut by_user, mut catalog) = (Index::new(), Index::new(), Index::new());
        for (i, fact) in facts.iter().enumerate() {
            by_user.entry(fact.user).or_default().push(i);
            if let Some(course) = fact.course() {
                // The catalog's own event is no course work (§6).
                let index = if fact.name == "course_published" {
                    &mut catalog
                } else {
                    &mut by_course
                };
                index.entry(course).or_default().push(i);
            }
        }
        Truth {
            facts,
            by_course,
            by_user,
            catalog,
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
    /// A course's events, except its `course_published`.
    by_course: Index<'a>,
    by_user: Index<'a>,
    /// A course's `course_published` events.
    catalog: Index<'a>,
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

/// Events no more than this far apart are one session (docs/contract.md §6 "Instructor metrics").
const SESSION_GAP: Duration = Duration::minutes(30);
/// Equal parts of a video whose coverage is reported, and the share a full view covers.
const VIDEO_SEGMENTS: usize = 20;
const FULL_VIEW: f64 = 0.95;

/// The at-risk rules' thresholds (docs/contract.md §6 "Instructor metrics"); the defaults are the
/// api's when no parameter is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskRules {
    pub inactive_days: i64,
    pub behind_points: f64,
    pub failed_in_row: usize,
    pub pass_mark: f64,
}

impl Default for RiskRules {
    fn default() -> Self {
        Self {
            inactive_days: 14,
            behind_points: 25.0,
            failed_in_row: 3,
            pass_mark: 0.5,
        }
    }
}

/// A property as an id: a non-empty string, or an integer printed (§5).
fn id_in(properties: &Value, field: &str) -> Option<String> {
    match &properties[field] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON number, or a numeric string (§5).
fn number_in(properties: &Value, field: &str) -> Option<f64> {
    match &properties[field] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite())
}

/// Whole seconds of a duration: rounded; absent, not a number, negative or 10⁹ or more are 0.
fn whole_seconds(value: Option<f64>) -> i64 {
    value.filter(|s| *s > 0.0 && *s < 1e9).map_or(0, |s| s.round() as i64)
}

impl Fact<'_> {
    /// The duration the event reports: `duration_s`, else `time_spent_s`.
    fn reported_s(&self) -> i64 {
        if self.properties.get("duration_s").is_some() {
            whole_seconds(number_in(self.properties, "duration_s"))
        } else {
            whole_seconds(number_in(self.properties, "time_spent_s"))
        }
    }

    fn order(&self) -> (DateTime<Utc>, &str) {
        (self.ts, self.message_id)
    }
}

/// Sessions of events at `times` (in order): runs no more than [`SESSION_GAP`] apart, as
/// (start, duration in milliseconds).
fn sessions(times: &[DateTime<Utc>]) -> Vec<(DateTime<Utc>, i64)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for &t in times {
        match out.last_mut() {
            Some((_, last)) if t - *last <= SESSION_GAP => *last = t,
            _ => out.push((t, t)),
        }
    }
    out.into_iter()
        .map(|(start, end)| (start, (end - start).num_milliseconds()))
        .collect()
}

/// One learner's watched intervals of one video from their events of it in order: a play until
/// the next event when that is a pause, a completion (their `position_s`) or a seek (its `from_s`).
fn watched_intervals(events: &[&Fact<'_>]) -> Vec<(f64, f64)> {
    let mut intervals = Vec::new();
    let mut playing: Option<f64> = None;
    for event in events {
        let position = if event.name == "video_seeked" {
            number_in(event.properties, "from_s")
        } else {
            number_in(event.properties, "position_s")
        };
        if let (Some(from), Some(to)) = (playing, position) {
            if event.name != "video_played" && to >= from {
                intervals.push((from, to));
            }
        }
        playing = if event.name == "video_played" { position } else { None };
    }
    intervals
}

/// The length of the union of `intervals` within `[0, length]`.
fn coverage(intervals: &[(f64, f64)], length: f64) -> f64 {
    let mut parts: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(a, b)| (a.max(0.0), b.min(length)))
        .filter(|(a, b)| a < b)
        .collect();
    parts.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut total, mut end) = (0.0, f64::NEG_INFINITY);
    for (a, b) in parts {
        if b > end {
            total += b - a.max(end);
            end = b;
        }
    }
    total
}

/// The median (the mean of the two middle values of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn rate(a: usize, b: usize) -> Value {
    ratio(a as i64, b as i64)
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The instructor metrics (docs/contract.md §6 "Instructor metrics", §7), from the events by brute
/// force, in the api's shapes. Learners are ids (`userId`, else `anonymousId`); everything is by
/// event time, ties by messageId.
impl<'a> Truth<'a> {
    /// A course's events (without its `course_published`) in event order.
    fn course_in_order(&self, course: &str) -> Vec<&Fact<'a>> {
        let mut facts = self.of(&self.by_course, course);
        facts.sort_by(|a, b| a.order().cmp(&b.order()));
        facts
    }

    /// Per learner, the latest enrol (true) or unenrol (false) of the course.
    fn enrolment_states(facts: &[&Fact<'a>]) -> BTreeMap<&'a str, bool> {
        let mut states = BTreeMap::new();
        for fact in facts {
            match fact.name.as_str() {
                "course_enrolled" => states.insert(fact.user, true),
                "course_unenrolled" => states.insert(fact.user, false),
                _ => None,
            };
        }
        states
    }

    /// The catalog's items of a course: those of its latest `course_published` carrying `items`.
    pub fn catalog_items(&self, course: &str) -> Vec<String> {
        let mut published = self.of(&self.catalog, course);
        published.sort_by(|a, b| a.order().cmp(&b.order()));
        published
            .iter()
            .rev()
            .find_map(|f| f.properties["items"].as_array())
            .map(|items| {
                let mut ids: Vec<String> = Vec::new();
                for item in items {
                    if let Some(id) = id_in(&json!({"id": item}), "id") {
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
                ids
            })
            .unwrap_or_default()
    }

    /// `GET /v1/courses/{id}/engagement` as of `today`.
    pub fn engagement(&self, course: &str, today: NaiveDate) -> Value {
        let facts = self.course_in_order(course);
        let mut latest: BTreeMap<&str, NaiveDate> = BTreeMap::new();
        for fact in &facts {
            latest.insert(fact.user, fact.day);
        }
        let since = |days: i64| {
            latest
                .values()
                .filter(|d| **d >= today - Duration::days(days - 1))
                .count()
        };
        json!({
            "current_enrollees": Self::enrolment_states(&facts).values().filter(|e| **e).count(),
            "active_7d": since(7),
            "active_30d": since(30),
        })
    }

    /// `GET /v1/courses/{id}/drop-off`: reach along the catalog's items, then the other items
    /// reached, by id.
    pub fn drop_off(&self, course: &str) -> Value {
        let mut reach: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for fact in self.of(&self.by_course, course) {
            for field in ["item_id", "lesson_id", "quiz_id", "video_id"] {
                if let Some(item) = id_in(fact.properties, field) {
                    reach.entry(item).or_default().insert(fact.user);
                }
            }
        }
        let mut previous: Option<usize> = None;
        let mut items = Vec::new();
        for item in self.catalog_items(course) {
            let learners = reach.remove(&item).map_or(0, |r| r.len());
            items.push(json!({
                "item_id": item,
                "learners": learners,
                "from_previous": previous.map_or(Value::Null, |p| rate(learners, p)),
            }));
            previous = Some(learners);
        }
        let uncatalogued: Vec<Value> = reach
            .into_iter()
            .map(|(item, learners)| json!({"item_id": item, "learners": learners.len()}))
            .collect();
        json!({"items": items, "uncatalogued": uncatalogued})
    }

    /// `GET /v1/courses/{id}/items/difficulty`: per item (by id), from each learner's attempts.
    pub fn difficulty(&self, course: &str) -> Value {
        let mut attempts: BTreeMap<String, BTreeMap<&str, Vec<bool>>> = BTreeMap::new();
        for fact in self.course_in_order(course) {
            let (item, correct) = match fact.name.as_str() {
                "question_answered" => (id_in(fact.properties, "item_id"), fact.properties["correct"].as_bool()),
                "quiz_submitted" => (
                    id_in(fact.properties, "quiz_id"),
                    Some(fact.properties["passed"].as_bool() == Some(true)),
                ),
                _ => continue,
            };
            if let (Some(item), Some(correct)) = (item, correct) {
                attempts
                    .entry(item)
                    .or_default()
                    .entry(fact.user)
                    .or_default()
                    .push(correct);
            }
        }
        let items: Vec<Value> = attempts
            .into_iter()
            .map(|(item, learners)| {
                let n = learners.len();
                let first = learners.values().filter(|a| a.first() == Some(&true)).count();
                let last = learners.values().filter(|a| a.last() == Some(&true)).count();
                let until: Vec<usize> = learners
                    .values()
                    .filter_map(|a| a.iter().position(|c| *c).map(|i| i + 1))
                    .collect();
                json!({
                    "item_id": item,
                    "learners": n,
                    "attempts": learners.values().map(Vec::len).sum::<usize>(),
                    "first_attempt_correct_rate": rate(first, n),
                    "last_attempt_correct_rate": rate(last, n),
                    "mean_attempts_until_correct": rate(until.iter().sum(), until.len()),
                    "never_correct": n - until.len(),
                })
            })
            .collect();
        json!({ "items": items })
    }

    /// `GET /v1/courses/{id}/videos`: per video (by id), viewers, full views and segment coverage.
    pub fn videos(&self, course: &str) -> Value {
        let mut videos: BTreeMap<String, BTreeMap<&str, Vec<&Fact<'a>>>> = BTreeMap::new();
        for fact in self.course_in_order(course) {
            if fact.name.starts_with("video_") && fact.name != "video_progress" {
                if let Some(video) = id_in(fact.properties, "video_id") {
                    videos
                        .entry(video)
                        .or_default()
                        .entry(fact.user)
                        .or_default()
                        .push(fact);
                }
            }
        }
        let items: Vec<Value> = videos
            .into_iter()
            .map(|(video, learners)| {
                let length = learners
                    .values()
                    .flatten()
                    .filter_map(|f| number_in(f.properties, "length_s").filter(|l| *l > 0.0))
                    .reduce(f64::max);
                let watched: Vec<Vec<(f64, f64)>> = learners
                    .values()
                    .map(|events| watched_intervals(events))
                    .filter(|w| !w.is_empty())
                    .collect();
                let (full_views, segments) = match length {
                    Some(length) => {
                        let full = watched
                            .iter()
                            .filter(|w| coverage(w, length) >= FULL_VIEW * length)
                            .count();
                        let segments: Vec<Value> = (0..VIDEO_SEGMENTS)
                            .map(|k| {
                                let mid = length * (k as f64 + 0.5) / VIDEO_SEGMENTS as f64;
                                let hits: Vec<usize> = watched
                                    .iter()
                                    .map(|w| w.iter().filter(|(a, b)| *a <= mid && mid <= *b).count())
                                    .collect();
                                json!({
                                    "index": k,
                                    "from_s": length * k as f64 / VIDEO_SEGMENTS as f64,
                                    "to_s": length * (k + 1) as f64 / VIDEO_SEGMENTS as f64,
                                    "viewers": hits.iter().filter(|n| **n >= 1).count(),
                                    "rewatched": hits.iter().filter(|n| **n >= 2).count(),
                                })
                            })
                            .collect();
                        (json!(full), segments)
                    }
                    None => (Value::Null, Vec::new()),
                };
                json!({
                    "video_id": video,
                    "length_s": length,
                    "viewers": watched.len(),
                    "full_views": full_views,
                    "segments": segments,
                })
            })
            .collect();
        json!({ "items": items })
    }

    /// Per learner of the course, the latest grade and the latest boolean `passed` of its
    /// `course_graded` events.
    fn grade_registers(facts: &[&Fact<'a>]) -> BTreeMap<&'a str, (Option<f64>, Option<bool>)> {
        let mut registers: BTreeMap<&str, (Option<f64>, Option<bool>)> = BTreeMap::new();
        for fact in facts.iter().filter(|f| f.name == "course_graded") {
            let grade = number_in(fact.properties, "grade")
                .or_else(|| {
                    let max = number_in(fact.properties, "max_score").filter(|m| *m > 0.0)?;
                    Some(number_in(fact.properties, "score")? / max)
                })
                .map(|g| g.clamp(0.0, 1.0));
            let passed = fact.properties["passed"].as_bool();
            if grade.is_some() || passed.is_some() {
                let register = registers.entry(fact.user).or_default();
                register.0 = grade.or(register.0);
                register.1 = passed.or(register.1);
            }
        }
        registers
    }

    /// `GET /v1/courses/{id}/grades?buckets=&pass_mark=`.
    pub fn grades(&self, course: &str, buckets: usize, pass_mark: f64) -> Value {
        let registers = Self::grade_registers(&self.course_in_order(course));
        let mut counts = vec![0usize; buckets];
        for grade in registers.values().filter_map(|r| r.0) {
            // Bucket k holds [k/b, (k+1)/b), compared as the bounds the answer prints.
            let k = (0..buckets)
                .rev()
                .find(|k| grade >= *k as f64 / buckets as f64)
                .unwrap_or(0);
            counts[k] += 1;
        }
        let passed = registers
            .values()
            .filter(|(grade, passed)| passed.or(grade.map(|g| g >= pass_mark)) == Some(true))
            .count();
        json!({
            "graded": registers.len(),
            "passed": passed,
            "pass_rate": rate(passed, registers.len()),
            "buckets": counts.iter().enumerate().map(|(k, n)| json!({
                "from": k as f64 / buckets as f64, "to": (k + 1) as f64 / buckets as f64, "learners": n,
            })).collect::<Vec<_>>(),
        })
    }

    /// `GET /v1/courses/{id}/at-risk` under `rules` as of `today`: every flagged current enrollee,
    /// most reasons first, then by id, and the median progress.
    pub fn at_risk(&self, course: &str, rules: RiskRules, today: NaiveDate) -> Value {
        let facts = self.course_in_order(course);
        let total_lessons = {
            let mut published = self.of(&self.catalog, course);
            published.sort_by(|a, b| a.order().cmp(&b.order()));
            published
                .iter()
                .rev()
                .find_map(|f| number_in(f.properties, "total_lessons").filter(|n| *n > 0.0))
        };
        let enrollees: Vec<&str> = Self::enrolment_states(&facts)
            .into_iter()
            .filter(|(_, enrolled)| *enrolled)
            .map(|(user, _)| user)
            .collect();
        let grades = Self::grade_registers(&facts);
        #[derive(Default)]
        struct State {
            last: Option<DateTime<Utc>>,
            lessons: BTreeSet<String>,
            /// Quiz attempts' outcomes in event order.
            quizzes: Vec<bool>,
        }
        let mut states: BTreeMap<&str, State> = enrollees.iter().map(|u| (*u, State::default())).collect();
        for fact in &facts {
            let Some(state) = states.get_mut(fact.user) else {
                continue;
            };
            state.last = Some(fact.ts);
            if fact.name == "lesson_completed" {
                if let Some(lesson) = id_in(fact.properties, "lesson_id") {
                    state.lessons.insert(lesson);
                }
            }
            if fact.name == "quiz_submitted" && id_in(fact.properties, "quiz_id").is_some() {
                state.quizzes.push(fact.properties["passed"].as_bool() == Some(true));
            }
        }
        let progress = |s: &State| total_lessons.map(|t| s.lessons.len() as f64 / t * 100.0);
        let median_progress = median(states.values().filter_map(progress).collect());
        let mut flagged: Vec<(usize, &str, Value)> = Vec::new();
        for (user, state) in &states {
            let progress_pct = progress(state);
            let failed_in_row = state.quizzes.iter().rev().take_while(|passed| !**passed).count();
            let grade = grades.get(user).and_then(|g| g.0);
            let mut reasons = Vec::new();
            if let Some(last) = state.last {
                let idle = (today - last.date_naive()).num_days();
                if idle >= rules.inactive_days {
                    reasons.push(json!({"rule": "inactive", "value": idle, "threshold": rules.inactive_days}));
                }
            }
            if let (Some(p), Some(m)) = (progress_pct, median_progress) {
                if m - p >= rules.behind_points {
                    reasons.push(json!({"rule": "behind", "value": m - p, "threshold": rules.behind_points}));
                }
            }
            if failed_in_row >= rules.failed_in_row {
                reasons.push(json!({"rule": "failing", "value": failed_in_row, "threshold": rules.failed_in_row}));
            }
            if let Some(g) = grade.filter(|g| *g < rules.pass_mark) {
                reasons.push(json!({"rule": "grade", "value": g, "threshold": rules.pass_mark}));
            }
            if !reasons.is_empty() {
                let row = json!({
                    "user_id": user,
                    "reasons": reasons,
                    "last_activity_at": state.last.map(millis),
                    "progress_pct": progress_pct,
                    "failed_in_row": failed_in_row,
                    "grade": grade,
                });
                flagged.push((reasons.len(), user, row));
            }
        }
        flagged.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        json!({
            "total": flagged.len(),
            "median_progress_pct": median_progress,
            "items": flagged.into_iter().map(|(_, _, row)| row).collect::<Vec<_>>(),
        })
    }

    /// Daily time on task over `from..=to` of `facts` (one course's, or one learner's): reported
    /// seconds and learners by the day of each event; sessions (per learner) by the day they start.
    fn time_on_task(facts: &[&Fact<'a>], from: NaiveDate, to: NaiveDate, with_learners: bool) -> Value {
        let mut times: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
        let mut days: BTreeMap<NaiveDate, (i64, i64, usize, BTreeSet<&str>)> = BTreeMap::new();
        for fact in facts {
            times.entry(fact.user).or_default().push(fact.ts);
            let day = days.entry(fact.day).or_default();
            day.0 += fact.reported_s();
            day.3.insert(fact.user);
        }
        for times in times.values_mut() {
            times.sort_unstable();
            for (start, ms) in sessions(times) {
                let day = days.entry(start.date_naive()).or_default();
                day.1 += ms;
                day.2 += 1;
            }
        }
        let (mut reported, mut ms, mut count) = (0, 0, 0);
        let series: Vec<Value> = each_day(from, to)
            .map(|date| {
                let (r, m, n, learners) = days.get(&date).cloned().unwrap_or_default();
                (reported, ms, count) = (reported + r, ms + m, count + n);
                let mut row = json!({"date": date, "reported_s": r, "session_s": m as f64 / 1000.0, "sessions": n});
                if with_learners {
                    row["learners"] = json!(learners.len());
                }
                row
            })
            .collect();
        json!({
            "series": series,
            "totals": {"reported_s": reported, "session_s": ms as f64 / 1000.0, "sessions": count},
        })
    }

    /// `GET /v1/courses/{id}/time-on-task?from&to`.
    pub fn course_time_on_task(&self, course: &str, from: NaiveDate, to: NaiveDate) -> Value {
        Self::time_on_task(&self.of(&self.by_course, course), from, to, true)
    }

    /// `GET /v1/users/{id}/time-on-task?from&to`: over all the learner's events.
    pub fn user_time_on_task(&self, user: &str, from: NaiveDate, to: NaiveDate) -> Value {
        Self::time_on_task(&self.of(&self.by_user, user), from, to, false)
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
/// `date`, `module_id`, `item_id`, `video_id`, `user_id`, `rule` or index.
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
                let label = ["date", "module_id", "item_id", "video_id", "user_id", "rule"]
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
        assert_eq!(
            users.len(),
            50 + 5 + 4,
            "learners, visitors and the four courses' instructors"
        );
        let stats: Vec<Value> = users.iter().map(|u| truth.user_stats(u, to).unwrap()).collect();
        let sum = |field: &str| stats.iter().map(|s| s[field].as_i64().unwrap()).sum::<i64>();
        assert_eq!(sum("learning_time_s"), time, "learning time is the courses' time spent");
        assert_eq!(json!(sum("courses_enrolled")), top["course_enrolled"]);
        assert_eq!(json!(sum("badges")), top["badge_earned"]);
        let quizzes_taken: BTreeSet<(&str, &str)> = generated
            .events
            .iter()
            .filter(|e| e["event"] == "Quiz Submitted")
            .map(|e| (user_of(e).unwrap(), e["properties"]["quiz_id"].as_str().unwrap()))
            .collect();
        assert_eq!(sum("quizzes_taken") as usize, quizzes_taken.len());
        assert!(
            top["quiz_submitted"].as_u64().unwrap() as usize > quizzes_taken.len(),
            "some retake a quiz"
        );
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
    fn learners_follow_the_course_order_and_every_new_event_is_there() {
        let generated = small().generate();
        let count = |name: &str| generated.events.iter().filter(|e| e["event"] == name).count();
        assert_eq!(count("Course Published"), 4);
        for name in [
            "Course Unenrolled",
            "Content Viewed",
            "Question Answered",
            "Course Graded",
            "Video Played",
            "Video Paused",
            "Video Seeked",
            "Video Completed",
        ] {
            assert!(count(name) > 0, "no {name}");
        }
        assert!(count("Question Answered") > count("Quiz Submitted"));
        // A learner's items of a course come in the catalog's order (a retaken quiz repeats its
        // questions, a rewatch its video: only first touches are compared).
        let truth = generated.truth();
        for course in generated.courses() {
            let items = truth.catalog_items(&course);
            assert_eq!(
                items.len(),
                8 + 3 + 2 * 4,
                "lessons, videos after the 2nd, 5th and 8th, quizzes and questions"
            );
            let position = |id: &str| items.iter().position(|i| i == id);
            let mut last: BTreeMap<&str, usize> = BTreeMap::new();
            for event in generated
                .events
                .iter()
                .filter(|e| e["properties"]["course_id"] == course.as_str())
            {
                let p = &event["properties"];
                let item = ["item_id", "video_id", "lesson_id"].iter().find_map(|f| p[f].as_str());
                if let Some(at) = item.and_then(position) {
                    let seen = last.entry(user_of(event).unwrap()).or_insert(at);
                    assert!(at + 4 >= *seen, "{event} goes back in the course");
                    *seen = (*seen).max(at);
                }
            }
        }
    }

    #[test]
    fn the_instructor_answers_add_up() {
        let generated = small().generate();
        let truth = generated.truth();
        let today = generated.to + Duration::days(1);
        let events_of = |course: &str, name: &str| {
            generated
                .events
                .iter()
                .filter(|e| e["properties"]["course_id"] == course && stored_name(e) == name)
                .count()
        };
        let (mut flagged, mut full_views) = (0, 0);
        for course in generated.courses() {
            let engagement = truth.engagement(&course, today);
            let enrollees = engagement["current_enrollees"].as_u64().unwrap() as usize;
            assert_eq!(
                enrollees,
                events_of(&course, "course_enrolled") - events_of(&course, "course_unenrolled"),
                "each learner enrols once and unenrols at most once"
            );
            assert!(engagement["active_7d"].as_u64() <= engagement["active_30d"].as_u64());

            let drop = truth.drop_off(&course);
            let reach: Vec<u64> = drop["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["learners"].as_u64().unwrap())
                .collect();
            assert_eq!(reach.len(), truth.catalog_items(&course).len());
            assert!(reach[0] >= *reach.last().unwrap() && reach[0] > 0);
            assert_eq!(drop["uncatalogued"], json!([]), "every item is in the catalog");

            let difficulty = truth.difficulty(&course);
            let attempts: u64 = difficulty["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["attempts"].as_u64().unwrap())
                .sum();
            let answered = events_of(&course, "question_answered") + events_of(&course, "quiz_submitted");
            assert_eq!(attempts as usize, answered);

            let grades = truth.grades(&course, 10, 0.5);
            assert_eq!(grades["graded"], json!(events_of(&course, "course_graded")));
            let bucketed: u64 = grades["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["learners"].as_u64().unwrap())
                .sum();
            assert_eq!(grades["graded"], json!(bucketed));

            let videos = truth.videos(&course);
            for video in videos["items"].as_array().unwrap() {
                let viewers = video["viewers"].as_u64().unwrap();
                assert!(video["full_views"].as_u64().unwrap() <= viewers);
                assert_eq!(video["segments"].as_array().unwrap().len(), VIDEO_SEGMENTS);
                full_views += video["full_views"].as_u64().unwrap();
            }

            let risk = truth.at_risk(&course, RiskRules::default(), today);
            let items = risk["items"].as_array().unwrap();
            assert_eq!(risk["total"], json!(items.len()));
            assert!(items.len() <= enrollees);
            let reasons: Vec<usize> = items.iter().map(|i| i["reasons"].as_array().unwrap().len()).collect();
            assert!(reasons.windows(2).all(|w| w[0] >= w[1]), "most reasons first");
            flagged += items.len();

            let time = truth.course_time_on_task(&course, generated.from, generated.to);
            let reported: i64 = generated
                .events
                .iter()
                .filter(|e| e["properties"]["course_id"] == course.as_str() && stored_name(e) != "course_published")
                .map(|e| {
                    let p = &e["properties"];
                    p["duration_s"].as_i64().or(p["time_spent_s"].as_i64()).unwrap_or(0)
                })
                .sum();
            assert_eq!(time["totals"]["reported_s"], json!(reported));
        }
        assert!(flagged > 0 && full_views > 0);
    }

    #[test]
    fn a_play_is_watched_until_a_pause_seek_or_completion_and_sessions_break_after_30_minutes() {
        let at = |minute: i64| {
            NaiveDate::from_ymd_opt(2026, 3, 1)
                .unwrap()
                .and_hms_opt(9, 0, 0)
                .unwrap()
                .and_utc()
                + Duration::minutes(minute)
        };
        let properties = [
            json!({"position_s": 0}),
            json!({"from_s": 60, "to_s": 20}),
            json!({"position_s": 20}),
            json!({"position_s": 30}),
            json!({"position_s": 100}),
            json!({"position_s": 90}),
            json!({"position_s": 50}),
        ];
        let names = [
            "video_played",
            "video_seeked",
            "video_played",
            "video_played",
            "video_completed",
            "video_played",
            "video_paused",
        ];
        let facts: Vec<Fact<'_>> = names
            .iter()
            .zip(&properties)
            .enumerate()
            .map(|(i, (name, properties))| Fact {
                user: "u",
                message_id: "m",
                name: (*name).to_owned(),
                day: at(0).date_naive(),
                ts: at(i as i64),
                properties,
            })
            .collect();
        let events: Vec<&Fact<'_>> = facts.iter().collect();
        // 0→60 (the seek's from), 20→30 cut by the next play, 30→100, and 90→50 backwards: none.
        assert_eq!(watched_intervals(&events), vec![(0.0, 60.0), (30.0, 100.0)]);
        assert_eq!(coverage(&[(0.0, 60.0), (30.0, 100.0), (120.0, 130.0)], 100.0), 100.0);

        let times = [at(0), at(10), at(40), at(71), at(72)];
        assert_eq!(
            sessions(&times),
            vec![(at(0), 40 * 60_000), (at(71), 60_000)],
            "30 minutes apart is one session, 31 is two"
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
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
