-- xAPI statement ids (issue 13; docs/contract.md §4 "xAPI statements"): ingest records each
-- statement id it accepts, with the SHA-256 of the statement's canonical content, before it
-- publishes the statement's event. A statement sent again under its id with the same content is
-- accepted again (and its event, the same messageId, is counted once by the workers), which makes
-- a retry after a failed publish safe; other content under a used id is refused with 409.
-- Written by ingest only (insert … on conflict do nothing, in one transaction per request).
create table xapi_statements (
    project text not null,
    statement_id uuid not null,
    content_hash bytea not null check (octet_length(content_hash) = 32),
    first_seen_at timestamptz not null default now(),
    primary key (project, statement_id)
);
