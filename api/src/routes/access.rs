//! Who may read what, as extractors: each authenticates the caller ([`Principal`]), reads and
//! checks the ids of the path it names, and asks the principal whether it may read them, so a
//! handler that takes one has an authorised caller and valid ids. The rules themselves are the
//! principal's (`crate::auth`); this module only puts them in the order every route answers in:
//! 401 (no valid credential), then a malformed path id (422), then 403, and only after that the
//! query's parameters (`super::extract`).
//!
//! Routes with a JSON body (`POST /v1/funnels`, `PUT /v1/courses/{id}`) check in their handler
//! instead: an extractor would run before the body is read, and a malformed body is refused
//! before the caller's rights there.

use axum::{
    extract::{FromRequestParts, Path},
    http::request::Parts,
    response::{IntoResponse as _, Response},
};
use serde::de::DeserializeOwned;

use crate::{auth::Principal, routes::extract::path_id, ApiError, App};

/// Project-wide metrics: admins and read keys.
pub struct Admin(pub Principal);

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, app).await?;
        principal.require_admin()?;
        Ok(Self(principal))
    }
}

/// The course list: admins, and instructors (who see the courses they teach).
pub struct Staff(pub Principal);

impl FromRequestParts<App> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, app).await?;
        principal.require_staff()?;
        Ok(Self(principal))
    }
}

/// `/v1/courses/{id}/…`: admins, and instructors who teach the course.
pub struct CourseReader {
    pub principal: Principal,
    pub course: String,
}

impl FromRequestParts<App> for CourseReader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let (principal, course) = caller_and_path::<String>(parts, app).await?;
        path_id("id", &course)
            .and_then(|()| principal.require_course(&course))
            .map_err(|e| e.response())?;
        Ok(Self { principal, course })
    }
}

/// `/v1/users/{id}/…`: admins, and that learner.
pub struct LearnerReader {
    pub principal: Principal,
    pub user: String,
}

impl FromRequestParts<App> for LearnerReader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let (principal, user) = caller_and_path::<String>(parts, app).await?;
        path_id("id", &user)
            .and_then(|()| principal.require_user(&user))
            .map_err(|e| e.response())?;
        Ok(Self { principal, user })
    }
}

/// `/v1/users/{id}/learning-paths/{course_id}`: admins, that learner, and the course's
/// instructors.
pub struct PathReader {
    pub principal: Principal,
    pub user: String,
    pub course: String,
}

impl FromRequestParts<App> for PathReader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let (principal, (user, course)) = caller_and_path::<(String, String)>(parts, app).await?;
        path_id("id", &user)
            .and_then(|()| path_id("course_id", &course))
            .and_then(|()| principal.require_user_in_course(&user, &course))
            .map_err(|e| e.response())?;
        Ok(Self {
            principal,
            user,
            course,
        })
    }
}

/// The authenticated caller and the path's parameters, or the first refusal: 401, then axum's
/// own for a path it cannot decode.
async fn caller_and_path<T: DeserializeOwned + Send>(parts: &mut Parts, app: &App) -> Result<(Principal, T), Response> {
    let principal = Principal::from_request_parts(parts, app)
        .await
        .map_err(|e| e.response())?;
    match Path::<T>::from_request_parts(parts, app).await {
        Ok(Path(params)) => Ok((principal, params)),
        Err(rejection) => Err(rejection.into_response()),
    }
}
