//! The OpenAPI 3 document of the read API, written by hand (`GET /v1/openapi.json`).

use serde_json::{json, Value};

fn range_params() -> Value {
    json!([
        {"name": "from", "in": "query", "required": true, "schema": {"type": "string", "format": "date"}, "description": "First UTC day (inclusive)."},
        {"name": "to", "in": "query", "required": true, "schema": {"type": "string", "format": "date"}, "description": "Last UTC day (inclusive); at most the configured maximum range after `from`."}
    ])
}

fn page_params() -> Value {
    json!([
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}
    ])
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn with(mut a: Value, more: &[Value]) -> Value {
    if let Value::Array(items) = &mut a {
        for m in more {
            match m {
                Value::Array(ms) => items.extend(ms.iter().cloned()),
                other => items.push(other.clone()),
            }
        }
    }
    a
}

fn op(summary: &str, parameters: Value) -> Value {
    json!({
        "summary": summary,
        "parameters": parameters,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK (JSON; `ETag` and `Cache-Control` set)", "content": {"application/json": {"schema": {"type": "object"}}}},
            "304": {"description": "Not modified (`If-None-Match` matched the `ETag`)"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "422": {"$ref": "#/components/responses/Error"}
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let limit = json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}});
    let mut funnel = op(
        "Order-aware funnel over the per-event ledger (PostgreSQL event_chunks), never raw events",
        json!([]),
    );
    funnel["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
    "type": "object", "required": ["steps", "from", "to"],
    "properties": {
        "steps": {"type": "array", "minItems": 2, "maxItems": 10, "items": {"type": "string"}},
        "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
        "window": {"oneOf": [{"type": "integer", "description": "seconds"}, {"type": "string", "example": "7d"}],
                   "description": "Conversion window from the user's first step-1 event in range (default 7d)."},
        "group": {"type": "string", "description": "Only the current members of this group (Segment `group` calls) enter."}
    }}}}});
    let group = json!({"name": "group", "in": "query", "description": "only the current members of this group (Segment `group` calls)", "schema": {"type": "string"}});
    let mut put = op("Create or replace a catalog entry (admins)", json!([path_param("id")]));
    put["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "properties": {
            "title": {"type": ["string", "null"]}, "total_lessons": {"type": ["integer", "null"], "minimum": 1},
            "instructor_id": {"type": ["string", "null"]},
            "items": {"type": ["array", "null"], "maxItems": 1000, "items": {"type": "string"},
                      "description": "The course's items in order (drop-off follows it)."}}}}}});
    let id = || json!([path_param("id")]);
    let q = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "schema": schema, "description": description});
    let pass_mark = q(
        "pass_mark",
        json!({"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}),
        "Grades below it fail (when no event said passed or failed).",
    );
    let at_risk = with(
        id(),
        &[
            page_params(),
            json!([
                q(
                    "rules",
                    json!({"type": "string", "default": "inactive,behind,failing,grade"}),
                    "Comma list of the rules to apply."
                ),
                q(
                    "inactive_days",
                    json!({"type": "integer", "minimum": 1, "maximum": 3650, "default": 14}),
                    "Days without an event of the course."
                ),
                q(
                    "behind_points",
                    json!({"type": "number", "minimum": 0, "maximum": 100, "default": 25}),
                    "Progress points below the enrollees' median."
                ),
                q(
                    "failed_in_row",
                    json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 3}),
                    "Latest quiz attempts all failed."
                ),
                pass_mark.clone()
            ]),
        ],
    );
    let grades = with(
        id(),
        &[json!([
            q(
                "buckets",
                json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
                "Equal grade buckets over 0-1."
            ),
            pass_mark
        ])],
    );
    let learner_time = with(
        json!([path_param("id")]),
        &[
            range_params(),
            json!([q(
                "course_id",
                json!({"type": "string"}),
                "One course; absent: all the learner's events."
            )]),
        ],
    );
    let mut stream = op(
        "Server-sent `progress` events: the learner's progress now, then on every change",
        json!([path_param("id"), {"name": "key", "in": "query", "schema": {"type": "string"}, "description": "Credential for clients that cannot set headers (EventSource)."}]),
    );
    stream["responses"]["200"] = json!({"description": "text/event-stream", "content": {"text/event-stream": {}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Learning analytics read API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Metrics over the rollups of docs/contract.md §6. Bearer credentials: a JWT (HS256; sub, role student|instructor|admin, project, courses) or a read key (admin of its project)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "`{\"error\", \"detail\"}`", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error", "detail"],
                "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}}}}}
        },
        "paths": {
            "/": {"get": {"summary": "The dashboard page (`?key=` a read key)", "responses": {"200": {"description": "HTML"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/v1/metrics/active-users": {"get": op("DAU/WAU/MAU per day, or distinct active users per week or month",
                with(range_params(), &[json!({"name": "interval", "in": "query", "schema": {"type": "string", "enum": ["day", "week", "month"], "default": "day"}}),
                    group.clone()]))},
            "/v1/metrics/events/top": {"get": op("Events by name over the range, most first", with(range_params(), &[limit.clone(), group.clone()]))},
            "/v1/metrics/pages/top": {"get": op("Page views by path over the range, most first", with(range_params(), &[limit, group.clone()]))},
            "/v1/funnels": {"post": funnel},
            "/v1/retention": {"get": op("Cohorts by first active day in the range; D1, D7, D30 retention", with(range_params(), &[json!({"name": "matrix", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 90}}), group.clone()]))},
            "/v1/courses": {"get": op("Catalog and courses with learners; enrolments, completions, completion rate", page_params())},
            "/v1/courses/{id}": {"put": put},
            "/v1/courses/{id}/analytics": {"get": op("Daily course analytics, range totals, popular modules", with(json!([path_param("id")]), &[range_params(), json!([group.clone()])]))},
            "/v1/courses/{id}/learners": {"get": op("The course's learners with their progress", with(json!([path_param("id")]), &[page_params(), json!([group])]))},
            "/v1/courses/{id}/engagement": {"get": op("Current enrollees (latest enrol or unenrol by event time) and learners active in the last 7 and 30 days", id())},
            "/v1/courses/{id}/at-risk": {"get": op("Current enrollees flagged by the at-risk rules, each with the rules, values and thresholds", at_risk)},
            "/v1/courses/{id}/drop-off": {"get": op("Learners reaching each catalog item in order, and the share reaching the next", id())},
            "/v1/courses/{id}/items/difficulty": {"get": op("Per item: first- and last-attempt correct rates, mean attempts until correct", id())},
            "/v1/courses/{id}/videos": {"get": op("Per video: viewers, full views (95%), coverage and rewatches of 20 segments", id())},
            "/v1/courses/{id}/time-on-task": {"get": op("Daily reported durations and sessions (30 minutes of inactivity split them)", with(id(), &[range_params()]))},
            "/v1/courses/{id}/grades": {"get": op("Grade distribution in buckets and pass rate", grades)},
            "/v1/users/{id}/time-on-task": {"get": op("A learner's daily reported durations and sessions, over all their events or one course", learner_time)},
            "/v1/groups/{id}": {"get": op("A group's traits (the latest group call carrying any) and its member count; 404 when no group call named it", json!([path_param("id")]))},
            "/v1/identities/{id}": {"get": op("The person an id belongs to (identity stitching): its ids, and every identify or alias link touching them with its outcome (null when applied, else identified, invalid_id or too_many_ids); admins only; 404 for an id no event carried", json!([path_param("id")]))},
            "/v1/users/{id}/stats": {"get": op("Learning stats: courses, time, quizzes, points, badges, streaks", json!([path_param("id")]))},
            "/v1/users/{id}/progress": {"get": op("Progress overall and per course", json!([path_param("id")]))},
            "/v1/users/{id}/progress/stream": {"get": stream},
            "/v1/users/{id}/learning-paths/{course_id}": {"get": op("The learner's path in a course (from PostgreSQL lesson_progress, as the workers' student_learning_paths documents hold it)", json!([path_param("id"), path_param("course_id")]))}
        }
    })
}
