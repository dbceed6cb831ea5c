-- Exactly once per event, exact distinct counts as bitmaps, and the event-time table funnels read.
-- docs/architecture.md ("Counting each event once") explains the design; in short:
--
-- `event_log` is the per-event ledger. The workers' rollup transaction inserts one row per event
-- (`on conflict do nothing returning id`) and counts exactly the rows it inserted, in the same
-- transaction as the counters. Whatever carries an event (its first message, a client's resend
-- inside another message, a redelivery after a crash, a replay from the dead-letter stream), the
-- row exists once, so the event is counted once. `owner` names the message that claimed it, so a
-- redelivery of that same message (after a crash between this commit and the MongoDB insert)
-- knows the event is its own to store, while a resend inside another message does not store its
-- own, possibly different, copy. This replaces the per-message ledger `applied_messages`, which
-- counted an event twice when one message carried it twice.
create table event_log (
    -- The first 16 bytes of SHA-256(project, 0x00, messageId): the event's identity.
    id uuid primary key,
    -- The first 8 bytes of SHA-256 of the key of the message that claimed the event.
    owner bigint not null,
    project text not null,
    event text not null,
    ts timestamptz not null,
    -- The user's dense ordinal in `user_ordinals`.
    user_ord integer not null,
    course_id text,
    -- The event's top-level scalar properties, for funnel steps filtered by a property.
    props jsonb
);
-- Funnels read the events of a few names over a time range.
create index event_log_funnel on event_log (project, event, ts);

drop table applied_messages;

-- A dense ordinal per (project, user key), so sets of users are compressed bitmaps. Assigned once
-- and never changed; gaps are harmless.
create table user_ordinals (
    project text not null,
    user_key text not null,
    ord integer not null,
    primary key (project, user_key)
);
create index user_ordinals_ord on user_ordinals (project, ord);

create table project_counters (
    project text primary key,
    next_user_ord integer not null
);

-- Sets of users as roaring bitmaps of ordinals (the `roaring` crate's portable format), merged
-- by the workers under a row lock in the rollup transaction. Kinds (common::bitmap::Kind):
--   0 users active on `day`                      (course_id = '')
--   1 learners with any event of the course on `day`
--   2 users who viewed the course on `day`
--   3 users whose first active day is `day`      (course_id = ''; retention cohorts)
create table activity_bitmaps (
    project text not null,
    kind smallint not null,
    course_id text not null,
    day date not null,
    users bytea not null,
    primary key (project, kind, course_id, day)
);
-- Already compressed: no point in PostgreSQL trying again.
alter table activity_bitmaps alter column users set storage external;

-- The first active day of each user: moving a user to an earlier cohort (a late event) needs it.
create table user_first_day (
    project text not null,
    ord integer not null,
    first_day date not null,
    primary key (project, ord)
);

-- Course viewers and active learners are bitmaps now (kinds 1 and 2).
drop table course_daily_users;

-- (student, course) pairs whose MongoDB `student_learning_paths` document is out of date. The
-- rollup transaction marks them; a flusher rewrites each at most once per flush interval and
-- then deletes the mark unless its version changed meanwhile (marked again by a later commit),
-- so a crash in between only delays the rewrite.
create sequence learning_path_dirty_version;
create table learning_path_dirty (
    project text not null,
    user_key text not null,
    course_id text not null,
    version bigint not null default nextval('learning_path_dirty_version'),
    primary key (project, user_key, course_id)
);
