//! The router: every route of the read API with its handler, and the layers around them. The
//! handlers live beside it by what they serve (`metrics`, `funnel`, `courses`, `groups`, `users`,
//! `public`); they take their caller from `access` and their parameters from `extract`, answer
//! through `answer`, and leave the computing to `crate::query`, which knows nothing of HTTP.

mod access;
mod answer;
mod courses;
mod deadline;
pub mod extract;
pub mod funnel;
mod groups;
mod instructor;
mod metrics;
mod public;
mod users;

use axum::{
    routing::{get, post, put},
    Router,
};
use tower_http::compression::CompressionLayer;

use crate::{ApiError, App};

/// Every route: (method, path pattern). The OpenAPI test checks each is documented.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/metrics/active-users"),
    ("get", "/v1/metrics/events/top"),
    ("get", "/v1/metrics/pages/top"),
    ("post", "/v1/funnels"),
    ("get", "/v1/retention"),
    ("get", "/v1/courses"),
    ("put", "/v1/courses/{id}"),
    ("get", "/v1/courses/{id}/analytics"),
    ("get", "/v1/courses/{id}/learners"),
    ("get", "/v1/courses/{id}/engagement"),
    ("get", "/v1/courses/{id}/at-risk"),
    ("get", "/v1/courses/{id}/drop-off"),
    ("get", "/v1/courses/{id}/items/difficulty"),
    ("get", "/v1/courses/{id}/videos"),
    ("get", "/v1/courses/{id}/time-on-task"),
    ("get", "/v1/courses/{id}/grades"),
    ("get", "/v1/groups/{id}"),
    ("get", "/v1/identities/{id}"),
    ("get", "/v1/users/{id}/stats"),
    ("get", "/v1/users/{id}/progress"),
    ("get", "/v1/users/{id}/progress/stream"),
    ("get", "/v1/users/{id}/learning-paths/{course_id}"),
    ("get", "/v1/users/{id}/time-on-task"),
];

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(public::dashboard))
        .route("/v1/openapi.json", get(public::openapi))
        .route("/v1/metrics/active-users", get(metrics::active_users))
        .route("/v1/metrics/events/top", get(metrics::top_events))
        .route("/v1/metrics/pages/top", get(metrics::top_pages))
        .route("/v1/funnels", post(funnel::funnel))
        .route("/v1/retention", get(metrics::retention))
        .route("/v1/courses", get(courses::list))
        .route("/v1/courses/{id}", put(courses::put))
        .route("/v1/courses/{id}/analytics", get(courses::analytics))
        .route("/v1/courses/{id}/learners", get(courses::learners))
        .route("/v1/courses/{id}/engagement", get(instructor::engagement))
        .route("/v1/courses/{id}/at-risk", get(instructor::at_risk))
        .route("/v1/courses/{id}/drop-off", get(instructor::drop_off))
        .route("/v1/courses/{id}/items/difficulty", get(instructor::difficulty))
        .route("/v1/courses/{id}/videos", get(instructor::videos))
        .route("/v1/courses/{id}/time-on-task", get(instructor::course_time))
        .route("/v1/courses/{id}/grades", get(instructor::grades))
        .route("/v1/groups/{id}", get(groups::group))
        .route("/v1/identities/{id}", get(groups::identity))
        .route("/v1/users/{id}/stats", get(users::stats))
        .route("/v1/users/{id}/progress", get(users::progress))
        .route("/v1/users/{id}/progress/stream", get(users::progress_stream))
        .route("/v1/users/{id}/learning-paths/{course_id}", get(users::learning_path))
        .route("/v1/users/{id}/time-on-task", get(instructor::learner_time))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), deadline::deadline))
        .route_layer(axum::middleware::from_fn(crate::instruments::record))
        .fallback(|| async { ApiError::NotFound })
        .layer(CompressionLayer::new())
        .with_state(app)
}
