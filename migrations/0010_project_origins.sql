-- The browser origins allowed to send a project's events (docs/contract.md §3, CORS). A project
-- with no rows accepts every origin (echoed, without credentials); with rows, ingest refuses a
-- request whose `Origin` is not one of them (403 origin_not_allowed). Managed by
-- `api origins set|list`; values are normalised to `scheme://host[:port]`, lowercase.
create table project_origins (
    project text not null,
    origin text not null,
    primary key (project, origin)
);
