//! `workers reconcile`: recomputes everything the workers derive for a project from the raw events
//! in MongoDB, with the same [`Delta`] code the incremental path uses, and reports each row where
//! PostgreSQL (or the learning paths in MongoDB) differs:
//!
//! - day-keyed rollups (active users, event and page counts, course days, modules) and the
//!   day-keyed bitmaps (active users, course learners and viewers) over the range;
//! - per-learner rollups (enrolments, lessons, quizzes, badges, totals) and first active days, for
//!   every learner active in the range, from all of that learner's events;
//! - retention cohorts over the range, from every event of the project;
//! - the ledger (the `event_log` view of `event_ids` and `event_chunks`) against the stored
//!   events of the range: an event counted and not stored, or stored and not counted, is a
//!   difference;
//! - the course catalog (`courses`) and groups, from every `course_published` and `group` call;
//! - the `student_learning_paths` documents of the learners in the range (those still marked for
//!   the next flush are not differences yet).
//!
//! [`fix`] makes PostgreSQL agree with the raw events again (an operator's repair after a past
//! bug): in one transaction that holds the project's workers back (an exclusive advisory lock
//! their rollup transactions take shared), it deletes the rows in scope and writes them anew from
//! the recomputed delta, through the same `apply_rows` the workers use.
//!
//! Run it on a quiet pipeline (or over days the workers are done with): events still in flight
//! between the two stores show up as differences until they land.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use common::{
    bitmap::{self, Kind, RoaringBitmap},
    documents::{learning_path_id, LEARNING_PATHS},
    event::{Event, EventType},
};
use mongodb::bson::{doc, Bson, Document};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    identity, ledger, ordinals,
    rollup::{
        self,
        delta::{Badge, CatalogEntry, CourseDay, Enrollment, GroupTraits, Lesson, Quiz, UserTotals},
        learning, Delta,
    },
    store::EventStore,
};

/// An `event_log` row as reconcile compares it: id, event, time, user ordinal, course.
type LedgerTuple = (Uuid, String, DateTime<Utc>, i32, Option<String>);

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct Range {
    pub project: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// One row where the stored rollup differs from the recomputed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub table: &'static str,
    pub key: String,
    /// What the raw events say (`None`: no row should exist).
    pub expected: Option<String>,
    /// What is stored (`None`: no row).
    pub found: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(no row)".to_owned());
        write!(
            f,
            "{} {}: expected {}, found {}",
            self.table,
            self.key,
            show(&self.expected),
            show(&self.found)
        )
    }
}

/// Everything the raw events say about a range.
struct Expected {
    /// Day-keyed parts from the events of the range; per-learner parts from all events of the
    /// learners active in it.
    delta: Delta,
    /// The learners active in the range.
    users: Vec<String>,
    /// The events of the range, by ledger id.
    events: BTreeMap<Uuid, Event>,
    /// First active day of every user of the project, over all its events.
    first_days: BTreeMap<String, NaiveDate>,
}

async fn expected(store: &EventStore, range: &Range) -> anyhow::Result<Expected> {
    anyhow::ensure!(
        range.from <= range.to,
        "--from {} is after --to {}",
        range.from,
        range.to
    );
    // One read of the project (an equality FerretDB pushes down on PostgreSQL), filtered here.
    let all = store.find(&range.project, doc! {}).await?;
    let in_range = |e: &Event| (range.from..=range.to).contains(&e.day);
    let days = Delta::from_events(all.iter().filter(|e| in_range(e)));
    let users: BTreeSet<&str> = all.iter().filter(|e| in_range(e)).map(Event::user_key).collect();
    let learners = Delta::from_events(all.iter().filter(|e| users.contains(e.user_key())));
    let mut first_days: BTreeMap<String, NaiveDate> = BTreeMap::new();
    for event in &all {
        let day = first_days.entry(event.user_key().to_owned()).or_insert(event.day);
        *day = (*day).min(event.day);
    }
    let delta = Delta {
        active: days.active,
        event_counts: days.event_counts,
        page_views: days.page_views,
        course_days: days.course_days,
        course_users: days.course_users,
        module_completions: days.module_completions,
        enrollments: learners.enrollments,
        lessons: learners.lessons,
        quizzes: learners.quizzes,
        badges: learners.badges,
        users: learners.users,
        // The catalog from every `course_published` event of the project.
        catalog: Delta::from_events(all.iter().filter(|e| e.event == "course_published")).catalog,
        // Groups from every `group` call of the project; memberships per learner, like the
        // other per-learner rollups.
        groups: Delta::from_events(all.iter().filter(|e| e.kind == EventType::Group)).groups,
        memberships: learners.memberships,
        learning: learners.learning,
        // Links and identifications from every event of the project: a person spans days.
        ..Delta::identities(&all)
    };
    let users: Vec<String> = users.into_iter().map(str::to_owned).collect();
    let events = all
        .into_iter()
        .filter(in_range)
        .map(|e| (ledger::event_key(&e.project, &e.message_id), e))
        .collect();
    Ok(Expected {
        delta,
        users,
        events,
        first_days,
    })
}

