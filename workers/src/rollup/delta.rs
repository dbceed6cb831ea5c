//! What events add to each rollup, as plain data. Keys are tuples in the order of the tables'
//! primary keys, so iterating a map visits rows in key order (which also keeps concurrent
//! transactions locking rows in one order).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use common::event::{Event, EventType};
use serde_json::Value;

/// Per (course, day) counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CourseDay {
    pub views: i64,
    pub interactions: i64,
    pub enrollments: i64,
    pub lesson_completions: i64,
    pub course_completions: i64,
    pub time_spent_s: i64,
}

/// Per (course, learner): earliest enrolment and completion, activity bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrollment {
    pub enrolled_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub first_activity_at: DateTime<Utc>,
    pub last_accessed_at: DateTime<Utc>,
}

/// Per (learner, course, lesson).
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    pub module_id: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub time_spent_s: i64,
    pub video_percent: Option<f64>,
    pub last_accessed_at: DateTime<Utc>,
}

/// Per (learner, quiz).
#[derive(Debug, Clone, PartialEq)]
pub struct Quiz {
    pub course_id: Option<String>,
    pub attempts: i64,
    pub score_pct_sum: f64,
    pub passed: bool,
}

/// Per (learner, badge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Badge {
    pub points: i64,
    pub earned_at: DateTime<Utc>,
}

/// Per learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserTotals {
    pub learning_time_s: i64,
    pub events: i64,
    pub first_seen_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

/// A course's catalog entry from its `course_published` events: each field the value of the latest
/// event carrying it, by event time (ties: the greater value), with that time; so the entry is
/// the same whatever order or batches the events arrive in (migration 0011 applies the same rule
/// across batches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub title: Option<(String, DateTime<Utc>)>,
    pub total_lessons: Option<(i32, DateTime<Utc>)>,
    pub instructor_id: Option<(String, DateTime<Utc>)>,
    /// The course's items in order (`items`, at most [`MAX_ITEMS`] ids).
    pub items: Option<(Vec<String>, DateTime<Utc>)>,
    /// The latest `course_published` event's time.
    pub updated_at: DateTime<Utc>,
}

impl CatalogEntry {
    /// Folds in another entry of the same course: the later of each field, the latest time.
    pub fn merge(&mut self, other: CatalogEntry) {
        fn later<T: Ord>(field: &mut Option<(T, DateTime<Utc>)>, other: Option<(T, DateTime<Utc>)>) {
            if let Some((value, at)) = other {
                if field.as_ref().is_none_or(|(v, a)| (at, &value) > (*a, v)) {
                    *field = Some((value, at));
                }
            }
        }
        later(&mut self.title, other.title);
        later(&mut self.total_lessons, other.total_lessons);
        later(&mut self.instructor_id, other.instructor_id);
        later(&mut self.items, other.items);
        self.updated_at = self.updated_at.max(other.updated_at);
    }
}

/// A group's traits, from its latest `group` call carrying traits, by (event time, messageId).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTraits {
    pub traits: serde_json::Map<String, Value>,
    pub updated_at: DateTime<Utc>,
    pub message_id: String,
}

/// How a link between two ids of one person came (docs/contract.md §6, "One person").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkKind {
    /// An `identify` call with an `anonymousId` (`from`) and a `userId` (`to`).
    Identify = 0,
    /// An `alias` call: `previousId` (`from`) and `userId` (`to`).
    Alias = 1,
}

impl LinkKind {
    /// The `identity_links.kind` column's value.
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        [Self::Identify, Self::Alias].into_iter().find(|k| k.code() == code)
    }
}

/// One link, keyed by (project, messageId) in [`Delta::links`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ts: DateTime<Utc>,
    pub kind: LinkKind,
    pub from: String,
    pub to: String,
}

