//! The rollups behind the instructor metrics (docs/contract.md §6 "Instructor metrics",
//! migration 0014). Every merge is order-free, so applying the parts of a set of events in any
//! order and batching gives the same rows:
//! - registers (the enrolment state, a learner's grade and pass) keep the latest value by
//!   (event time, messageId);
//! - reach keeps the earliest time a learner touched an item;
//! - attempts and video events are facts, one row per counted event: the order-dependent answers
//!   (first and latest attempt, watched intervals) are computed from them when read;
//! - sessions are the union of `[ts, ts + 30 min)` over a learner's events, whose ranges are the
//!   sessions whatever order the events came in;
//! - reported durations are counters per day.

use std::collections::{btree_map::Entry, BTreeMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use common::event::Event;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

/// Events no more than this far apart are one session.
pub const SESSION_GAP: TimeDelta = TimeDelta::minutes(30);

/// The course of a learner's sessions over all their events.
pub const ALL_COURSES: &str = "";

/// A value with the (event time, messageId) of the event that set it; the later one wins.
#[derive(Debug, Clone, PartialEq)]
pub struct Register<T> {
    pub value: T,
    pub at: DateTime<Utc>,
    pub message_id: String,
}

impl<T> Register<T> {
    fn newer_than(&self, other: &Self) -> bool {
        (self.at, self.message_id.as_str()) > (other.at, other.message_id.as_str())
    }

    /// Keeps the later of `slot` and `new`.
    fn merge_into(slot: &mut Option<Self>, new: Option<Self>) {
        if let Some(new) = new {
            if slot.as_ref().is_none_or(|old| new.newer_than(old)) {
                *slot = Some(new);
            }
        }
    }
}

/// A learner's grade in a course: the latest `grade` and the latest boolean `passed`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grade {
    pub grade: Option<Register<f64>>,
    pub passed: Option<Register<bool>>,
}

/// What kind of attempt (the `attempts.kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    Question = 0,
    Quiz = 1,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    pub kind: AttemptKind,
    pub correct: bool,
}

/// The `video_events.kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoKind {
    Played = 0,
    Paused = 1,
    Seeked = 2,
    Completed = 3,
}

impl VideoKind {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "video_played" => Self::Played,
            "video_paused" => Self::Paused,
            "video_seeked" => Self::Seeked,
            "video_completed" => Self::Completed,
            _ => return None,
        })
    }

    pub fn from_code(code: i16) -> Option<Self> {
        [Self::Played, Self::Paused, Self::Seeked, Self::Completed]
            .into_iter()
            .find(|k| *k as i16 == code)
    }
}

/// One video event: `position` is `position_s` (a seek's `from_s`), `to` a seek's `to_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoEvent {
    pub kind: VideoKind,
    pub position: Option<f64>,
    pub to: Option<f64>,
    pub length: Option<f64>,
    pub segments: Option<String>,
}

/// Disjoint half-open time ranges in order; adjacent or overlapping ranges are one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans(pub Vec<(DateTime<Utc>, DateTime<Utc>)>);

impl Spans {
    pub fn add(&mut self, lo: DateTime<Utc>, hi: DateTime<Utc>) {
        let spans = &mut self.0;
        // The first range that ends at or after `lo`: everything before it stays.
        let start = spans.partition_point(|(_, end)| *end < lo);
        let (mut lo, mut hi) = (lo, hi);
        let mut end = start;
        while end < spans.len() && spans[end].0 <= hi {
            lo = lo.min(spans[end].0);
            hi = hi.max(spans[end].1);
            end += 1;
        }
        spans.splice(start..end, [(lo, hi)]);
    }

    pub fn merge(&mut self, other: &Spans) {
        for (lo, hi) in &other.0 {
            self.add(*lo, *hi);
        }
    }
}

/// (project, course, learner or item, item or learner, event time, messageId): one counted event.
pub type EventKey = (String, String, String, String, DateTime<Utc>, String);

/// What events add to the instructor metrics' tables.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Learning {
    /// (project, course, user): the latest enrol (true) or unenrol (false).
    pub enrolment: BTreeMap<(String, String, String), Register<bool>>,
    /// (project, course, item, user) → the earliest event reaching the item.
    pub reach: BTreeMap<(String, String, String, String), DateTime<Utc>>,
    /// (project, course, user, item, event time, messageId).
    pub attempts: BTreeMap<EventKey, Attempt>,
    /// (project, course, user).
    pub grades: BTreeMap<(String, String, String), Grade>,
    /// (project, course, video, user, event time, messageId).
    pub videos: BTreeMap<EventKey, VideoEvent>,
    /// (project, user, course or [`ALL_COURSES`]) → the union of `[ts, ts + 30 min)`.
    pub sessions: BTreeMap<(String, String, String), Spans>,
    /// (project, user, course or [`ALL_COURSES`], day) → reported seconds.
    pub time: BTreeMap<(String, String, String, NaiveDate), i64>,
}

