-- Identity stitching (issue 12; docs/contract.md §6 "One person"): `identify` calls carrying an
-- anonymousId and a userId, and `alias` calls, link two ids of one person. The workers keep the
-- links and the partition they imply in the rollup transaction, so exactly once like every
-- rollup; distinct counts (active users, retention, course viewers and learners, funnels) map
-- ordinals to persons when they are read, so a link applies to all of a person's events, before
-- and after it, without rewriting any bitmap. `workers reconcile` recomputes all three tables.

-- Every counted link, with the outcome of the last replay of its component.
create table identity_links (
    project text not null,
    message_id text not null,
    ts timestamptz not null,
    -- 0: identify (from = anonymousId), 1: alias (from = previousId); to = userId.
    kind smallint not null,
    from_key text not null,
    to_key text not null,
    -- Null: applied. 'identified': refused, it would merge two identified persons (re-evaluated
    -- when an earlier link or identification arrives). 'invalid_id': an id no person can share
    -- ('undefined', 'null', …). 'too_many_ids': refused because the person would exceed its
    -- bound on ids. The last two are final and not part of the link graph.
    refused text,
    primary key (project, message_id)
);
create index identity_links_from on identity_links (project, from_key);
create index identity_links_to on identity_links (project, to_key);

-- When each id first was an event's userId (by event time, then messageId): a person is
-- identified at a link when one of its ids was before it.
create table identified_users (
    project text not null,
    user_key text not null,
    first_at timestamptz not null,
    first_message_id text not null,
    primary key (project, user_key)
);

-- The partition: every ordinal of a person of more than one id, with the person's smallest
-- ordinal (its representative). Ordinals without a row are persons of their own.
create table persons (
    project text not null,
    ord integer not null,
    person_ord integer not null,
    primary key (project, ord)
);

-- Bumped by every change of a project's `persons`, so readers cache the partition until it moves.
create table persons_versions (
    project text primary key,
    version bigint not null
);
