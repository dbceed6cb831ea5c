//! Course routes: the catalog (`GET /v1/courses`, `PUT /v1/courses/{id}`), a course's daily
//! analytics and its learners with their progress. `crate::query::courses` computes them.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    Json,
};

use crate::{
    auth::{Principal, Role},
    query::courses::{self, CourseUpdate},
    routes::{
        access::{CourseReader, Staff},
        answer::{cached, json},
        extract::{path_id, GroupFilter, JsonBody, Page, Range},
    },
    ApiError, App,
};

/// `GET /v1/courses?limit&offset`: the catalog and every course with learners, with enrolments,
/// completions and the completion rate to date. Instructors see the courses they teach.
pub async fn list(State(app): State<App>, Staff(principal): Staff, page: Page, headers: HeaderMap) -> Response {
    // None: every course (admins); Some: only these.
    let only: Option<Vec<String>> = (principal.role == Role::Instructor).then(|| principal.courses.to_vec());
    let key = format!("courses:{}:{only:?}", page.key());
    cached(&app, &principal, &headers, key, async {
        let (items, total) = courses::list(&app.pool, &principal.project, only.as_deref(), page.window()).await?;
        Ok(page.envelope(json(items)?, total))
    })
    .await
}

/// `GET /v1/courses/{id}/analytics?from&to[&group]`: the daily series, range totals, and the five
/// most popular modules (by lesson completions) over the range; with `group`, of its current
/// members only.
pub async fn analytics(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    range: Range,
    group: GroupFilter,
    headers: HeaderMap,
) -> Response {
    let key = format!("analytics:{course}:{}:{}", range.key(), group.key());
    cached(&app, &principal, &headers, key, async {
        let persons = app.persons(&principal.project).await?;
        let a = courses::analytics(
            &app.pool,
            &principal.project,
            &persons,
            &course,
            range.days(),
            group.get(),
        )
        .await?;
        Ok(serde_json::json!({
            "project": principal.project, "course_id": course, "group": group.get(), "title": a.title,
            "total_lessons": a.total_lessons, "instructor_id": a.instructor_id,
            "from": range.from, "to": range.to, "totals": a.totals,
            "popular_modules": a.popular_modules, "series": a.series,
        }))
    })
    .await
}

/// `GET /v1/courses/{id}/learners?limit&offset[&group]`: the course's learners by user id (the
/// group's current members only, with `group`).
pub async fn learners(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    page: Page,
    group: GroupFilter,
    headers: HeaderMap,
) -> Response {
    let key = format!("learners:{course}:{}:{}", page.key(), group.key());
    cached(&app, &principal, &headers, key, async {
        let persons = app.persons(&principal.project).await?;
        let (items, total) = courses::learners(
            &app.pool,
            &principal.project,
            &persons,
            &course,
            group.get(),
            page.window(),
        )
        .await?;
        let mut body = page.envelope(json(items)?, total);
        body["course_id"] = course.as_str().into();
        body["group"] = group.get().into();
        Ok(body)
    })
    .await
}

/// `PUT /v1/courses/{id}` with `{title, total_lessons, instructor_id, items}` (admin tokens): replaces the
/// catalog entry (`crate::query::courses::put`) and forgets the project's cached answers. The
/// caller's rights are checked after the body is read (see `super::access`).
pub async fn put(
    State(app): State<App>,
    principal: Principal,
    Path(course): Path<String>,
    JsonBody(update): JsonBody<CourseUpdate>,
) -> Result<Json<serde_json::Value>, ApiError> {
    path_id("id", &course)?;
    principal.require_catalog_writer()?;
    if update.total_lessons.is_some_and(|n| n <= 0) {
        return Err(ApiError::Unprocessable(
            "`total_lessons` must be a positive integer".into(),
        ));
    }
    if update.title.as_ref().is_some_and(|t| t.len() > 500)
        || update.instructor_id.as_ref().is_some_and(|i| i.len() > 256)
    {
        return Err(ApiError::Unprocessable(
            "`title` has at most 500 characters and `instructor_id` at most 256".into(),
        ));
    }
    let mut update = update;
    if let Some(items) = update.items.take() {
        if items.len() > 1_000 {
            return Err(ApiError::Unprocessable(format!(
                "`items` has {} ids; at most 1,000 are allowed",
                items.len()
            )));
        }
        let mut kept: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            path_id(&format!("items[{i}]"), &item)?;
            if !kept.contains(&item) {
                kept.push(item);
            }
        }
        update.items = Some(kept);
    }
    let entry = courses::put(&app.pool, &principal.project, &course, &update).await?;
    app.cache.invalidate(&principal.project);
    Ok(Json(json(entry)?))
}