/// What a set of events adds to every rollup.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    /// (project, day, user): daily active users.
    pub active: BTreeSet<(String, NaiveDate, String)>,
    /// (project, day, event) → events.
    pub event_counts: BTreeMap<(String, NaiveDate, String), i64>,
    /// (project, day, page) → page views.
    pub page_views: BTreeMap<(String, NaiveDate, String), i64>,
    /// (project, course, day) → counters.
    pub course_days: BTreeMap<(String, String, NaiveDate), CourseDay>,
    /// (project, course, day, user) → viewed the course that day.
    pub course_users: BTreeMap<(String, String, NaiveDate, String), bool>,
    /// (project, course, day, module) → lesson completions.
    pub module_completions: BTreeMap<(String, String, NaiveDate, String), i64>,
    /// (project, course, user).
    pub enrollments: BTreeMap<(String, String, String), Enrollment>,
    /// (project, user, course, lesson).
    pub lessons: BTreeMap<(String, String, String, String), Lesson>,
    /// (project, user, quiz).
    pub quizzes: BTreeMap<(String, String, String), Quiz>,
    /// (project, user, badge).
    pub badges: BTreeMap<(String, String, String), Badge>,
    /// (project, user).
    pub users: BTreeMap<(String, String), UserTotals>,
    /// (project, course).
    pub catalog: BTreeMap<(String, String), CatalogEntry>,
    /// (project, group).
    pub groups: BTreeMap<(String, String), GroupTraits>,
    /// (project, group, user) → the earliest `group` call putting the user in the group.
    pub memberships: BTreeMap<(String, String, String), DateTime<Utc>>,
    /// (project, messageId) → the link an `identify` or `alias` call makes.
    pub links: BTreeMap<(String, String), Link>,
    /// (project, user) → the earliest (event time, messageId) of an event with that `userId`.
    pub identified: BTreeMap<(String, String), (DateTime<Utc>, String)>,
    /// The instructor metrics' rollups.
    pub learning: super::learning::Learning,
}

/// The most items a course lists.
pub const MAX_ITEMS: usize = 1_000;

/// `course_published.items`: an array of at most [`MAX_ITEMS`] ids, each kept at its first place;
/// anything else is no list.
pub fn catalog_items(value: Option<&Value>) -> Option<Vec<String>> {
    let Some(Value::Array(values)) = value else { return None };
    if values.len() > MAX_ITEMS {
        return None;
    }
    let mut items: Vec<String> = Vec::with_capacity(values.len());
    for item in values.iter().filter_map(common::event::id_value) {
        if !items.contains(&item) {
            items.push(item);
        }
    }
    Some(items)
}

/// A property as an id: strings as they are, integers printed (SDKs of typed languages send them).
pub fn property_id(event: &Event, name: &str) -> Option<String> {
    id(event, name)
}

fn id(event: &Event, name: &str) -> Option<String> {
    event.property(name).and_then(common::event::id_value)
}

fn number(event: &Event, name: &str) -> Option<f64> {
    event.property(name).and_then(common::event::number_value)
}

