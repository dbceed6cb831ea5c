-- (student, course) pairs whose MongoDB `student_learning_paths` document has been written at
-- least once. The learning-path flusher (workers/src/paths.rs) inserts the documents of pairs not
-- listed here in bulk (one `insert_many` for many documents, where an upsert per document costs
-- the MongoDB server a lookup and a write each) and upserts only the listed ones. A pair is
-- listed after its insert succeeded, so a crash in between makes the next flush's insert meet a
-- duplicate key, which falls back to the upsert. Only that flusher writes this table.
create table learning_paths_written (
    project text not null,
    user_key text not null,
    course_id text not null,
    primary key (project, user_key, course_id)
);
