//! The instructor metrics of one course (docs/contract.md §6 "Instructor metrics"), read from the
//! tables of migration 0014 that the workers keep (`workers/src/rollup/learning.rs`). Registers,
//! reach and counters are read as they are; the answers that depend on the order of a learner's
//! events (first and latest attempt, attempts until correct, failures in a row, watched intervals)
//! are folded here from the course's attempt and video rows, in event order, by pure functions
//! tested below.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::ratio;
use crate::ApiError;

/// Events no more than this far apart are one session (the workers' `SESSION_GAP`).
const SESSION_GAP_MS: i64 = 30 * 60 * 1000;
/// Equal parts of a video whose coverage is reported.
pub const VIDEO_SEGMENTS: usize = 20;
/// The share of a video a full view covers.
const FULL_VIEW: f64 = 0.95;

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

#[derive(Debug, Serialize)]
pub struct Engagement {
    pub current_enrollees: i64,
    pub active_7d: i64,
    pub active_30d: i64,
    pub as_of: NaiveDate,
}

/// Current enrollees, and learners active in the course in the 7 and 30 days ending `today`.
pub async fn engagement(pool: &PgPool, project: &str, course: &str, today: NaiveDate) -> Result<Engagement, ApiError> {
    let since = |days: u64| midnight(today - Days::new(days - 1));
    let (current_enrollees, active_7d, active_30d): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from enrollment_states where project = $1 and course_id = $2 and enrolled),
                count(*) filter (where last_accessed_at >= $3),
                count(*) filter (where last_accessed_at >= $4)
           from enrollments where project = $1 and course_id = $2",
    )
    .bind(project)
    .bind(course)
    .bind(since(7))
    .bind(since(30))
    .fetch_one(pool)
    .await?;
    Ok(Engagement {
        current_enrollees,
        active_7d,
        active_30d,
        as_of: today,
    })
}

/// The at-risk rules in force, each with its threshold (`None`: not applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskRules {
    pub inactive_days: Option<i64>,
    pub behind_points: Option<f64>,
    pub failed_in_row: Option<i64>,
    pub pass_mark: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub rule: &'static str,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtRisk {
    pub user_id: String,
    pub reasons: Vec<Reason>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub progress_pct: Option<f64>,
    pub failed_in_row: i64,
    pub grade: Option<f64>,
}

/// What the rules look at for one current enrollee.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerState {
    pub last_activity_at: Option<DateTime<Utc>>,
    pub lessons_completed: i64,
    /// Quiz attempts' outcomes, latest first.
    pub quiz_results: Vec<bool>,
    pub grade: Option<f64>,
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The flagged learners, most reasons first, then by id; and the median progress.
pub fn flag(
    learners: &BTreeMap<String, LearnerState>,
    total_lessons: Option<i32>,
    rules: RiskRules,
    today: NaiveDate,
) -> (Vec<AtRisk>, Option<f64>) {
    let progress = |s: &LearnerState| {
        total_lessons
            .filter(|t| *t > 0)
            .map(|t| s.lessons_completed as f64 / f64::from(t) * 100.0)
    };
    let mut all: Vec<f64> = learners.values().filter_map(progress).collect();
    let median_progress = median(&mut all);
    let mut flagged = Vec::new();
    for (user, state) in learners {
        let progress_pct = progress(state);
        let failed_in_row = state.quiz_results.iter().take_while(|correct| !**correct).count() as i64;
        let mut reasons = Vec::new();
        if let (Some(days), Some(last)) = (rules.inactive_days, state.last_activity_at) {
            let idle = (today - last.date_naive()).num_days();
            if idle >= days {
                reasons.push(Reason {
                    rule: "inactive",
                    value: idle as f64,
                    threshold: days as f64,
                });
            }
        }
        if let (Some(points), Some(p), Some(m)) = (rules.behind_points, progress_pct, median_progress) {
            if m - p >= points {
                reasons.push(Reason {
                    rule: "behind",
                    value: m - p,
                    threshold: points,
                });
            }
        }
        if let Some(k) = rules.failed_in_row {
            if failed_in_row >= k {
                reasons.push(Reason {
                    rule: "failing",
                    value: failed_in_row as f64,
                    threshold: k as f64,
                });
            }
        }
        if let (Some(mark), Some(grade)) = (rules.pass_mark, state.grade) {
            if grade < mark {
                reasons.push(Reason {
                    rule: "grade",
                    value: grade,
                    threshold: mark,
                });
            }
        }
        if !reasons.is_empty() {
            flagged.push(AtRisk {
                user_id: user.clone(),
                reasons,
                last_activity_at: state.last_activity_at,
                progress_pct,
                failed_in_row,
                grade: state.grade,
            });
        }
    }
    // Stable: learners come in id order, so ties stay by id.
    flagged.sort_by_key(|a| std::cmp::Reverse(a.reasons.len()));
    (flagged, median_progress)
}