fn id(event: &Event, name: &str) -> Option<String> {
    event.property(name).and_then(common::event::id_value)
}

fn number(event: &Event, name: &str) -> Option<f64> {
    event
        .property(name)
        .and_then(common::event::number_value)
        .filter(|n| n.is_finite())
}

fn flag(event: &Event, name: &str) -> Option<bool> {
    event.property(name).and_then(Value::as_bool)
}

/// The duration an event reports: `duration_s`, else `time_spent_s` (§5).
pub fn reported_seconds(event: &Event) -> i64 {
    match event.property("duration_s") {
        Some(duration) => common::event::whole_seconds(Some(duration)),
        None => common::event::whole_seconds(event.property("time_spent_s")),
    }
}

/// `course_graded`'s grade: `grade`, else `score ÷ max_score`, clamped to 0-1.
pub fn graded(event: &Event) -> Option<f64> {
    let grade = number(event, "grade").or_else(|| {
        let max = number(event, "max_score").filter(|m| *m > 0.0)?;
        Some(number(event, "score")? / max)
    })?;
    Some(grade.clamp(0.0, 1.0))
}

impl Learning {
    /// Adds one event (docs/contract.md §5, §6 "Instructor metrics").
    pub fn add(&mut self, event: &Event) {
        let (project, user, ts, day) = (&event.project, event.user_key(), event.ts, event.day);
        let seconds = reported_seconds(event);
        let mut session = |course: &str| {
            let key = (project.clone(), user.to_owned(), course.to_owned());
            self.sessions.entry(key).or_default().add(ts, ts + SESSION_GAP);
            *self
                .time
                .entry((project.clone(), user.to_owned(), course.to_owned(), day))
                .or_default() += seconds;
        };
        session(ALL_COURSES);
        let name = event.event.as_str();
        let Some(course) = id(event, "course_id") else { return };
        if name == "course_published" {
            // The catalog's own event is not course work.
            return;
        }
        session(&course);
        for item in ["item_id", "lesson_id", "quiz_id", "video_id"]
            .into_iter()
            .filter_map(|p| id(event, p))
        {
            let first = self
                .reach
                .entry((project.clone(), course.clone(), item, user.to_owned()))
                .or_insert(ts);
            *first = (*first).min(ts);
        }
        fn register<T>(event: &Event, value: T) -> Register<T> {
            Register {
                value,
                at: event.ts,
                message_id: event.message_id.clone(),
            }
        }
        let learner = (project.clone(), course.clone(), user.to_owned());
        match name {
            "course_enrolled" | "course_unenrolled" => {
                let new = register(event, name == "course_enrolled");
                match self.enrolment.entry(learner) {
                    Entry::Occupied(mut old) if new.newer_than(old.get()) => *old.get_mut() = new,
                    Entry::Occupied(_) => {}
                    Entry::Vacant(slot) => {
                        slot.insert(new);
                    }
                }
            }
            "course_graded" => {
                let (value, passed) = (graded(event), flag(event, "passed"));
                if value.is_some() || passed.is_some() {
                    let grade = self.grades.entry(learner).or_default();
                    Register::merge_into(&mut grade.grade, value.map(|v| register(event, v)));
                    Register::merge_into(&mut grade.passed, passed.map(|v| register(event, v)));
                }
            }
            "question_answered" | "quiz_submitted" => {
                let (item, attempt) = if name == "question_answered" {
                    let Some(correct) = flag(event, "correct") else { return };
                    (
                        id(event, "item_id"),
                        Attempt {
                            kind: AttemptKind::Question,
                            correct,
                        },
                    )
                } else {
                    let correct = flag(event, "passed").unwrap_or(false);
                    (
                        id(event, "quiz_id"),
                        Attempt {
                            kind: AttemptKind::Quiz,
                            correct,
                        },
                    )
                };
                if let Some(item) = item {
                    let key = (
                        project.clone(),
                        course,
                        user.to_owned(),
                        item,
                        ts,
                        event.message_id.clone(),
                    );
                    self.attempts.insert(key, attempt);
                }
            }
            _ => {
                if let (Some(kind), Some(video)) = (VideoKind::from_name(name), id(event, "video_id")) {
                    let position = if kind == VideoKind::Seeked {
                        number(event, "from_s")
                    } else {
                        number(event, "position_s")
                    };
                    let video_event = VideoEvent {
                        kind,
                        position,
                        to: (kind == VideoKind::Seeked).then(|| number(event, "to_s")).flatten(),
                        length: number(event, "length_s").filter(|l| *l > 0.0),
                        segments: event.property("segments").and_then(Value::as_str).map(str::to_owned),
                    };
                    let key = (
                        project.clone(),
                        course,
                        video,
                        user.to_owned(),
                        ts,
                        event.message_id.clone(),
                    );
                    self.videos.insert(key, video_event);
                }
            }
        }
    }
}