/// Recomputes the rollups of `range` and returns every difference.
pub async fn reconcile(pool: &PgPool, store: &EventStore, range: &Range) -> anyhow::Result<Vec<Difference>> {
    let expected = expected(store, range).await?;
    let ords = ordinals::all(pool, &range.project)
        .await
        .context("cannot read user_ordinals")?;
    let mut differences = Vec::new();
    compare_rows(pool, range, &expected, &mut differences).await?;
    compare_bitmaps(pool, range, &expected, &ords, &mut differences).await?;
    compare_ledger(pool, range, &expected, &ords, &mut differences).await?;
    compare_learning_paths(pool, store, range, &expected, &mut differences).await?;
    compare_identities(pool, range, &expected, &ords, &mut differences).await?;
    compare_learning(pool, range, &expected, &mut differences).await?;
    Ok(differences)
}

/// The instructor metrics' tables of the range's learners (over their whole history, like the
/// other per-learner rollups).
async fn compare_learning(
    pool: &PgPool,
    range: &Range,
    expected: &Expected,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let found = learning::load(pool, &range.project, &expected.users)
        .await
        .context("cannot read the instructor metrics' tables")?;
    let want = &expected.delta.learning;
    compare(
        differences,
        "enrollment_states",
        want.enrolment.clone(),
        found.enrolment,
    );
    compare(differences, "item_reach", want.reach.clone(), found.reach);
    compare(differences, "attempts", want.attempts.clone(), found.attempts);
    compare(differences, "grades", want.grades.clone(), found.grades);
    compare(differences, "video_events", want.videos.clone(), found.videos);
    compare(differences, "learner_sessions", want.sessions.clone(), found.sessions);
    compare(differences, "time_on_task_daily", want.time.clone(), found.time);
    Ok(())
}

/// A link as `identity_links` keeps it: (time, kind, from, to, refusal).
type LinkRow = (DateTime<Utc>, i16, String, String, Option<String>);

/// What the raw events say the project's identity tables hold: every link with its outcome, and
/// the persons. A link stored as refused for `too_many_ids` stays so: that refusal depended on
/// the order links arrived in, so only the stored table knows it.
async fn expected_identities(
    pool: &PgPool,
    project: &str,
    delta: &Delta,
    ords: &HashMap<String, i32>,
) -> anyhow::Result<(BTreeMap<String, LinkRow>, BTreeMap<i32, i32>)> {
    let too_large: BTreeSet<String> =
        sqlx::query_scalar("select message_id from identity_links where project = $1 and refused = $2")
            .bind(project)
            .bind(identity::REFUSED_TOO_MANY_IDS)
            .fetch_all(pool)
            .await
            .context("cannot read identity_links")?
            .into_iter()
            .collect();
    let mut graph = Vec::new();
    let mut links = BTreeMap::new();
    for ((_, message_id), link) in &delta.links {
        let refused = if identity::invalid_id(&link.from) || identity::invalid_id(&link.to) {
            Some(identity::REFUSED_INVALID_ID.to_owned())
        } else if too_large.contains(message_id) {
            Some(identity::REFUSED_TOO_MANY_IDS.to_owned())
        } else {
            graph.push(identity::StoredLink {
                message_id: message_id.clone(),
                ts: link.ts,
                kind: link.kind,
                from: link.from.clone(),
                to: link.to.clone(),
            });
            None
        };
        let row = (link.ts, link.kind.code(), link.from.clone(), link.to.clone(), refused);
        links.insert(message_id.clone(), row);
    }
    let identified: HashMap<String, (DateTime<Utc>, String)> = delta
        .identified
        .iter()
        .map(|((_, u), first)| (u.clone(), first.clone()))
        .collect();
    let replay = identity::replay(&graph, &identified, ords);
    for (message_id, refused) in replay.outcomes {
        if let Some(row) = links.get_mut(&message_id) {
            row.4 = refused.map(str::to_owned);
        }
    }
    Ok((links, replay.persons))
}