/// The course's at-risk learners under `rules`.
pub async fn at_risk(
    pool: &PgPool,
    project: &str,
    course: &str,
    rules: RiskRules,
    today: NaiveDate,
) -> Result<(Vec<AtRisk>, Option<f64>), ApiError> {
    let enrollees: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select s.user_key, e.last_accessed_at
           from enrollment_states s
           left join enrollments e using (project, course_id, user_key)
          where s.project = $1 and s.course_id = $2 and s.enrolled",
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    let mut learners: BTreeMap<String, LearnerState> = enrollees
        .into_iter()
        .map(|(user, last)| {
            let state = LearnerState {
                last_activity_at: last,
                ..LearnerState::default()
            };
            (user, state)
        })
        .collect();
    if learners.is_empty() {
        return Ok((Vec::new(), None));
    }
    let total_lessons: Option<i32> =
        sqlx::query_scalar("select total_lessons from course_catalog where project = $1 and course_id = $2")
            .bind(project)
            .bind(course)
            .fetch_optional(pool)
            .await?
            .flatten();
    let lessons: Vec<(String, i64)> = sqlx::query_as(
        "select user_key, count(*) filter (where completed_at is not null)
           from lesson_progress where project = $1 and course_id = $2 group by user_key",
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    for (user, n) in lessons {
        if let Some(state) = learners.get_mut(&user) {
            state.lessons_completed = n;
        }
    }
    let quizzes: Vec<(String, bool)> = sqlx::query_as(
        r#"select user_key, correct from attempts where project = $1 and course_id = $2 and kind = 1
            order by user_key, at desc, message_id collate "C" desc"#,
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    for (user, correct) in quizzes {
        if let Some(state) = learners.get_mut(&user) {
            state.quiz_results.push(correct);
        }
    }
    let grades: Vec<(String, Option<f64>)> =
        sqlx::query_as("select user_key, grade from grades where project = $1 and course_id = $2")
            .bind(project)
            .bind(course)
            .fetch_all(pool)
            .await?;
    for (user, grade) in grades {
        if let Some(state) = learners.get_mut(&user) {
            state.grade = grade;
        }
    }
    Ok(flag(&learners, total_lessons, rules, today))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReach {
    pub item_id: String,
    pub position: usize,
    pub learners: i64,
    pub from_previous: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uncatalogued {
    pub item_id: String,
    pub learners: i64,
}

#[derive(Debug, Serialize)]
pub struct DropOff {
    pub items: Vec<ItemReach>,
    pub uncatalogued: Vec<Uncatalogued>,
}

/// Reach along the catalog's item order, and the reached items it does not list.
pub fn drop_off_of(catalog: &[String], mut reach: BTreeMap<String, i64>) -> DropOff {
    let mut items = Vec::with_capacity(catalog.len());
    let mut previous: Option<i64> = None;
    for (i, item) in catalog.iter().enumerate() {
        let learners = reach.remove(item).unwrap_or(0);
        items.push(ItemReach {
            item_id: item.clone(),
            position: i + 1,
            learners,
            from_previous: previous.and_then(|p| ratio(learners, p)),
        });
        previous = Some(learners);
    }
    let uncatalogued = reach
        .into_iter()
        .map(|(item_id, learners)| Uncatalogued { item_id, learners })
        .collect();
    DropOff { items, uncatalogued }
}

pub async fn drop_off(pool: &PgPool, project: &str, course: &str) -> Result<DropOff, ApiError> {
    let catalog: Option<Vec<String>> =
        sqlx::query_scalar("select items from course_catalog where project = $1 and course_id = $2")
            .bind(project)
            .bind(course)
            .fetch_optional(pool)
            .await?
            .flatten();
    let reach: Vec<(String, i64)> = sqlx::query_as(
        "select item_id, count(*) from item_reach where project = $1 and course_id = $2 group by item_id",
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    Ok(drop_off_of(&catalog.unwrap_or_default(), reach.into_iter().collect()))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difficulty {
    pub item_id: String,
    pub learners: i64,
    pub attempts: i64,
    pub first_attempt_correct_rate: Option<f64>,
    pub last_attempt_correct_rate: Option<f64>,
    pub mean_attempts_until_correct: Option<f64>,
    pub never_correct: i64,
}

/// Per item, from each learner's attempts in event order.
pub fn difficulty_of(attempts: &BTreeMap<String, BTreeMap<String, Vec<bool>>>) -> Vec<Difficulty> {
    attempts
        .iter()
        .map(|(item, learners)| {
            let (mut first, mut last, mut until_sum, mut reached, mut total) = (0, 0, 0, 0, 0);
            for outcomes in learners.values() {
                total += outcomes.len() as i64;
                first += i64::from(outcomes.first() == Some(&true));
                last += i64::from(outcomes.last() == Some(&true));
                if let Some(i) = outcomes.iter().position(|c| *c) {
                    until_sum += i as i64 + 1;
                    reached += 1;
                }
            }
            let n = learners.len() as i64;
            Difficulty {
                item_id: item.clone(),
                learners: n,
                attempts: total,
                first_attempt_correct_rate: ratio(first, n),
                last_attempt_correct_rate: ratio(last, n),
                mean_attempts_until_correct: ratio(until_sum, reached),
                never_correct: n - reached,
            }
        })
        .collect()
}

pub async fn difficulty(pool: &PgPool, project: &str, course: &str) -> Result<Vec<Difficulty>, ApiError> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        r#"select item_id, user_key, correct from attempts where project = $1 and course_id = $2
            order by at, message_id collate "C""#,
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    let mut attempts: BTreeMap<String, BTreeMap<String, Vec<bool>>> = BTreeMap::new();
    for (item, user, correct) in rows {
        attempts.entry(item).or_default().entry(user).or_default().push(correct);
    }
    Ok(difficulty_of(&attempts))
}

/// A video event as the fold reads it (kind codes of migration 0014).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoRow {
    pub kind: i16,
    pub position: Option<f64>,
    pub length: Option<f64>,
    pub segments: Option<String>,
}

const PLAYED: i16 = 0;

/// xAPI's `played-segments`: `a[.]b[,]c[.]d`; parts that are not two numbers in order are skipped.
pub fn parse_segments(text: &str) -> Vec<(f64, f64)> {
    text.split("[,]")
        .filter_map(|part| {
            let (a, b) = part.split_once("[.]")?;
            let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
            (a.is_finite() && b.is_finite() && a <= b).then_some((a, b))
        })
        .collect()
}

/// One learner's watched intervals of one video, from their events in event order.
pub fn watched(events: &[VideoRow]) -> Vec<(f64, f64)> {
    let mut intervals = Vec::new();
    let mut playing: Option<f64> = None;
    for event in events {
        if let Some(segments) = &event.segments {
            intervals.extend(parse_segments(segments));
            playing = None;
            continue;
        }
        if let (Some(from), Some(to)) = (playing, event.position) {
            if event.kind != PLAYED && to >= from {
                intervals.push((from, to));
            }
        }
        playing = if event.kind == PLAYED { event.position } else { None };
    }
    intervals
}

/// The length of the union of `intervals` within `[0, length]`.
fn covered(intervals: &[(f64, f64)], length: f64) -> f64 {
    let mut clipped: Vec<(f64, f64)> = intervals
        .iter()
        .map(|(a, b)| (a.max(0.0), b.min(length)))
        .filter(|(a, b)| a < b)
        .collect();
    clipped.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut total, mut end) = (0.0, f64::NEG_INFINITY);
    for (a, b) in clipped {
        if b > end {
            total += b - a.max(end);
            end = b;
        }
    }
    total
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub index: usize,
    pub from_s: f64,
    pub to_s: f64,
    pub viewers: i64,
    pub rewatched: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Video {
    pub video_id: String,
    pub length_s: Option<f64>,
    pub viewers: i64,
    pub full_views: Option<i64>,
    pub segments: Vec<Segment>,
}

/// One video's engagement from each learner's events in event order.
pub fn video_of(video_id: &str, learners: &BTreeMap<String, Vec<VideoRow>>) -> Video {
    let length = learners
        .values()
        .flatten()
        .filter_map(|e| e.length)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    let watched: Vec<Vec<(f64, f64)>> = learners
        .values()
        .map(|events| watched(events))
        .filter(|w| !w.is_empty())
        .collect();
    let (full_views, segments) = match length {
        Some(length) => {
            let full = watched
                .iter()
                .filter(|w| covered(w, length) >= FULL_VIEW * length)
                .count() as i64;
            let segments = (0..VIDEO_SEGMENTS)
                .map(|k| {
                    let mid = length * (2 * k + 1) as f64 / (2 * VIDEO_SEGMENTS) as f64;
                    let hits: Vec<usize> = watched
                        .iter()
                        .map(|w| w.iter().filter(|(a, b)| *a <= mid && mid <= *b).count())
                        .collect();
                    Segment {
                        index: k,
                        from_s: length * k as f64 / VIDEO_SEGMENTS as f64,
                        to_s: length * (k + 1) as f64 / VIDEO_SEGMENTS as f64,
                        viewers: hits.iter().filter(|n| **n >= 1).count() as i64,
                        rewatched: hits.iter().filter(|n| **n >= 2).count() as i64,
                    }
                })
                .collect();
            (Some(full), segments)
        }
        None => (None, Vec::new()),
    };
    Video {
        video_id: video_id.to_owned(),
        length_s: length,
        viewers: watched.len() as i64,
        full_views,
        segments,
    }
}

pub async fn videos(pool: &PgPool, project: &str, course: &str) -> Result<Vec<Video>, ApiError> {
    type Row = (String, String, i16, Option<f64>, Option<f64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        r#"select video_id, user_key, kind, position_s, length_s, segments
             from video_events where project = $1 and course_id = $2
            order by at, message_id collate "C""#,
    )
    .bind(project)
    .bind(course)
    .fetch_all(pool)
    .await?;
    let mut by_video: BTreeMap<String, BTreeMap<String, Vec<VideoRow>>> = BTreeMap::new();
    for (video, user, kind, position, length, segments) in rows {
        let row = VideoRow {
            kind,
            position,
            length,
            segments,
        };
        by_video.entry(video).or_default().entry(user).or_default().push(row);
    }
    Ok(by_video
        .iter()
        .map(|(video, learners)| video_of(video, learners))
        .collect())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeDay {
    pub date: NaiveDate,
    pub reported_s: i64,
    pub session_s: f64,
    pub sessions: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learners: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TimeOnTask {
    pub series: Vec<TimeDay>,
    pub totals: TimeDay,
}

/// Whose time: a course's learners, or one learner (in one course, or over all their events: '').
pub enum Scope<'a> {
    Course(&'a str),
    Learner { user: &'a str, course: &'a str },
}

pub async fn time_on_task(
    pool: &PgPool,
    project: &str,
    scope: Scope<'_>,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<TimeOnTask, ApiError> {
    let (course, user) = match scope {
        Scope::Course(course) => (course, None),
        Scope::Learner { user, course } => (course, Some(user)),
    };
    let reported: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "select day, sum(reported_s)::bigint, count(*) from time_on_task_daily
          where project = $1 and course_id = $2 and day between $3 and $4
            and ($5::text is null or user_key = $5)
          group by day",
    )
    .bind(project)
    .bind(course)
    .bind(from)
    .bind(to)
    .bind(user)
    .fetch_all(pool)
    .await?;
    let learners: i64 = sqlx::query_scalar(
        "select count(distinct user_key) from time_on_task_daily
          where project = $1 and course_id = $2 and day between $3 and $4
            and ($5::text is null or user_key = $5)",
    )
    .bind(project)
    .bind(course)
    .bind(from)
    .bind(to)
    .bind(user)
    .fetch_one(pool)
    .await?;
    let sessions: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select lower(r), upper(r) from learner_sessions, unnest(spans) as r
          where project = $1 and course_id = $2 and ($5::text is null or user_key = $5)
            and lower(r) >= $3 and lower(r) < $4",
    )
    .bind(project)
    .bind(course)
    .bind(midnight(from))
    .bind(midnight(to + Days::new(1)))
    .bind(user)
    .fetch_all(pool)
    .await?;
    let per_learner = user.is_none();
    let mut days: BTreeMap<NaiveDate, (i64, i64, i64, i64)> = BTreeMap::new();
    for (day, seconds, n) in reported {
        let d = days.entry(day).or_default();
        d.0 += seconds;
        d.3 = n;
    }
    for (lo, hi) in sessions {
        let d = days.entry(lo.date_naive()).or_default();
        d.1 += ((hi - lo) - TimeDelta::milliseconds(SESSION_GAP_MS)).num_milliseconds();
        d.2 += 1;
    }
    let mut series = Vec::new();
    let mut totals = TimeDay {
        date: from,
        learners: per_learner.then_some(learners),
        ..TimeDay::default()
    };
    let mut total_ms = 0;
    for day in from.iter_days().take_while(|d| *d <= to) {
        let (reported_s, ms, sessions, n) = days.get(&day).copied().unwrap_or_default();
        total_ms += ms;
        totals.reported_s += reported_s;
        totals.sessions += sessions;
        series.push(TimeDay {
            date: day,
            reported_s,
            session_s: ms as f64 / 1000.0,
            sessions,
            learners: per_learner.then_some(n),
        });
    }
    totals.session_s = total_ms as f64 / 1000.0;
    Ok(TimeOnTask { series, totals })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub from: f64,
    pub to: f64,
    pub learners: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grades {
    pub graded: i64,
    pub passed: i64,
    pub pass_rate: Option<f64>,
    pub buckets: Vec<Bucket>,
}

/// The distribution of (grade, passed) registers in `buckets` buckets.
pub fn grades_of(rows: &[(Option<f64>, Option<bool>)], buckets: usize, pass_mark: f64) -> Grades {
    let mut counts = vec![0i64; buckets];
    let mut passed = 0;
    for (grade, pass) in rows {
        if let Some(g) = grade {
            // 29/100 is 0.28999…: the tolerance puts it where a reader would.
            counts[((g * buckets as f64 + 1e-9).floor() as usize).min(buckets - 1)] += 1;
        }
        if pass.or(grade.map(|g| g >= pass_mark)) == Some(true) {
            passed += 1;
        }
    }
    let graded = rows.len() as i64;
    Grades {
        graded,
        passed,
        pass_rate: ratio(passed, graded),
        buckets: counts
            .into_iter()
            .enumerate()
            .map(|(k, learners)| Bucket {
                from: k as f64 / buckets as f64,
                to: (k + 1) as f64 / buckets as f64,
                learners,
            })
            .collect(),
    }
}

pub async fn grades(
    pool: &PgPool,
    project: &str,
    course: &str,
    buckets: usize,
    pass_mark: f64,
) -> Result<Grades, ApiError> {
    let rows: Vec<(Option<f64>, Option<bool>)> =
        sqlx::query_as("select grade, passed from grades where project = $1 and course_id = $2")
            .bind(project)
            .bind(course)
            .fetch_all(pool)
            .await?;
    Ok(grades_of(&rows, buckets, pass_mark))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: i16, position: f64) -> VideoRow {
        VideoRow {
            kind,
            position: Some(position),
            length: Some(100.0),
            segments: None,
        }
    }

    #[test]
    fn a_play_is_watched_until_the_next_event_when_it_stops_playback() {
        // played 0 → paused 30, played 30 → played 50 (nothing), played 50 → seeked from 80,
        // played 10 → paused 5 (backwards: nothing).
        let events = [
            row(0, 0.0),
            row(1, 30.0),
            row(0, 30.0),
            row(0, 50.0),
            row(2, 80.0),
            row(0, 10.0),
            row(1, 5.0),
        ];
        assert_eq!(watched(&events), vec![(0.0, 30.0), (50.0, 80.0)]);
        let with_segments = [
            row(0, 0.0),
            VideoRow {
                segments: Some("0[.]12.5[,]20[.]30[,]bad[,]9[.]3".into()),
                ..row(1, 40.0)
            },
            row(3, 100.0),
        ];
        assert_eq!(watched(&with_segments), vec![(0.0, 12.5), (20.0, 30.0)]);
    }

    #[test]
    fn coverage_counts_overlaps_once_and_segments_count_rewatches() {
        let mut learners = BTreeMap::new();
        learners.insert(
            "a".to_owned(),
            vec![row(0, 0.0), row(1, 60.0), row(0, 40.0), row(3, 100.0)],
        );
        learners.insert("b".to_owned(), vec![row(0, 0.0), row(1, 50.0)]);
        learners.insert("c".to_owned(), vec![row(1, 50.0)]);
        let video = video_of("v", &learners);
        assert_eq!((video.viewers, video.full_views), (2, Some(1)));
        // Segment 10 (50-55, midpoint 52.5): a twice, b not.
        assert_eq!((video.segments[10].viewers, video.segments[10].rewatched), (1, 1));
        assert_eq!((video.segments[0].viewers, video.segments[0].rewatched), (2, 0));
    }

    #[test]
    fn difficulty_reads_first_last_and_attempts_until_correct() {
        let mut attempts = BTreeMap::new();
        let mut q = BTreeMap::new();
        q.insert("a".to_owned(), vec![false, false, true]);
        q.insert("b".to_owned(), vec![true, false]);
        q.insert("c".to_owned(), vec![false]);
        attempts.insert("q1".to_owned(), q);
        let d = &difficulty_of(&attempts)[0];
        assert_eq!((d.learners, d.attempts, d.never_correct), (3, 6, 1));
        assert_eq!(d.first_attempt_correct_rate, Some(1.0 / 3.0));
        assert_eq!(d.last_attempt_correct_rate, Some(1.0 / 3.0));
        assert_eq!(d.mean_attempts_until_correct, Some(2.0));
    }

    #[test]
    fn drop_off_follows_the_catalog_and_lists_the_rest() {
        let reach: BTreeMap<String, i64> = [("l1", 10), ("l2", 5), ("x", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let catalog: Vec<String> = ["l1", "l3", "l2"].iter().map(|s| s.to_string()).collect();
        let d = drop_off_of(&catalog, reach);
        let rates: Vec<Option<f64>> = d.items.iter().map(|i| i.from_previous).collect();
        assert_eq!(rates, vec![None, Some(0.0), None]);
        assert_eq!(
            d.uncatalogued,
            vec![Uncatalogued {
                item_id: "x".into(),
                learners: 2
            }]
        );
    }

    #[test]
    fn grades_fall_in_buckets_and_pass_by_flag_or_mark() {
        let rows = [
            (Some(1.0), None),
            (Some(0.45), Some(true)),
            (Some(0.7), None),
            (None, Some(false)),
        ];
        let g = grades_of(&rows, 4, 0.6);
        assert_eq!((g.graded, g.passed), (4, 3));
        let counts: Vec<i64> = g.buckets.iter().map(|b| b.learners).collect();
        assert_eq!(counts, vec![0, 1, 1, 1]);
    }

    #[test]
    fn at_risk_lists_each_rule_with_its_value() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 30).unwrap();
        let at = |day: u32| {
            Some(
                NaiveDate::from_ymd_opt(2026, 3, day)
                    .unwrap()
                    .and_time(NaiveTime::MIN)
                    .and_utc(),
            )
        };
        let mut learners = BTreeMap::new();
        learners.insert(
            "a".to_owned(),
            LearnerState {
                last_activity_at: at(1),
                lessons_completed: 0,
                quiz_results: vec![false, false, false, true],
                grade: Some(0.2),
            },
        );
        for (user, lessons) in [("b", 8), ("c", 9)] {
            learners.insert(
                user.to_owned(),
                LearnerState {
                    last_activity_at: at(29),
                    lessons_completed: lessons,
                    ..LearnerState::default()
                },
            );
        }
        let rules = RiskRules {
            inactive_days: Some(14),
            behind_points: Some(25.0),
            failed_in_row: Some(3),
            pass_mark: Some(0.5),
        };
        let (flagged, median) = flag(&learners, Some(10), rules, today);
        assert_eq!(median, Some(80.0));
        assert_eq!(flagged.len(), 1);
        let rules: Vec<(&str, f64)> = flagged[0].reasons.iter().map(|r| (r.rule, r.value)).collect();
        assert_eq!(
            rules,
            vec![("inactive", 29.0), ("behind", 80.0), ("failing", 3.0), ("grade", 0.2)]
        );
    }
}
