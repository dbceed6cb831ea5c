-- The ledger split in two (issue 9): what exactly-once needs per event, and what funnels read,
-- stored the way each is used. docs/architecture.md ("Counting each event once") explains it.
--
-- `event_log` (0004, 0005) kept one wide row per event under two B-trees: the identity and the
-- funnel's (project, event, ts) covering index, with the name, course and a jsonb of properties.
-- Inserting it was the largest cost of the rollup transaction, 12 µs of PostgreSQL CPU per event
-- (pg_stat_statements over a 104k-event drain), more than every rollup table together.
--
-- `event_ids` keeps only the claim: the event's identity and the message that claimed it, so
-- the claim is the one B-tree insert per event that exactly-once cannot do without.
create table event_ids (
    -- The first 16 bytes of SHA-256(project, 0x00, messageId): the event's identity.
    id uuid primary key,
    -- The first 8 bytes of SHA-256 of the key of the message that claimed the event.
    owner bigint not null
);

-- `event_chunks` keeps what funnels and reconcile read of the counted events: one row per
-- (project, event name, UTC day) per rollup transaction, its events as parallel arrays, so a
-- batch of 5,000 events writes a few dozen rows rather than 5,000 index entries. Funnels read the
-- chunks of their step names over their days; a late event adds a chunk to its day.
create table event_chunks (
    project text not null,
    event text not null,
    day date not null,
    ids uuid[] not null,
    times timestamptz[] not null,
    -- The users' dense ordinals in `user_ordinals`.
    users int4[] not null,
    -- `course_id` as an id (strings as they are, numbers printed), null when absent.
    courses text[] not null,
    -- Each event's top-level scalar properties as a JSON object (text; null when none), for
    -- funnel steps filtered by a property.
    props text[] not null
);
create index event_chunks_key on event_chunks (project, event, day);
-- Pruning by age, across projects.
create index event_chunks_day on event_chunks (day);
-- Written once, read rarely: stored out of line without compression (pglz cost more CPU per
-- event than the chunk saved).
alter table event_chunks
    alter column ids set storage external,
    alter column times set storage external,
    alter column users set storage external,
    alter column courses set storage external,
    alter column props set storage external;

insert into event_ids (id, owner) select id, owner from event_log;
insert into event_chunks (project, event, day, ids, times, users, courses, props)
select project, event, (ts at time zone 'UTC')::date,
       array_agg(id order by ts, id), array_agg(ts order by ts, id), array_agg(user_ord order by ts, id),
       array_agg(course_id order by ts, id), array_agg(props::text order by ts, id)
  from event_log
 group by project, event, (ts at time zone 'UTC')::date;
drop table event_log;

-- The counted events one row each, as `event_log` had them, for reconcile, tests and operators.
-- Filter by `project` and `day` as well as `ts`: only those reach the chunks' index.
create view event_log as
select e.id, i.owner, c.project, c.event, c.day, e.ts, e.user_ord, e.course_id, e.props::jsonb as props
  from event_chunks c
 cross join lateral unnest(c.ids, c.times, c.users, c.courses, c.props) as e(id, ts, user_ord, course_id, props)
  join event_ids i on i.id = e.id;
