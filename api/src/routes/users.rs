//! A learner's own routes: stats, progress (overall and per course), the live progress stream,
//! and their learning path in a course. `crate::query::users` computes them; the stream re-reads
//! the progress whenever the workers' change notifications name the learner.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse as _, Response,
    },
};
use chrono::Utc;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    auth::authenticate,
    query::users,
    routes::{
        access::{LearnerReader, PathReader},
        answer::{cached, json},
        extract::path_id,
    },
    ApiError, App,
};

/// `GET /v1/users/{id}/stats`: 404 for a learner never seen.
pub async fn stats(
    State(app): State<App>,
    LearnerReader { principal, user }: LearnerReader,
    headers: HeaderMap,
) -> Response {
    // The current streak depends on today's date: part of the key.
    let today = Utc::now().date_naive();
    let key = format!("stats:{user}:{today}");
    cached(&app, &principal, &headers, key, async {
        users::stats(&app.pool, &principal.project, &user, today)
            .await?
            .ok_or(ApiError::NotFound)
    })
    .await
}

/// A learner's progress as the progress route and stream send it.
async fn progress_value(pool: &sqlx::PgPool, project: &str, user: &str) -> Result<serde_json::Value, ApiError> {
    json(users::progress(pool, project, user).await?)
}

/// `GET /v1/users/{id}/progress`.
pub async fn progress(
    State(app): State<App>,
    LearnerReader { principal, user }: LearnerReader,
    headers: HeaderMap,
) -> Response {
    let key = format!("progress:{user}");
    cached(
        &app,
        &principal,
        &headers,
        key,
        progress_value(&app.pool, &principal.project, &user),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// The credential, for clients that cannot set headers (the browser's `EventSource`).
    key: Option<String>,
}

/// `GET /v1/users/{id}/progress/stream`: server-sent events; a `progress` event with the
/// learner's progress at once, then again whenever a workers' commit changes it.
pub async fn progress_stream(
    State(app): State<App>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let header_token = crate::auth::bearer_token(&headers).map(str::to_owned);
    let token = match (header_token, query.key) {
        (Some(token), _) => token,
        // URLs end up in logs and browser history: only a JWT, whose lifetime is bounded, may
        // travel in one, never a read key.
        (None, Some(key)) if key.matches('.').count() == 2 => key,
        (None, Some(_)) => {
            return Err(ApiError::Forbidden(
                "`?key=` takes a JWT only; send read keys as `Authorization: Bearer`".into(),
            ))
        }
        (None, None) => return Err(ApiError::Unauthorized),
    };
    let principal = authenticate(&app, &token).await?;
    path_id("id", &user)?;
    principal.require_user(&user)?;
    // The credential the stream counts against: a JWT's subject, or the read key itself.
    let holder = if principal.sub.is_empty() {
        common::keys::hash(&token)
    } else {
        format!("{}/{}", principal.project, principal.sub)
    };
    let slot = app.streams.open(holder)?;
    let project = principal.project;
    let changes = app.cache.subscribe();
    let first = progress_value(&app.pool, &project, &user).await?;
    let shutdown = app.shutdown.clone();
    let state = (changes, app, project, user, first.clone());
    let updates = futures::stream::unfold(state, |(mut changes, app, project, user, last)| async move {
        loop {
            match changes.recv().await {
                Ok(change) if change.project != project || !change.users.contains(&user) => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
            match progress_value(&app.pool, &project, &user).await {
                Ok(value) if value == last => continue,
                Ok(value) => {
                    let event = Event::default().event("progress").json_data(&value).ok()?;
                    return Some((event, (changes, app, project, user, value)));
                }
                Err(error) => {
                    tracing::warn!(?error, "cannot read progress for a live stream");
                    continue;
                }
            }
        }
    });
    let first = Event::default()
        .event("progress")
        .json_data(&first)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let stream = futures::stream::once(async move { first })
        .chain(updates)
        .map(move |event| {
            // Held as long as the stream is: dropped with it when the client goes away.
            let _held = &slot;
            Ok::<_, Infallible>(event)
        })
        .take_until(async move { shutdown.cancelled().await });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /v1/users/{id}/learning-paths/{course_id}`: the learner's path in a course, in module then
/// lesson order, read from `lesson_progress` without the flush delay; 404 without lessons.
pub async fn learning_path(
    State(app): State<App>,
    PathReader {
        principal,
        user,
        course,
    }: PathReader,
    headers: HeaderMap,
) -> Response {
    let key = format!("path:{}", serde_json::json!([user, course]));
    cached(&app, &principal, &headers, key, async {
        users::learning_path(&app.pool, &principal.project, &user, &course)
            .await?
            .ok_or(ApiError::NotFound)
    })
    .await
}