/// Writes `learning` inside the caller's transaction, one bulk statement per table, merging as
/// [`Learning::add`] does.
pub async fn apply(tx: &mut Transaction<'_, Postgres>, learning: &Learning) -> sqlx::Result<()> {
    if !learning.enrolment.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, user: &'a str, at: DateTime<Utc>, message: &'a str, enrolled: bool);
        for ((project, course, user), r) in &learning.enrolment {
            c.project.push(project);
            c.course.push(course);
            c.user.push(user);
            c.at.push(r.at);
            c.message.push(&r.message_id);
            c.enrolled.push(r.value);
        }
        sqlx::query(
            r#"insert into enrollment_states (project, course_id, user_key, at, message_id, enrolled)
               select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bool[])
               on conflict (project, course_id, user_key) do update
                  set at = excluded.at, message_id = excluded.message_id, enrolled = excluded.enrolled
                  where (excluded.at, excluded.message_id collate "C")
                      > (enrollment_states.at, enrollment_states.message_id collate "C")"#,
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.user)
        .bind(&c.at)
        .bind(&c.message)
        .bind(&c.enrolled)
        .execute(&mut **tx)
        .await?;
    }

    if !learning.reach.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, item: &'a str, user: &'a str, at: DateTime<Utc>);
        for ((project, course, item, user), at) in &learning.reach {
            c.project.push(project);
            c.course.push(course);
            c.item.push(item);
            c.user.push(user);
            c.at.push(*at);
        }
        sqlx::query(
            "insert into item_reach (project, course_id, item_id, user_key, first_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
             on conflict (project, course_id, item_id, user_key) do update set first_at = excluded.first_at
                where excluded.first_at < item_reach.first_at",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.item)
        .bind(&c.user)
        .bind(&c.at)
        .execute(&mut **tx)
        .await?;
    }

    if !learning.attempts.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, user: &'a str, item: &'a str, at: DateTime<Utc>,
            message: &'a str, kind: i16, correct: bool);
        for ((project, course, user, item, at, message), a) in &learning.attempts {
            c.project.push(project);
            c.course.push(course);
            c.user.push(user);
            c.item.push(item);
            c.at.push(*at);
            c.message.push(message);
            c.kind.push(a.kind as i16);
            c.correct.push(a.correct);
        }
        sqlx::query(
            "insert into attempts (project, course_id, user_key, item_id, at, message_id, kind, correct)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                  $7::int2[], $8::bool[])
             on conflict do nothing",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.user)
        .bind(&c.item)
        .bind(&c.at)
        .bind(&c.message)
        .bind(&c.kind)
        .bind(&c.correct)
        .execute(&mut **tx)
        .await?;
    }

    if !learning.grades.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, user: &'a str, grade: Option<f64>,
            grade_at: Option<DateTime<Utc>>, grade_message: Option<&'a str>, passed: Option<bool>,
            passed_at: Option<DateTime<Utc>>, passed_message: Option<&'a str>);
        for ((project, course, user), g) in &learning.grades {
            c.project.push(project);
            c.course.push(course);
            c.user.push(user);
            c.grade.push(g.grade.as_ref().map(|r| r.value));
            c.grade_at.push(g.grade.as_ref().map(|r| r.at));
            c.grade_message.push(g.grade.as_ref().map(|r| r.message_id.as_str()));
            c.passed.push(g.passed.as_ref().map(|r| r.value));
            c.passed_at.push(g.passed.as_ref().map(|r| r.at));
            c.passed_message.push(g.passed.as_ref().map(|r| r.message_id.as_str()));
        }
        // Each register: the later of the stored and the new by (event time, messageId); every
        // right-hand side sees the old row, so value, time and id move together.
        let later = |value: &str| {
            let newer = format!(
                r#"excluded.{value}_at is not null and (grades.{value}_at is null
                   or (excluded.{value}_at, excluded.{value}_message_id collate "C")
                    > (grades.{value}_at, grades.{value}_message_id collate "C"))"#
            );
            format!(
                "{value} = case when {newer} then excluded.{value} else grades.{value} end,
                 {value}_message_id = case when {newer} then excluded.{value}_message_id else grades.{value}_message_id end,
                 {value}_at = case when {newer} then excluded.{value}_at else grades.{value}_at end"
            )
        };
        let sql = format!(
            "insert into grades (project, course_id, user_key, grade, grade_at, grade_message_id, passed, passed_at,
                                 passed_message_id)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::timestamptz[], $6::text[],
                                  $7::bool[], $8::timestamptz[], $9::text[])
             on conflict (project, course_id, user_key) do update set {}, {}",
            later("grade"),
            later("passed"),
        );
        sqlx::query(&sql)
            .bind(&c.project)
            .bind(&c.course)
            .bind(&c.user)
            .bind(&c.grade)
            .bind(&c.grade_at)
            .bind(&c.grade_message)
            .bind(&c.passed)
            .bind(&c.passed_at)
            .bind(&c.passed_message)
            .execute(&mut **tx)
            .await?;
    }

    if !learning.videos.is_empty() {
        let mut c = columns!(project: &'a str, course: &'a str, video: &'a str, user: &'a str, at: DateTime<Utc>,
            message: &'a str, kind: i16, position: Option<f64>, to: Option<f64>, length: Option<f64>,
            segments: Option<&'a str>);
        for ((project, course, video, user, at, message), v) in &learning.videos {
            c.project.push(project);
            c.course.push(course);
            c.video.push(video);
            c.user.push(user);
            c.at.push(*at);
            c.message.push(message);
            c.kind.push(v.kind as i16);
            c.position.push(v.position);
            c.to.push(v.to);
            c.length.push(v.length);
            c.segments.push(v.segments.as_deref());
        }
        sqlx::query(
            "insert into video_events (project, course_id, video_id, user_key, at, message_id, kind, position_s,
                                       to_s, length_s, segments)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                  $7::int2[], $8::float8[], $9::float8[], $10::float8[], $11::text[])
             on conflict do nothing",
        )
        .bind(&c.project)
        .bind(&c.course)
        .bind(&c.video)
        .bind(&c.user)
        .bind(&c.at)
        .bind(&c.message)
        .bind(&c.kind)
        .bind(&c.position)
        .bind(&c.to)
        .bind(&c.length)
        .bind(&c.segments)
        .execute(&mut **tx)
        .await?;
    }

    if !learning.sessions.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, course: &'a str, lo: DateTime<Utc>, hi: DateTime<Utc>);
        for ((project, user, course), spans) in &learning.sessions {
            for (lo, hi) in &spans.0 {
                c.project.push(project);
                c.user.push(user);
                c.course.push(course);
                c.lo.push(*lo);
                c.hi.push(*hi);
            }
        }
        // The union with the stored ranges: adjacent and overlapping ranges merge, in any order.
        sqlx::query(
            r#"insert into learner_sessions (project, user_key, course_id, spans)
               select p, u, c, range_agg(tstzrange(lo, hi))
                 from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) as t(p, u, c, lo, hi)
                group by p, u, c
                order by p collate "C", u collate "C", c collate "C"
               on conflict (project, user_key, course_id) do update set spans = learner_sessions.spans + excluded.spans"#,
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.course)
        .bind(&c.lo)
        .bind(&c.hi)
        .execute(&mut **tx)
        .await?;
    }

    if !learning.time.is_empty() {
        let mut c = columns!(project: &'a str, user: &'a str, course: &'a str, day: NaiveDate, seconds: i64);
        for ((project, user, course, day), seconds) in &learning.time {
            c.project.push(project);
            c.user.push(user);
            c.course.push(course);
            c.day.push(*day);
            c.seconds.push(*seconds);
        }
        sqlx::query(
            "insert into time_on_task_daily (project, user_key, course_id, day, reported_s)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::bigint[])
             on conflict (project, user_key, course_id, day) do update
                set reported_s = time_on_task_daily.reported_s + excluded.reported_s",
        )
        .bind(&c.project)
        .bind(&c.user)
        .bind(&c.course)
        .bind(&c.day)
        .bind(&c.seconds)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The tables of [`Learning`], each keyed by learner (reconcile clears them per learner).
pub const TABLES: &[&str] = &[
    "enrollment_states",
    "item_reach",
    "attempts",
    "grades",
    "video_events",
    "learner_sessions",
    "time_on_task_daily",
];

/// What the tables hold for `users` of `project`, as a [`Learning`] (for reconcile).
pub async fn load(pool: &PgPool, project: &str, users: &[String]) -> sqlx::Result<Learning> {
    let mut learning = Learning::default();
    let p = || project.to_owned();
    let rows: Vec<(String, String, DateTime<Utc>, String, bool)> = sqlx::query_as(
        "select course_id, user_key, at, message_id, enrolled from enrollment_states
          where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (course, user, at, message_id, value) in rows {
        learning
            .enrolment
            .insert((p(), course, user), Register { value, at, message_id });
    }
    let rows: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "select course_id, item_id, user_key, first_at from item_reach where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (course, item, user, at) in rows {
        learning.reach.insert((p(), course, item, user), at);
    }
    type AttemptRow = (String, String, String, DateTime<Utc>, String, i16, bool);
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "select course_id, user_key, item_id, at, message_id, kind, correct from attempts
          where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (course, user, item, at, message, kind, correct) in rows {
        let kind = if kind == AttemptKind::Quiz as i16 {
            AttemptKind::Quiz
        } else {
            AttemptKind::Question
        };
        learning
            .attempts
            .insert((p(), course, user, item, at, message), Attempt { kind, correct });
    }
    type GradeRow = (
        String,
        String,
        Option<f64>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<bool>,
        Option<DateTime<Utc>>,
        Option<String>,
    );
    let rows: Vec<GradeRow> = sqlx::query_as(
        "select course_id, user_key, grade, grade_at, grade_message_id, passed, passed_at, passed_message_id
           from grades where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (course, user, grade, grade_at, grade_message, passed, passed_at, passed_message) in rows {
        fn register<T>(value: T, at: Option<DateTime<Utc>>, message: Option<String>) -> Option<Register<T>> {
            Some(Register {
                value,
                at: at?,
                message_id: message?,
            })
        }
        let grade = Grade {
            grade: grade.and_then(|g| register(g, grade_at, grade_message)),
            passed: passed.and_then(|v| register(v, passed_at, passed_message)),
        };
        learning.grades.insert((p(), course, user), grade);
    }
    type VideoRow = (
        String,
        String,
        String,
        DateTime<Utc>,
        String,
        i16,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<String>,
    );
    let rows: Vec<VideoRow> = sqlx::query_as(
        "select course_id, video_id, user_key, at, message_id, kind, position_s, to_s, length_s, segments
           from video_events where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (course, video, user, at, message, kind, position, to, length, segments) in rows {
        let Some(kind) = VideoKind::from_code(kind) else {
            continue;
        };
        let event = VideoEvent {
            kind,
            position,
            to,
            length,
            segments,
        };
        learning.videos.insert((p(), course, video, user, at, message), event);
    }
    let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select user_key, course_id, lower(r), upper(r) from learner_sessions, unnest(spans) as r
          where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (user, course, lo, hi) in rows {
        learning.sessions.entry((p(), user, course)).or_default().add(lo, hi);
    }
    let rows: Vec<(String, String, NaiveDate, i64)> = sqlx::query_as(
        "select user_key, course_id, day, reported_s from time_on_task_daily where project = $1 and user_key = any($2)",
    )
    .bind(project)
    .bind(users)
    .fetch_all(pool)
    .await?;
    for (user, course, day, seconds) in rows {
        learning.time.insert((p(), user, course, day), seconds);
    }
    Ok(learning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + minute * 60, 0).unwrap()
    }

    #[test]
    fn spans_merge_overlapping_and_adjacent_ranges_in_any_order() {
        let ranges = [(0, 30), (30, 60), (100, 130), (50, 80), (200, 230), (129, 150)];
        let mut forward = Spans::default();
        for (lo, hi) in ranges {
            forward.add(at(lo), at(hi));
        }
        let mut backward = Spans::default();
        for (lo, hi) in ranges.iter().rev() {
            backward.add(at(*lo), at(*hi));
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.0, vec![(at(0), at(80)), (at(100), at(150)), (at(200), at(230))]);
    }

    #[test]
    fn registers_keep_the_latest_by_time_then_message_id() {
        let r = |value, minute, id: &str| Register {
            value,
            at: at(minute),
            message_id: id.into(),
        };
        let mut slot = None;
        for new in [r(true, 5, "b"), r(false, 3, "z"), r(false, 5, "a"), r(true, 5, "c")] {
            Register::merge_into(&mut slot, Some(new));
        }
        assert_eq!(slot, Some(r(true, 5, "c")));
    }
}
