//! `GET /v1/groups/{id}`: a group's traits and member count (admins and read keys), so a
//! dashboard can name the class it filters active users by (`?group=`); and
//! `GET /v1/identities/{id}`: the person an id belongs to, with the links that made it.

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};

use crate::{
    query::{groups, identities},
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

/// The person of an id: its ids and every link touching them, applied or refused; 404 for an id
/// no event carried.
pub async fn identity(
    State(app): State<App>,
    Admin(principal): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    path_id("id", &id)?;
    let key = format!("identity:{id}");
    let project = &principal.project;
    Ok(cached(&app, &principal, &headers, key, async {
        let person = identities::person(&app.pool, project, &id)
            .await?
            .ok_or(ApiError::NotFound)?;
        crate::routes::answer::json(person)
    })
    .await)
}
