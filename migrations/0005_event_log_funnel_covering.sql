-- Funnels read (user_ord, ts, event) of a few event names over a time range (api/src/funnel.rs).
-- With user_ord in the index, an unfiltered funnel is an index-only scan: no heap page is read
-- for the events that are all-visible, which on the demo workload was 1,954 random heap pages
-- for 10,000 events.
drop index event_log_funnel;
create index event_log_funnel on event_log (project, event, ts) include (user_ord);
-- Index-only scans skip the heap only for pages the visibility map marks all-visible, and
-- event_log only grows: vacuum it after 1% new rows rather than the default 20%, so recent
-- events are not read from the heap for long.
alter table event_log set (autovacuum_vacuum_insert_scale_factor = 0.01);
