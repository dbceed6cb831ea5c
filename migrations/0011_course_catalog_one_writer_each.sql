-- The course catalog had two writers of one table (the api's PUT and the workers' course_published
-- events), and the workers' upsert depended on arrival order: an older event arriving after a newer
-- one without a title was dropped, so the title depended on which came first, and reconcile could
-- not check the table. Now each table has one writer and the catalog is a pure function of its
-- inputs (docs/architecture.md):
--   courses           the workers only, from course_published events: each field is the value of
--                     the latest event carrying it, by event time (ties: the greater value), so
--                     arrival order and batching cannot change it; reconcile recomputes it.
--   course_overrides  the api only (PUT /v1/courses/{id}): an admin's replacement of the entry.
--   course_catalog    what readers see: per field, the override when it is at least as recent as
--                     the events' value, else the events' value.
alter table courses
    add column title_at timestamptz,
    add column total_lessons_at timestamptz,
    add column instructor_at timestamptz;
update courses set
    title_at = case when title is not null then updated_at end,
    total_lessons_at = case when total_lessons is not null then updated_at end,
    instructor_at = case when instructor_id is not null then updated_at end;

create table course_overrides (
    project text not null,
    course_id text not null,
    title text,
    total_lessons integer,
    instructor_id text,
    updated_at timestamptz not null,
    primary key (project, course_id)
);
-- Rows written before this migration may have come from the api: keep each as an override at its
-- time (where an event wrote it, the override holds the same values at the same time).
insert into course_overrides (project, course_id, title, total_lessons, instructor_id, updated_at)
select project, course_id, title, total_lessons, instructor_id, updated_at from courses;

create view course_catalog as
select
    project,
    course_id,
    case when o.updated_at is not null and (c.title_at is null or o.updated_at >= c.title_at)
         then o.title else c.title end as title,
    case when o.updated_at is not null and (c.total_lessons_at is null or o.updated_at >= c.total_lessons_at)
         then o.total_lessons else c.total_lessons end as total_lessons,
    case when o.updated_at is not null and (c.instructor_at is null or o.updated_at >= c.instructor_at)
         then o.instructor_id else c.instructor_id end as instructor_id,
    greatest(c.updated_at, o.updated_at) as updated_at
from courses c
full join course_overrides o using (project, course_id);
