-- The rollups of CONTRACT.md §6, and the ledger that makes applying them exactly once.
--
-- Exactly once: every event document in MongoDB records the JetStream message that first stored it
-- (`stored_by`). A worker's transaction claims its messages here (insert ... on conflict do nothing
-- returning) and counts only the events those messages own. A redelivered message that was already
-- applied claims nothing; an event resent by a client inside another message is owned by the first
-- one; a message redelivered after a crash between the MongoDB insert and this commit still owns
-- its events. One ledger row per message (about a hundred events), not per event.
create table applied_messages (
    message_key text primary key,
    applied_at timestamptz not null default now()
);
create index applied_messages_applied_at on applied_messages (applied_at);

-- Top events: events per (day, name).
create table daily_event_counts (
    project text not null,
    day date not null,
    event text not null,
    events bigint not null,
    primary key (project, day, event)
);

-- Top pages: page views per (day, page path).
create table daily_page_views (
    project text not null,
    day date not null,
    page text not null,
    views bigint not null,
    primary key (project, day, page)
);

-- Course daily analytics: counters per (course, day).
create table course_daily (
    project text not null,
    course_id text not null,
    day date not null,
    views bigint not null default 0,
    interactions bigint not null default 0,
    enrollments bigint not null default 0,
    lesson_completions bigint not null default 0,
    course_completions bigint not null default 0,
    time_spent_s bigint not null default 0,
    primary key (project, course_id, day)
);

-- The learners of a course on a day: any event with that course_id makes an active learner;
-- `viewer` marks those who viewed it (unique viewers). A set: re-applying changes nothing.
create table course_daily_users (
    project text not null,
    course_id text not null,
    day date not null,
    user_key text not null,
    viewer boolean not null,
    primary key (project, course_id, day, user_key)
);

-- Popular modules: lesson completions per (course, day, module).
create table course_module_daily (
    project text not null,
    course_id text not null,
    day date not null,
    module_id text not null,
    lesson_completions bigint not null,
    primary key (project, course_id, day, module_id)
);

-- One row per (course, learner): first enrolment and completion times (earliest wins, so late
-- and repeated events change nothing), first and last activity. Completion rate, progress status,
-- courses enrolled/completed all derive from it.
create table enrollments (
    project text not null,
    course_id text not null,
    user_key text not null,
    enrolled_at timestamptz,
    completed_at timestamptz,
    first_activity_at timestamptz not null,
    last_accessed_at timestamptz not null,
    primary key (project, course_id, user_key)
);
create index enrollments_user on enrollments (project, user_key);

-- Per (learner, course, lesson): completion, time spent (sum of lesson_completed.time_spent_s),
-- furthest video position, last access. Progress % = completed lessons / the catalog's total.
create table lesson_progress (
    project text not null,
    user_key text not null,
    course_id text not null,
    lesson_id text not null,
    module_id text,
    completed_at timestamptz,
    time_spent_s bigint not null default 0,
    video_percent double precision,
    last_accessed_at timestamptz not null,
    primary key (project, user_key, course_id, lesson_id)
);
create index lesson_progress_course on lesson_progress (project, course_id);

-- Quizzes per learner: attempts, summed score (as a percentage of max_score), passed ever.
create table user_quizzes (
    project text not null,
    user_key text not null,
    quiz_id text not null,
    course_id text,
    attempts bigint not null,
    score_pct_sum double precision not null,
    passed boolean not null,
    primary key (project, user_key, quiz_id)
);

-- Badges per learner: a set, so points are the sum over distinct badges.
create table user_badges (
    project text not null,
    user_key text not null,
    badge_id text not null,
    points bigint not null,
    earned_at timestamptz not null,
    primary key (project, user_key, badge_id)
);

-- Per learner: learning time and activity bounds (streaks derive from daily_active_users).
create table user_stats (
    project text not null,
    user_key text not null,
    learning_time_s bigint not null default 0,
    events bigint not null default 0,
    first_seen_at timestamptz not null,
    last_activity_at timestamptz not null,
    primary key (project, user_key)
);

-- The course catalog: from the api (PUT /v1/courses/{id}) or course_published events; the latest
-- update wins.
create table courses (
    project text not null,
    course_id text not null,
    title text,
    total_lessons integer,
    instructor_id text,
    updated_at timestamptz not null,
    primary key (project, course_id)
);
