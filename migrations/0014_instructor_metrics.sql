-- The instructor metrics (docs/contract.md §6 "Instructor metrics", workers/src/rollup/learning.rs).
-- Each table merges order-free, so the rows do not depend on arrival order or batching: registers
-- keep the latest value by (event time, messageId); reach keeps the earliest time; attempts and
-- video events are one row per counted event (the order-dependent answers are computed from them
-- when read); sessions are the union of [ts, ts + 30 min) over a learner's events. All are keyed by
-- learner first after the course, and read per course.

-- A course's items in order, from course_published.items and PUT /v1/courses/{id}.
alter table courses add column items text[], add column items_at timestamptz;
alter table course_overrides add column items text[];
create or replace view course_catalog as
select
    project,
    course_id,
    case when o.updated_at is not null and (c.title_at is null or o.updated_at >= c.title_at)
         then o.title else c.title end as title,
    case when o.updated_at is not null and (c.total_lessons_at is null or o.updated_at >= c.total_lessons_at)
         then o.total_lessons else c.total_lessons end as total_lessons,
    case when o.updated_at is not null and (c.instructor_at is null or o.updated_at >= c.instructor_at)
         then o.instructor_id else c.instructor_id end as instructor_id,
    greatest(c.updated_at, o.updated_at) as updated_at,
    case when o.updated_at is not null and (c.items_at is null or o.updated_at >= c.items_at)
         then o.items else c.items end as items
from courses c
full join course_overrides o using (project, course_id);

-- The latest course_enrolled (true) or course_unenrolled (false) of each learner of a course.
create table enrollment_states (
    project text not null,
    course_id text not null,
    user_key text not null,
    at timestamptz not null,
    message_id text not null,
    enrolled boolean not null,
    primary key (project, course_id, user_key)
);
create index enrollment_states_user on enrollment_states (project, user_key);

-- Who reached which item of a course, and when first.
create table item_reach (
    project text not null,
    course_id text not null,
    item_id text not null,
    user_key text not null,
    first_at timestamptz not null,
    primary key (project, course_id, item_id, user_key)
);
create index item_reach_user on item_reach (project, user_key);

-- Every counted attempt: kind 0 question_answered (item_id), 1 quiz_submitted (quiz_id).
create table attempts (
    project text not null,
    course_id text not null,
    user_key text not null,
    item_id text not null,
    at timestamptz not null,
    message_id text not null,
    kind smallint not null,
    correct boolean not null,
    primary key (project, course_id, user_key, item_id, at, message_id)
);
create index attempts_user on attempts (project, user_key);

-- A learner's grade and pass in a course: two registers, each with the event that set it.
create table grades (
    project text not null,
    course_id text not null,
    user_key text not null,
    grade double precision,
    grade_at timestamptz,
    grade_message_id text,
    passed boolean,
    passed_at timestamptz,
    passed_message_id text,
    primary key (project, course_id, user_key)
);
create index grades_user on grades (project, user_key);

-- Every counted video event: kind 0 played, 1 paused, 2 seeked (position_s = from_s), 3 completed.
create table video_events (
    project text not null,
    course_id text not null,
    video_id text not null,
    user_key text not null,
    at timestamptz not null,
    message_id text not null,
    kind smallint not null,
    position_s double precision,
    to_s double precision,
    length_s double precision,
    segments text,
    primary key (project, course_id, video_id, user_key, at, message_id)
);
create index video_events_user on video_events (project, user_key);

-- Sessions: the union of [ts, ts + 30 min) over a learner's events of a course ('' for all of them).
create table learner_sessions (
    project text not null,
    user_key text not null,
    course_id text not null,
    spans tstzmultirange not null,
    primary key (project, user_key, course_id)
);
create index learner_sessions_course on learner_sessions (project, course_id);

-- Reported durations (duration_s, else time_spent_s) per learner, course ('' for all) and day; a
-- row for every day the learner had an event there.
create table time_on_task_daily (
    project text not null,
    user_key text not null,
    course_id text not null,
    day date not null,
    reported_s bigint not null,
    primary key (project, user_key, course_id, day)
);
create index time_on_task_daily_course on time_on_task_daily (project, course_id, day);