/// Seconds as a whole non-negative number (negative or absurd values count as zero).
fn seconds(event: &Event, name: &str) -> i64 {
    common::event::whole_seconds(event.property(name))
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Delta {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut delta = Delta::default();
        for event in events {
            delta.add(event);
        }
        delta
    }

    /// Only the identity parts of [`Delta::add`]: the first identification of a `userId` and the
    /// link an `identify` or `alias` call makes (docs/contract.md §6, "One person").
    pub fn add_identity(&mut self, event: &Event) {
        let (project, ts) = (&event.project, event.ts);
        if let Some(user_id) = &event.user_id {
            let first = (ts, event.message_id.as_str());
            match self.identified.get_mut(&(project.clone(), user_id.clone())) {
                Some(known) if (known.0, known.1.as_str()) <= first => {}
                Some(known) => *known = (ts, event.message_id.clone()),
                None => {
                    self.identified
                        .insert((project.clone(), user_id.clone()), (ts, event.message_id.clone()));
                }
            }
            let from = match event.kind {
                EventType::Identify => event.anonymous_id.as_ref().map(|a| (LinkKind::Identify, a)),
                EventType::Alias => event.previous_id.as_ref().map(|p| (LinkKind::Alias, p)),
                _ => None,
            };
            if let Some((kind, from)) = from.filter(|(_, from)| *from != user_id) {
                let link = Link {
                    ts,
                    kind,
                    from: from.clone(),
                    to: user_id.clone(),
                };
                self.links.insert((project.clone(), event.message_id.clone()), link);
            }
        }
    }

    /// The identity parts of `events` alone (reconcile reads them for a whole project).
    pub fn identities<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut delta = Delta::default();
        for event in events {
            delta.add_identity(event);
        }
        delta
    }

    /// Adds one event to every rollup it concerns (docs/contract.md §5–§6).
    pub fn add(&mut self, event: &Event) {
        let project = &event.project;
        let user = event.user_key().to_owned();
        let (day, ts, name) = (event.day, event.ts, event.event.as_str());
        self.active.insert((project.clone(), day, user.clone()));
        *self
            .event_counts
            .entry((project.clone(), day, name.to_owned()))
            .or_default() += 1;
        if name == "page_view" {
            if let Some(Value::String(page)) = event.property("page") {
                *self.page_views.entry((project.clone(), day, page.clone())).or_default() += 1;
            }
        }
        let learning_time = if name == "lesson_completed" {
            seconds(event, "time_spent_s")
        } else {
            0
        };
        let totals = self.users.entry((project.clone(), user.clone())).or_insert(UserTotals {
            learning_time_s: 0,
            events: 0,
            first_seen_at: ts,
            last_activity_at: ts,
        });
        totals.learning_time_s += learning_time;
        totals.events += 1;
        totals.first_seen_at = totals.first_seen_at.min(ts);
        totals.last_activity_at = totals.last_activity_at.max(ts);

        self.add_identity(event);
        self.learning.add(event);

        if let (EventType::Group, Some(group)) = (event.kind, &event.group_id) {
            let joined = self
                .memberships
                .entry((project.clone(), group.clone(), user.clone()))
                .or_insert(ts);
            *joined = (*joined).min(ts);
            let key = (project.clone(), group.clone());
            let newer = |current: &GroupTraits| {
                (current.updated_at, current.message_id.as_str()) < (ts, event.message_id.as_str())
            };
            if !event.traits.is_empty() && self.groups.get(&key).is_none_or(newer) {
                let traits = GroupTraits {
                    traits: event.traits.clone(),
                    updated_at: ts,
                    message_id: event.message_id.clone(),
                };
                self.groups.insert(key, traits);
            }
        }

        if name == "badge_earned" {
            if let Some(badge) = id(event, "badge_id") {
                let points = number(event, "points")
                    .filter(|p| p.is_finite())
                    .map_or(0, |p| p.round() as i64);
                let entry = self
                    .badges
                    .entry((project.clone(), user.clone(), badge))
                    .or_insert(Badge { points, earned_at: ts });
                if ts < entry.earned_at {
                    *entry = Badge { points, earned_at: ts };
                }
            }
        }

        let Some(course) = id(event, "course_id") else { return };
        if name == "course_published" {
            let entry = CatalogEntry {
                title: event
                    .properties
                    .get("title")
                    .and_then(Value::as_str)
                    .map(|t| (t.to_owned(), ts)),
                total_lessons: number(event, "total_lessons")
                    .and_then(|n| i32::try_from(n as i64).ok())
                    .filter(|n| *n > 0)
                    .map(|n| (n, ts)),
                instructor_id: id(event, "instructor_id").map(|i| (i, ts)),
                items: catalog_items(event.property("items")).map(|items| (items, ts)),
                updated_at: ts,
            };
            match self.catalog.entry((project.clone(), course)) {
                std::collections::btree_map::Entry::Occupied(mut current) => current.get_mut().merge(entry),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(entry);
                }
            }
            return;
        }
        let viewed = name == "course_viewed";
        let counters = self
            .course_days
            .entry((project.clone(), course.clone(), day))
            .or_default();
        match name {
            "course_viewed" => counters.views += 1,
            "course_enrolled" => counters.enrollments += 1,
            "lesson_completed" => counters.lesson_completions += 1,
            "course_completed" => counters.course_completions += 1,
            _ => {}
        }
        if !viewed {
            counters.interactions += 1;
        }
        counters.time_spent_s += learning_time;
        *self
            .course_users
            .entry((project.clone(), course.clone(), day, user.clone()))
            .or_default() |= viewed;

        let enrollment = self
            .enrollments
            .entry((project.clone(), course.clone(), user.clone()))
            .or_insert(Enrollment {
                enrolled_at: None,
                completed_at: None,
                first_activity_at: ts,
                last_accessed_at: ts,
            });
        enrollment.first_activity_at = enrollment.first_activity_at.min(ts);
        enrollment.last_accessed_at = enrollment.last_accessed_at.max(ts);
        if name == "course_enrolled" {
            enrollment.enrolled_at = earliest(enrollment.enrolled_at, Some(ts));
        }
        if name == "course_completed" {
            enrollment.completed_at = earliest(enrollment.completed_at, Some(ts));
        }

        if matches!(name, "lesson_started" | "lesson_completed" | "video_progress") {
            if let Some(lesson) = id(event, "lesson_id") {
                let module = id(event, "module_id");
                if name == "lesson_completed" {
                    if let Some(module) = &module {
                        *self
                            .module_completions
                            .entry((project.clone(), course.clone(), day, module.clone()))
                            .or_default() += 1;
                    }
                }
                let entry = self
                    .lessons
                    .entry((project.clone(), user.clone(), course.clone(), lesson))
                    .or_insert(Lesson {
                        module_id: None,
                        completed_at: None,
                        time_spent_s: 0,
                        video_percent: None,
                        last_accessed_at: ts,
                    });
                // The greatest module id wins, so the result does not depend on event order.
                entry.module_id = entry.module_id.take().max(module);
                entry.last_accessed_at = entry.last_accessed_at.max(ts);
                if name == "lesson_completed" {
                    entry.completed_at = earliest(entry.completed_at, Some(ts));
                    entry.time_spent_s += learning_time;
                }
                if name == "video_progress" {
                    if let Some(percent) = number(event, "percent").filter(|p| p.is_finite()) {
                        let percent = percent.clamp(0.0, 100.0);
                        entry.video_percent = Some(entry.video_percent.map_or(percent, |p| p.max(percent)));
                    }
                }
            }
        }

        if name == "quiz_submitted" {
            if let Some(quiz) = id(event, "quiz_id") {
                let max = number(event, "max_score")
                    .filter(|m| m.is_finite() && *m > 0.0)
                    .unwrap_or(100.0);
                let score = number(event, "score").filter(|s| s.is_finite()).unwrap_or(0.0);
                let passed = event.property("passed").and_then(Value::as_bool).unwrap_or(false);
                let entry = self.quizzes.entry((project.clone(), user, quiz)).or_insert(Quiz {
                    course_id: Some(course),
                    attempts: 0,
                    score_pct_sum: 0.0,
                    passed: false,
                });
                entry.attempts += 1;
                entry.score_pct_sum += (score / max * 100.0).clamp(0.0, 100.0);
                entry.passed |= passed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, name: &str, ts: &str, properties: Value) -> Event {
        serde_json::from_value(serde_json::json!({
            "project": "p", "message_id": format!("{user}-{name}-{ts}"), "type": "track", "event": name,
            "user_id": user, "ts": ts, "day": &ts[..10], "received_at": ts, "properties": properties,
        }))
        .unwrap()
    }

    #[test]
    fn course_events_feed_the_course_the_learner_and_the_lesson() {
        let events = [
            event(
                "u1",
                "course_viewed",
                "2026-03-01T10:00:00Z",
                serde_json::json!({"course_id": "c1"}),
            ),
            event(
                "u1",
                "course_enrolled",
                "2026-03-01T10:05:00Z",
                serde_json::json!({"course_id": "c1"}),
            ),
            event(
                "u1",
                "lesson_completed",
                "2026-03-02T10:00:00Z",
                serde_json::json!({"course_id": "c1", "module_id": "m1", "lesson_id": "l1", "time_spent_s": 300}),
            ),
            event(
                "u1",
                "lesson_completed",
                "2026-03-01T09:00:00Z",
                serde_json::json!({"course_id": "c1", "module_id": "m1", "lesson_id": "l1", "time_spent_s": 60}),
            ),
            event(
                "u1",
                "quiz_submitted",
                "2026-03-02T11:00:00Z",
                serde_json::json!({"course_id": "c1", "quiz_id": "q1", "score": 8, "max_score": 10, "passed": true}),
            ),
            event(
                "u1",
                "badge_earned",
                "2026-03-02T12:00:00Z",
                serde_json::json!({"badge_id": "b1", "points": 50}),
            ),
            event(
                "u2",
                "course_viewed",
                "2026-03-01T11:00:00Z",
                serde_json::json!({"course_id": 7}),
            ),
        ];
        let delta = Delta::from_events(&events);
        let day1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let c1 = delta.course_days[&("p".into(), "c1".into(), day1)];
        assert_eq!(
            (
                c1.views,
                c1.interactions,
                c1.enrollments,
                c1.lesson_completions,
                c1.time_spent_s
            ),
            (1, 2, 1, 1, 60)
        );
        assert!(delta.course_users[&("p".into(), "c1".into(), day1, "u1".into())]);
        assert!(
            delta.course_days.contains_key(&("p".into(), "7".into(), day1)),
            "numeric ids become strings"
        );
        let lesson = &delta.lessons[&("p".into(), "u1".into(), "c1".into(), "l1".into())];
        assert_eq!(lesson.time_spent_s, 360);
        assert_eq!(
            lesson.completed_at.unwrap().to_rfc3339(),
            "2026-03-01T09:00:00+00:00",
            "the earliest completion wins"
        );
        let quiz = &delta.quizzes[&("p".into(), "u1".into(), "q1".into())];
        assert_eq!((quiz.attempts, quiz.score_pct_sum, quiz.passed), (1, 80.0, true));
        assert_eq!(delta.users[&("p".into(), "u1".into())].learning_time_s, 360);
        assert_eq!(delta.badges[&("p".into(), "u1".into(), "b1".into())].points, 50);
        assert_eq!(delta.active.len(), 3);
        assert_eq!(delta.module_completions.values().sum::<i64>(), 2);
    }

    #[test]
    fn the_delta_of_a_union_is_the_same_whichever_way_the_events_are_split() {
        let events: Vec<Event> = (0..20)
            .map(|i| {
                let ts = format!("2026-03-{:02}T10:00:00Z", 1 + i % 5);
                event(
                    &format!("u{}", i % 3),
                    if i % 2 == 0 {
                        "lesson_completed"
                    } else {
                        "course_viewed"
                    },
                    &ts,
                    serde_json::json!({"course_id": "c1", "lesson_id": format!("l{}", i % 4), "time_spent_s": i}),
                )
            })
            .collect();
        let whole = Delta::from_events(&events);
        let mut reversed = Delta::from_events(events.iter().rev());
        assert_eq!(whole, reversed);
        reversed = Delta::default();
        for event in events.iter().step_by(2).chain(events.iter().skip(1).step_by(2)) {
            reversed.add(event);
        }
        assert_eq!(whole, reversed);
    }
}
