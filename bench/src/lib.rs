//! A realistic, deterministic e-learning workload (CONTRACT.md §3): learners who log in, browse,
//! view courses, enrol, work through lessons, videos and quizzes, drop off along the way, buy, earn
//! badges and take typing tests, over a number of days. The same seed gives the same events, and
//! the generator keeps its own exact answer for the metrics it can know (DAU per day), so the demo
//! and tests can check the pipeline's numbers against it.

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
    /// Segment-style track/page events, in time order per learner.
    pub events: Vec<Value>,
    /// Exact distinct active users per day.
    pub dau: BTreeMap<NaiveDate, usize>,
}

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
                    out.events.push(track(&user, seq, name, clock, properties));
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
        out.dau = dau(&out.events);
        out
    }
}

/// Distinct users per UTC day of `timestamp`, counted from the events themselves.
pub fn dau(events: &[Value]) -> BTreeMap<NaiveDate, usize> {
    let mut days: BTreeMap<NaiveDate, BTreeSet<&str>> = BTreeMap::new();
    for event in events {
        let day = event["timestamp"]
            .as_str()
            .and_then(|t| t.get(..10))
            .and_then(|d| d.parse().ok());
        if let (Some(day), Some(user)) = (day, event["userId"].as_str()) {
            days.entry(day).or_default().insert(user);
        }
    }
    days.into_iter().map(|(day, users)| (day, users.len())).collect()
}

/// The name under which the generator emits a Segment `page` call (ingest turns it into
/// `page_view` with `properties.page`) rather than a track call.
const PAGE: &str = "(page)";

fn track(user: &str, seq: u32, name: &str, ts: DateTime<Utc>, properties: Value) -> Value {
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
    json!({
        "type": kind,
        name_field: name,
        "userId": user,
        "messageId": format!("{user}-{seq:06}"),
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "properties": properties,
        "context": {"library": {"name": "bench-loadgen", "version": "1"}},
    })
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
}
