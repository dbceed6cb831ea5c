-- `course_totals` (0006) kept by statement triggers over transition tables instead of row
-- triggers: one grouped upsert per statement on `enrollments` rather than a PL/pgSQL call and an
-- upsert per row. A rollup transaction upserts one `enrollments` row per (learner, course) of its
-- batch, nearly all of them only moving `last_accessed_at`; the row triggers cost PostgreSQL
-- about 3 µs per stored event (pg_stat_statements, bench store phase), the largest rollup cost
-- after the ledger. The totals stay exact: every insert, update and delete of `enrollments`
-- passes through these triggers in its own transaction, and groups whose deltas are all zero
-- write nothing (no row lock taken for an update that moved only `last_accessed_at`). Groups are
-- upserted in (project, course_id) order, so two rollup transactions lock them in one order.
drop trigger course_totals_insert on enrollments;
drop trigger course_totals_update on enrollments;
drop trigger course_totals_delete on enrollments;
drop function course_totals_track();
drop function course_totals_add(text, text, bigint, bigint, bigint);

create function course_totals_inserted() returns trigger language plpgsql as $$
begin
    insert into course_totals as t (project, course_id, learners, enrolled, completed)
    select project, course_id, count(*),
           count(*) filter (where enrolled_at is not null),
           count(*) filter (where enrolled_at is not null and completed_at is not null)
      from new_rows
     group by project, course_id
     order by project, course_id
    on conflict (project, course_id) do update set
        learners = t.learners + excluded.learners,
        enrolled = t.enrolled + excluded.enrolled,
        completed = t.completed + excluded.completed;
    return null;
end
$$;

create function course_totals_updated() returns trigger language plpgsql as $$
begin
    insert into course_totals as t (project, course_id, learners, enrolled, completed)
    select project, course_id, sum(learners), sum(enrolled), sum(completed)
      from (select project, course_id, 1 as learners,
                   (enrolled_at is not null)::int as enrolled,
                   (enrolled_at is not null and completed_at is not null)::int as completed
              from new_rows
            union all
            select project, course_id, -1,
                   -(enrolled_at is not null)::int,
                   -(enrolled_at is not null and completed_at is not null)::int
              from old_rows) d
     group by project, course_id
    having sum(learners) <> 0 or sum(enrolled) <> 0 or sum(completed) <> 0
     order by project, course_id
    on conflict (project, course_id) do update set
        learners = t.learners + excluded.learners,
        enrolled = t.enrolled + excluded.enrolled,
        completed = t.completed + excluded.completed;
    return null;
end
$$;

create function course_totals_deleted() returns trigger language plpgsql as $$
begin
    insert into course_totals as t (project, course_id, learners, enrolled, completed)
    select project, course_id, -count(*),
           -count(*) filter (where enrolled_at is not null),
           -count(*) filter (where enrolled_at is not null and completed_at is not null)
      from old_rows
     group by project, course_id
     order by project, course_id
    on conflict (project, course_id) do update set
        learners = t.learners + excluded.learners,
        enrolled = t.enrolled + excluded.enrolled,
        completed = t.completed + excluded.completed;
    return null;
end
$$;

create trigger course_totals_insert after insert on enrollments
    referencing new table as new_rows
    for each statement execute function course_totals_inserted();
create trigger course_totals_update after update on enrollments
    referencing old table as old_rows new table as new_rows
    for each statement execute function course_totals_updated();
create trigger course_totals_delete after delete on enrollments
    referencing old table as old_rows
    for each statement execute function course_totals_deleted();
