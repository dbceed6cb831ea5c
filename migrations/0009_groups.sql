-- Segment `group` calls (docs: a learner in a class, cohort or organisation). Rolled up by the
-- workers in the same transaction as every other rollup, so exactly once like them, and checked
-- and repaired by `workers reconcile`.

-- Each group's traits, from its latest `group` call that carried traits, by event time and then
-- messageId (so a late or replayed call cannot replace newer traits, and the result does not
-- depend on arrival order).
create table groups (
    project text not null,
    group_id text not null,
    traits jsonb not null,
    updated_at timestamptz not null,
    message_id text not null,
    primary key (project, group_id)
);

-- Who belongs to which group, since their first `group` call into it (by event time).
create table group_members (
    project text not null,
    group_id text not null,
    user_key text not null,
    joined_at timestamptz not null,
    primary key (project, group_id, user_key)
);
-- A learner's groups (reconcile reads memberships by learner).
create index group_members_user on group_members (project, user_key);
