-- API keys: write keys for ingest, read keys for the api. Only the SHA-256 (hex) of each key is
-- stored; the key itself is shown once by `api keys create`. A revoked key keeps its row (for the
-- audit trail of `api keys list`) and is never accepted again.
create table api_keys (
    id uuid primary key,
    project text not null,
    scope text not null check (scope in ('write', 'read')),
    key_hash text not null unique,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);

create index api_keys_project on api_keys (project, created_at);