/// The identity tables (migrations/0013) against the raw events, project-wide.
async fn compare_identities(
    pool: &PgPool,
    range: &Range,
    expected: &Expected,
    ords: &HashMap<String, i32>,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let p = &range.project;
    let delta = &expected.delta;
    let rows: Vec<(String, DateTime<Utc>, String)> =
        sqlx::query_as("select user_key, first_at, first_message_id from identified_users where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .context("cannot read identified_users")?;
    compare(
        differences,
        "identified_users",
        delta
            .identified
            .iter()
            .map(|((_, u), first)| (u.clone(), first.clone())),
        rows.into_iter().map(|(u, at, m)| (u, (at, m))),
    );
    let (links, persons) = expected_identities(pool, p, delta, ords).await?;
    let rows: Vec<identity::LinkRecord> =
        sqlx::query_as("select message_id, ts, kind, from_key, to_key, refused from identity_links where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .context("cannot read identity_links")?;
    compare(
        differences,
        "identity_links",
        links,
        rows.into_iter().map(|(m, ts, k, f, t, r)| (m, (ts, k, f, t, r))),
    );
    let rows: Vec<(i32, i32)> = sqlx::query_as("select ord, person_ord from persons where project = $1")
        .bind(p)
        .fetch_all(pool)
        .await
        .context("cannot read persons")?;
    compare(differences, "persons", persons, rows);
    Ok(())
}

/// Rewrites the project's identity tables from the raw events (inside [`fix`]'s transaction).
async fn fix_identities(
    pool: &PgPool,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    project: &str,
    delta: &Delta,
) -> anyhow::Result<u64> {
    let ords = ordinals::all(pool, project)
        .await
        .context("cannot read user_ordinals")?;
    let (links, persons) = expected_identities(pool, project, delta, &ords).await?;
    for table in ["identity_links", "identified_users", "persons"] {
        sqlx::query(&format!("delete from {table} where project = $1"))
            .bind(project)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("cannot clear {table}"))?;
    }
    let (mut u, mut at, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for ((_, user), (first, message)) in &delta.identified {
        u.push(user.as_str());
        at.push(*first);
        m.push(message.as_str());
    }
    sqlx::query(
        "insert into identified_users (project, user_key, first_at, first_message_id)
         select $1, * from unnest($2::text[], $3::timestamptz[], $4::text[])",
    )
    .bind(project)
    .bind(&u)
    .bind(&at)
    .bind(&m)
    .execute(&mut **tx)
    .await
    .context("cannot write identified_users")?;
    let (mut id, mut ts, mut kind, mut from, mut to, mut refused) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (message_id, (t, k, f, o, r)) in &links {
        id.push(message_id.as_str());
        ts.push(*t);
        kind.push(*k);
        from.push(f.as_str());
        to.push(o.as_str());
        refused.push(r.as_deref());
    }
    sqlx::query(
        "insert into identity_links (project, message_id, ts, kind, from_key, to_key, refused)
         select $1, * from unnest($2::text[], $3::timestamptz[], $4::int2[], $5::text[], $6::text[], $7::text[])",
    )
    .bind(project)
    .bind(&id)
    .bind(&ts)
    .bind(&kind)
    .bind(&from)
    .bind(&to)
    .bind(&refused)
    .execute(&mut **tx)
    .await
    .context("cannot write identity_links")?;
    let (ord, person): (Vec<i32>, Vec<i32>) = persons.iter().map(|(o, p)| (*o, *p)).unzip();
    sqlx::query("insert into persons (project, ord, person_ord) select $1, * from unnest($2::int4[], $3::int4[])")
        .bind(project)
        .bind(&ord)
        .bind(&person)
        .execute(&mut **tx)
        .await
        .context("cannot write persons")?;
    identity::bump(tx, project)
        .await
        .context("cannot bump the persons' version")?;
    Ok((links.len() + delta.identified.len() + persons.len()) as u64)
}

async fn compare_rows(
    pool: &PgPool,
    range: &Range,
    expected: &Expected,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let (p, from, to, users) = (&range.project, range.from, range.to, &expected.users);
    let delta = &expected.delta;
    let active: Vec<(NaiveDate, String)> =
        sqlx::query_as("select day, user_key from daily_active_users where project = $1 and day between $2 and $3")
            .bind(p)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .context("cannot read daily_active_users")?;
    compare(
        differences,
        "daily_active_users",
        delta.active.iter().map(|(_, d, u)| ((*d, u.clone()), true)),
        active.into_iter().map(|k| (k, true)),
    );

    for (table, column, value, counts) in [
        ("daily_event_counts", "event", "events", &delta.event_counts),
        ("daily_page_views", "page", "views", &delta.page_views),
    ] {
        let rows: Vec<(NaiveDate, String, i64)> = sqlx::query_as(&format!(
            "select day, {column}, {value} from {table} where project = $1 and day between $2 and $3"
        ))
        .bind(p)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .with_context(|| format!("cannot read {table}"))?;
        compare(
            differences,
            table,
            counts.iter().map(|((_, d, k), n)| ((*d, k.clone()), *n)),
            rows.into_iter().map(|(d, k, n)| ((d, k), n)),
        );
    }

    type CourseDayRow = (String, NaiveDate, i64, i64, i64, i64, i64, i64);
    let rows: Vec<CourseDayRow> = sqlx::query_as(
        "select course_id, day, views, interactions, enrollments, lesson_completions, course_completions, time_spent_s
           from course_daily where project = $1 and day between $2 and $3",
    )
    .bind(p)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .context("cannot read course_daily")?;
    compare(
        differences,
        "course_daily",
        delta.course_days.iter().map(|((_, c, d), v)| ((c.clone(), *d), *v)),
        rows.into_iter().map(
            |(c, d, views, interactions, enrollments, lesson_completions, course_completions, time_spent_s)| {
                (
                    (c, d),
                    CourseDay {
                        views,
                        interactions,
                        enrollments,
                        lesson_completions,
                        course_completions,
                        time_spent_s,
                    },
                )
            },
        ),
    );

    let rows: Vec<(String, NaiveDate, String, i64)> = sqlx::query_as(
        "select course_id, day, module_id, lesson_completions from course_module_daily
          where project = $1 and day between $2 and $3",
    )
    .bind(p)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .context("cannot read course_module_daily")?;
    compare(
        differences,
        "course_module_daily",
        delta
            .module_completions
            .iter()
            .map(|((_, c, d, m), n)| ((c.clone(), *d, m.clone()), *n)),
        rows.into_iter().map(|(c, d, m, n)| ((c, d, m), n)),
    );

    type EnrollmentRow = (
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<EnrollmentRow> = sqlx::query_as(
        "select course_id, user_key, enrolled_at, completed_at, first_activity_at, last_accessed_at
           from enrollments where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read enrollments")?;
    compare(
        differences,
        "enrollments",
        delta
            .enrollments
            .iter()
            .map(|((_, c, u), v)| ((c.clone(), u.clone()), *v)),
        rows.into_iter().map(
            |(c, u, enrolled_at, completed_at, first_activity_at, last_accessed_at)| {
                (
                    (c, u),
                    Enrollment {
                        enrolled_at,
                        completed_at,
                        first_activity_at,
                        last_accessed_at,
                    },
                )
            },
        ),
    );

    type LessonRow = (
        String,
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        i64,
        Option<f64>,
        DateTime<Utc>,
    );
    let rows: Vec<LessonRow> = sqlx::query_as(
        "select user_key, course_id, lesson_id, module_id, completed_at, time_spent_s, video_percent, last_accessed_at
           from lesson_progress where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read lesson_progress")?;
    compare(
        differences,
        "lesson_progress",
        delta
            .lessons
            .iter()
            .map(|((_, u, c, l), v)| ((u.clone(), c.clone(), l.clone()), v.clone())),
        rows.into_iter().map(
            |(u, c, l, module_id, completed_at, time_spent_s, video_percent, last_accessed_at)| {
                (
                    (u, c, l),
                    Lesson {
                        module_id,
                        completed_at,
                        time_spent_s,
                        video_percent,
                        last_accessed_at,
                    },
                )
            },
        ),
    );

    let rows: Vec<(String, String, Option<String>, i64, f64, bool)> = sqlx::query_as(
        "select user_key, quiz_id, course_id, attempts, score_pct_sum, passed from user_quizzes
          where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read user_quizzes")?;
    // Sums of floats may differ in their last bits with the order of addition.
    let rounded = |q: &Quiz| Quiz {
        score_pct_sum: (q.score_pct_sum * 1e6).round() / 1e6,
        ..q.clone()
    };
    compare(
        differences,
        "user_quizzes",
        delta
            .quizzes
            .iter()
            .map(|((_, u, q), v)| ((u.clone(), q.clone()), rounded(v))),
        rows.into_iter()
            .map(|(u, q, course_id, attempts, score_pct_sum, passed)| {
                (
                    (u, q),
                    rounded(&Quiz {
                        course_id,
                        attempts,
                        score_pct_sum,
                        passed,
                    }),
                )
            }),
    );

    let rows: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "select user_key, badge_id, points, earned_at from user_badges where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read user_badges")?;
    compare(
        differences,
        "user_badges",
        delta.badges.iter().map(|((_, u, b), v)| ((u.clone(), b.clone()), *v)),
        rows.into_iter()
            .map(|(u, b, points, earned_at)| ((u, b), Badge { points, earned_at })),
    );

    type UserRow = (String, i64, i64, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<UserRow> = sqlx::query_as(
        "select user_key, learning_time_s, events, first_seen_at, last_activity_at from user_stats
          where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read user_stats")?;
    compare(
        differences,
        "user_stats",
        delta.users.iter().map(|((_, u), v)| (u.clone(), *v)),
        rows.into_iter()
            .map(|(u, learning_time_s, events, first_seen_at, last_activity_at)| {
                (
                    u,
                    UserTotals {
                        learning_time_s,
                        events,
                        first_seen_at,
                        last_activity_at,
                    },
                )
            }),
    );

    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "select group_id, user_key, joined_at from group_members where project = $1 and user_key = any($2)",
    )
    .bind(p)
    .bind(users)
    .fetch_all(pool)
    .await
    .context("cannot read group_members")?;
    compare(
        differences,
        "group_members",
        delta
            .memberships
            .iter()
            .map(|((_, g, u), t)| ((g.clone(), u.clone()), *t)),
        rows.into_iter().map(|(g, u, t)| ((g, u), t)),
    );

    let rows: Vec<(String, String, DateTime<Utc>, String)> =
        sqlx::query_as("select group_id, traits::text, updated_at, message_id from groups where project = $1")
            .bind(p)
            .fetch_all(pool)
            .await
            .context("cannot read groups")?;
    let mut found = Vec::with_capacity(rows.len());
    for (group, traits, updated_at, message_id) in rows {
        let traits = serde_json::from_str(&traits).context("groups.traits is not a JSON object")?;
        found.push((
            group,
            GroupTraits {
                traits,
                updated_at,
                message_id,
            },
        ));
    }
    compare(
        differences,
        "groups",
        delta.groups.iter().map(|((_, g), v)| (g.clone(), v.clone())),
        found,
    );

    type CourseRow = (
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        Option<Vec<String>>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<CourseRow> = sqlx::query_as(
        "select course_id, title, title_at, total_lessons, total_lessons_at, instructor_id, instructor_at,
                updated_at, items, items_at
         from courses where project = $1",
    )
    .bind(p)
    .fetch_all(pool)
    .await
    .context("cannot read courses")?;
    compare(
        differences,
        "courses",
        delta.catalog.iter().map(|((_, c), v)| (c.clone(), v.clone())),
        rows.into_iter().map(
            |(course, title, title_at, total, total_at, instructor, instructor_at, updated_at, items, items_at)| {
                (
                    course,
                    CatalogEntry {
                        title: title.zip(title_at),
                        total_lessons: total.zip(total_at),
                        instructor_id: instructor.zip(instructor_at),
                        items: items.zip(items_at),
                        updated_at,
                    },
                )
            },
        ),
    );
    Ok(())
}

/// The bitmaps the raw events give for the range: day-keyed kinds, and cohorts of the range's
/// days from every user's first active day.
fn expected_bitmaps(
    range: &Range,
    expected: &Expected,
    ords: &HashMap<String, i32>,
    differences: &mut Vec<Difference>,
) -> BTreeMap<(i16, String, NaiveDate), RoaringBitmap> {
    let mut sets: BTreeMap<(i16, String, NaiveDate), RoaringBitmap> = BTreeMap::new();
    let mut missing = BTreeSet::new();
    let mut add = |key: (i16, String, NaiveDate), user: &str| match ords.get(user) {
        Some(ord) => {
            sets.entry(key).or_default().insert(bitmap::member(*ord));
        }
        None => {
            missing.insert(user.to_owned());
        }
    };
    for (_, day, user) in &expected.delta.active {
        add((Kind::Active.code(), String::new(), *day), user);
    }
    for ((_, course, day, user), viewer) in &expected.delta.course_users {
        add((Kind::CourseActive.code(), course.clone(), *day), user);
        if *viewer {
            add((Kind::CourseViewers.code(), course.clone(), *day), user);
        }
    }
    for (user, day) in &expected.first_days {
        if (range.from..=range.to).contains(day) {
            add((Kind::Cohort.code(), String::new(), *day), user);
        }
    }
    for user in missing {
        differences.push(Difference {
            table: "user_ordinals",
            key: format!("{user:?}"),
            expected: Some("an ordinal".into()),
            found: None,
        });
    }
    sets
}

async fn compare_bitmaps(
    pool: &PgPool,
    range: &Range,
    expected: &Expected,
    ords: &HashMap<String, i32>,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let sets = expected_bitmaps(range, expected, ords, differences);
    let rows: Vec<(i16, String, NaiveDate, Vec<u8>)> = sqlx::query_as(
        "select kind, course_id, day, users from activity_bitmaps where project = $1 and day between $2 and $3",
    )
    .bind(&range.project)
    .bind(range.from)
    .bind(range.to)
    .fetch_all(pool)
    .await
    .context("cannot read activity_bitmaps")?;
    let mut found = BTreeMap::new();
    for (kind, course, day, users) in rows {
        let users = bitmap::decode(&users).with_context(|| format!("corrupt bitmap ({kind}, {course}, {day})"))?;
        // An empty row (a merge that added nobody) is no row.
        if !users.is_empty() {
            found.insert((kind, course, day), users);
        }
    }
    let names: HashMap<i32, &str> = ords.iter().map(|(user, ord)| (*ord, user.as_str())).collect();
    let show = |users: &RoaringBitmap| -> Vec<&str> {
        users
            .iter()
            .map(|m| names.get(&(m as i32)).copied().unwrap_or("?"))
            .collect()
    };
    let keys: BTreeSet<_> = sets.keys().chain(found.keys()).cloned().collect();
    for key in keys {
        let (want, have) = (sets.get(&key), found.get(&key));
        if want == have {
            continue;
        }
        let empty = RoaringBitmap::new();
        let (want_set, have_set) = (want.unwrap_or(&empty), have.unwrap_or(&empty));
        differences.push(Difference {
            table: "activity_bitmaps",
            key: format!("{key:?}"),
            expected: Some(format!(
                "{} users (missing: {:?})",
                want_set.len(),
                show(&(want_set - have_set))
            )),
            found: Some(format!(
                "{} users (extra: {:?})",
                have_set.len(),
                show(&(have_set - want_set))
            )),
        });
    }
    let firsts: Vec<(i32, NaiveDate)> =
        sqlx::query_as("select ord, first_day from user_first_day where project = $1 and ord = any($2)")
            .bind(&range.project)
            .bind(
                expected
                    .users
                    .iter()
                    .filter_map(|u| ords.get(u).copied())
                    .collect::<Vec<i32>>(),
            )
            .fetch_all(pool)
            .await
            .context("cannot read user_first_day")?;
    compare(
        differences,
        "user_first_day",
        expected
            .users
            .iter()
            .filter_map(|u| Some((u.clone(), *expected.first_days.get(u)?))),
        firsts
            .into_iter()
            .filter_map(|(ord, day)| Some((names.get(&ord)?.to_string(), day))),
    );
    Ok(())
}

/// The ledger's events of the range, as reconcile compares them.
async fn ledger_rows(
    db: impl sqlx::Executor<'_, Database = sqlx::Postgres>,
    range: &Range,
) -> anyhow::Result<Vec<LedgerTuple>> {
    sqlx::query_as(
        "select id, event, ts, user_ord, course_id from event_log where project = $1 and day between $2 and $3",
    )
    .bind(&range.project)
    .bind(range.from)
    .bind(range.to)
    .fetch_all(db)
    .await
    .context("cannot read the ledger (event_log)")
}

/// A ledger row as reconcile compares it.
#[derive(Debug, PartialEq)]
struct LedgerRow {
    event: String,
    ts: DateTime<Utc>,
    user_ord: i32,
    course_id: Option<String>,
}

async fn compare_ledger(
    pool: &PgPool,
    range: &Range,
    expected: &Expected,
    ords: &HashMap<String, i32>,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let rows = ledger_rows(pool, range).await?;
    let show = |id: &Uuid| {
        expected
            .events
            .get(id)
            .map_or_else(|| id.to_string(), |e| format!("{} ({id})", e.message_id))
    };
    let mut found: BTreeMap<Uuid, LedgerRow> = rows
        .into_iter()
        .map(|(id, event, ts, user_ord, course_id)| {
            (
                id,
                LedgerRow {
                    event,
                    ts,
                    user_ord,
                    course_id,
                },
            )
        })
        .collect();
    for (id, event) in &expected.events {
        let want = LedgerRow {
            event: event.event.clone(),
            ts: event.ts,
            user_ord: ords.get(event.user_key()).copied().unwrap_or(-1),
            course_id: rollup::delta::property_id(event, "course_id"),
        };
        match found.remove(id) {
            Some(have) if have == want => {}
            have => differences.push(Difference {
                table: "event_log",
                key: show(id),
                expected: Some(format!("{want:?}")),
                found: have.map(|h| format!("{h:?}")),
            }),
        }
    }
    for (id, have) in found {
        differences.push(Difference {
            table: "event_log",
            key: format!("{id} (counted, not in MongoDB `events`)"),
            expected: None,
            found: Some(format!("{have:?}")),
        });
    }
    Ok(())
}

async fn compare_learning_paths(
    pool: &PgPool,
    store: &EventStore,
    range: &Range,
    expected: &Expected,
    differences: &mut Vec<Difference>,
) -> anyhow::Result<()> {
    let pending: BTreeSet<(String, String)> = sqlx::query_as::<_, (String, String)>(
        "select user_key, course_id from learning_path_dirty where project = $1 and user_key = any($2)",
    )
    .bind(&range.project)
    .bind(&expected.users)
    .fetch_all(pool)
    .await
    .context("cannot read learning_path_dirty")?
    .into_iter()
    .collect();
    let mut want: BTreeMap<(String, String), Vec<Document>> = BTreeMap::new();
    for ((_, user, course, lesson), l) in &expected.delta.lessons {
        want.entry((user.clone(), course.clone())).or_default().push(doc! {
            "moduleId": l.module_id.clone(),
            "lessonId": lesson,
            "completed": l.completed_at.is_some(),
            "timeSpent": l.time_spent_s,
            "lastAccessed": mongodb::bson::DateTime::from_millis(l.last_accessed_at.timestamp_millis()),
        });
    }
    for path in want.values_mut() {
        // The flusher's order: module (none first), then lesson.
        path.sort_by(|a, b| {
            let key = |d: &Document| {
                (
                    d.get_str("moduleId").ok().map(str::to_owned),
                    d.get_str("lessonId").unwrap_or_default().to_owned(),
                )
            };
            key(a).cmp(&key(b))
        });
    }
    let collection = store.database().collection::<Document>(LEARNING_PATHS);
    for ((user, course), path) in want {
        if pending.contains(&(user.clone(), course.clone())) {
            continue;
        }
        let id = learning_path_id(&range.project, &user, &course);
        let stored = collection
            .find_one(doc! {"_id": &id})
            .await
            .with_context(|| format!("cannot read learning path {id}"))?;
        let have = stored.and_then(|d| d.get_array("learningPath").ok().cloned());
        let want = Some(path.into_iter().map(Bson::Document).collect::<Vec<_>>());
        if have != want {
            differences.push(Difference {
                table: LEARNING_PATHS,
                key: id,
                expected: want.map(|w| format!("{} lessons", w.len())),
                found: have.map(|h| format!("{} lessons (or different fields)", h.len())),
            });
        }
    }
    Ok(())
}

/// Rewrites everything in scope from the raw events; returns how many rows it wrote. Holds the
/// project's workers back while it runs, and waits (up to a minute) for events counted but not
/// yet stored to land before reading the raw events.
pub async fn fix(pool: &PgPool, store: &EventStore, range: &Range) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await.context("cannot begin the repair")?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(&range.project)
        .execute(&mut *tx)
        .await
        .context("cannot hold the project's workers back")?;
    // No rollup of the project commits now; give the MongoDB inserts of the batches that did
    // commit time to land, so that the raw events are the whole truth.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let expected = loop {
        let expected = expected(store, range).await?;
        let counted: Vec<Uuid> =
            sqlx::query_scalar("select unnest(ids) from event_chunks where project = $1 and day between $2 and $3")
                .bind(&range.project)
                .bind(range.from)
                .bind(range.to)
                .fetch_all(&mut *tx)
                .await
                .context("cannot read the ledger's chunks")?;
        let unstored = counted.iter().filter(|id| !expected.events.contains_key(id)).count();
        if unstored == 0 || tokio::time::Instant::now() >= deadline {
            if unstored > 0 {
                tracing::warn!(unstored, "events counted but not in MongoDB: the repair uncounts them (a replay of their dead letters counts them again)");
            }
            break expected;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let p = &range.project;
    let users = &expected.users;
    let mut rows = 0u64;
    for (table, scope) in [
        ("daily_active_users", "day between $2 and $3"),
        ("daily_event_counts", "day between $2 and $3"),
        ("daily_page_views", "day between $2 and $3"),
        ("course_daily", "day between $2 and $3"),
        ("course_module_daily", "day between $2 and $3"),
        ("activity_bitmaps", "day between $2 and $3 and kind <> 3"),
    ] {
        sqlx::query(&format!("delete from {table} where project = $1 and {scope}"))
            .bind(p)
            .bind(range.from)
            .bind(range.to)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cannot clear {table}"))?;
    }
    for table in [
        "enrollments",
        "lesson_progress",
        "user_quizzes",
        "user_badges",
        "user_stats",
        "group_members",
    ]
    .into_iter()
    .chain(learning::TABLES.iter().copied())
    {
        sqlx::query(&format!(
            "delete from {table} where project = $1 and user_key = any($2)"
        ))
        .bind(p)
        .bind(users)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("cannot clear {table}"))?;
    }
    for table in ["groups", "courses"] {
        sqlx::query(&format!("delete from {table} where project = $1"))
            .bind(p)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cannot clear {table}"))?;
    }
    rollup::apply_rows(&mut tx, &expected.delta)
        .await
        .context("cannot write the recomputed rollups")?;

    // Ordinals for every user of the project, assigning the missing ones.
    let all_users: BTreeSet<(&str, &str)> = expected.first_days.keys().map(|u| (p.as_str(), u.as_str())).collect();
    let ords = ordinals::OrdinalCache::new(all_users.len() as u64 + 1)
        .resolve(pool, all_users)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ord = |user: &str| ords.get(&(p.clone(), user.to_owned())).copied();

    // Day-keyed bitmaps of the range, and every cohort of the project.
    let mut changes = rollup::bitmaps::Changes::default();
    let mut sets: BTreeMap<rollup::bitmaps::Key, RoaringBitmap> = BTreeMap::new();
    let mut add = |key: rollup::bitmaps::Key, user: &str| {
        if let Some(ord) = ord(user) {
            sets.entry(key).or_default().insert(bitmap::member(ord));
        }
    };
    for (_, day, user) in &expected.delta.active {
        add((p.clone(), Kind::Active.code(), String::new(), *day), user);
    }
    for ((_, course, day, user), viewer) in &expected.delta.course_users {
        add((p.clone(), Kind::CourseActive.code(), course.clone(), *day), user);
        if *viewer {
            add((p.clone(), Kind::CourseViewers.code(), course.clone(), *day), user);
        }
    }
    for (user, day) in &expected.first_days {
        add((p.clone(), Kind::Cohort.code(), String::new(), *day), user);
    }
    changes.add = sets;
    sqlx::query("delete from activity_bitmaps where project = $1 and kind = 3")
        .bind(p)
        .execute(&mut *tx)
        .await
        .context("cannot clear the cohorts")?;
    sqlx::query("delete from user_first_day where project = $1")
        .bind(p)
        .execute(&mut *tx)
        .await
        .context("cannot clear user_first_day")?;
    let (mut firsts_ord, mut firsts_day) = (Vec::new(), Vec::new());
    for (user, day) in &expected.first_days {
        if let Some(ord) = ord(user) {
            firsts_ord.push(ord);
            firsts_day.push(*day);
        }
    }
    sqlx::query(
        "insert into user_first_day (project, ord, first_day) select $1, * from unnest($2::int4[], $3::date[])",
    )
    .bind(p)
    .bind(&firsts_ord)
    .bind(&firsts_day)
    .execute(&mut *tx)
    .await
    .context("cannot write user_first_day")?;
    rollup::bitmaps::merge(&mut tx, &changes)
        .await
        .context("cannot write the recomputed bitmaps")?;

    // The ledger of the range: exactly the stored events. Rows that agree keep their owner.
    let found = ledger_rows(&mut *tx, range).await?;
    let stale: Vec<Uuid> = found
        .into_iter()
        .filter(|(id, event, ts, user_ord, course_id)| {
            expected.events.get(id).is_none_or(|e| {
                (
                    e.event.as_str(),
                    e.ts,
                    ord(e.user_key()),
                    rollup::delta::property_id(e, "course_id"),
                ) != (event.as_str(), *ts, Some(*user_ord), course_id.clone())
            })
        })
        .map(|(id, ..)| id)
        .collect();
    sqlx::query("delete from event_ids where id = any($1)")
        .bind(&stale)
        .execute(&mut *tx)
        .await
        .context("cannot clear stale ledger rows")?;
    // The range's chunks are written anew below, from every stored event of it.
    sqlx::query("delete from event_chunks where project = $1 and day between $2 and $3")
        .bind(p)
        .bind(range.from)
        .bind(range.to)
        .execute(&mut *tx)
        .await
        .context("cannot clear the range's ledger chunks")?;
    let entries: Vec<ledger::Entry<'_>> = expected
        .events
        .values()
        .map(|event| ledger::Entry {
            event,
            // Owned by no message: a redelivery finds these counted and not its own.
            owner: 0,
            others: &[],
            user_ord: ord(event.user_key()).unwrap_or_default(),
        })
        .collect();
    // Claims the events not claimed yet (and records them); the others keep their owner and are
    // recorded here.
    let claims = ledger::claim(&mut tx, &entries)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write the ledger: {e}"))?;
    let known: Vec<&ledger::Entry<'_>> = entries
        .iter()
        .zip(&claims)
        .filter(|(_, claim)| **claim != ledger::Claim::New)
        .map(|(entry, _)| entry)
        .collect();
    ledger::record(&mut tx, &known)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write the ledger: {e}"))?;
    rows += fix_identities(pool, &mut tx, p, &expected.delta).await?;
    rows += expected.events.len() as u64;
    rows += (expected.delta.active.len()
        + expected.delta.event_counts.len()
        + expected.delta.page_views.len()
        + expected.delta.course_days.len()
        + expected.delta.module_completions.len()
        + expected.delta.enrollments.len()
        + expected.delta.lessons.len()
        + expected.delta.quizzes.len()
        + expected.delta.badges.len()
        + expected.delta.users.len()
        + changes.add.len()) as u64;
    tx.commit().await.context("cannot commit the repair")?;
    // The learning paths of the learners are marked by apply_rows; rewrite them now.
    while crate::paths::flush(pool, store.database(), 5_000).await? > 0 {}
    Ok(rows)
}

/// Appends a [`Difference`] for every key whose value differs between the two sides.
fn compare<K: Ord + Debug, V: PartialEq + Debug>(
    differences: &mut Vec<Difference>,
    table: &'static str,
    expected: impl IntoIterator<Item = (K, V)>,
    found: impl IntoIterator<Item = (K, V)>,
) {
    let expected: BTreeMap<K, V> = expected.into_iter().collect();
    let mut found: BTreeMap<K, V> = found.into_iter().collect();
    for (key, value) in &expected {
        match found.remove(key) {
            Some(stored) if stored == *value => {}
            stored => differences.push(Difference {
                table,
                key: format!("{key:?}"),
                expected: Some(format!("{value:?}")),
                found: stored.map(|v| format!("{v:?}")),
            }),
        }
    }
    for (key, stored) in found {
        differences.push(Difference {
            table,
            key: format!("{key:?}"),
            expected: None,
            found: Some(format!("{stored:?}")),
        });
    }
}
