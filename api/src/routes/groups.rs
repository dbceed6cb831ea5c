//! `GET /v1/groups/{id}`: a group's traits and member count (admins and read keys), so a
//! dashboard can name the class it filters active users by (`?group=`).

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};

use crate::{
    query::groups,
    routes::{access::Admin, answer::cached, extract::path_id},
    ApiError, App,
};

/// The group, or 404 when no `group` call has named it.
pub async fn group(
    State(app): State<App>,
    Admin(principal): Admin,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    path_id("id", &group)?;
    let key = format!("group:{group}");
    let project = &principal.project;
    Ok(cached(&app, &principal, &headers, key, async {
        groups::group(&app.pool, project, &group)
            .await?
            .ok_or(ApiError::NotFound)
    })
    .await)
}
