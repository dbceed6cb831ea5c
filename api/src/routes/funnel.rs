//! `POST /v1/funnels`: the request body, validated into a range, a window and steps
//! (`crate::query::funnel` defines them and computes the funnel), and its cached answer.

use axum::{extract::State, http::HeaderMap, response::Response};
use serde::Deserialize;

use crate::{
    auth::Principal,
    query::funnel::{self, Step, StepRequest},
    routes::{
        answer::{cached, json},
        extract::{GroupFilter, JsonBody, Range, RangeQuery},
    },
    ApiError, App,
};

#[derive(Debug, Deserialize)]
pub struct FunnelRequest {
    steps: Vec<StepRequest>,
    from: Option<String>,
    to: Option<String>,
    /// The conversion window: seconds, or a duration such as `30m`, `2h`, `7d`.
    window: Option<serde_json::Value>,
    /// Only the current members of this group enter (Segment `group` calls).
    group: Option<String>,
}

impl FunnelRequest {
    /// The range, the window in seconds, the steps and the group, each validated (422 naming what
    /// is wrong).
    pub fn validate(self, max_range_days: i64) -> Result<(Range, i64, Vec<Step>, GroupFilter), ApiError> {
        let range = Range::parse(self.from.as_deref(), self.to.as_deref(), max_range_days)?;
        let group = GroupFilter::parse(&RangeQuery {
            group: self.group,
            ..RangeQuery::default()
        })?;
        if !(2..=funnel::MAX_STEPS).contains(&self.steps.len()) {
            return Err(ApiError::Unprocessable(format!(
                "`steps` must have 2 to {} steps, not {}",
                funnel::MAX_STEPS,
                self.steps.len()
            )));
        }
        let window = funnel::parse_window(self.window.as_ref())?;
        let steps = self
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| Step::parse(i, s))
            .collect::<Result<_, _>>()?;
        Ok((range, window, steps, group))
    }
}

/// `POST /v1/funnels` with `{steps, from, to, window, group}` (admins and read keys): users per step,
/// conversion from the previous step and from the first, and the median seconds between
/// consecutive steps. The caller's rights are checked after the body is read (see
/// `super::access`).
pub async fn funnel(
    State(app): State<App>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(request): JsonBody<FunnelRequest>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let (range, window, steps, group) = request.validate(app.config.max_range_days)?;
    let key = format!("funnel:{}:{window}:{}:{}", range.key(), group.key(), json(&steps)?);
    let (project, max_events) = (&principal.project, app.config.funnel_max_events);
    Ok(cached(&app, &principal, &headers, key, async {
        let persons = app.persons(project).await?;
        let report = funnel::run(
            &app.pool,
            (project, &persons),
            &steps,
            range.days(),
            window,
            group.get(),
            max_events,
        )
        .await?
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "the range holds more than {max_events} events of these steps (API_FUNNEL_MAX_EVENTS); narrow it"
            ))
        })?;
        Ok(serde_json::json!({
            "project": project, "group": group.get(), "from": range.from, "to": range.to, "window_seconds": window,
            "steps": report.steps, "overall_conversion": report.overall_conversion,
        }))
    })
    .await)
}
