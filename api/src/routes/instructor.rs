//! The instructor metrics of a course (docs/contract.md §6 "Instructor metrics", §7): engagement,
//! at-risk learners, drop-off, item difficulty, video engagement, time on task and grades, and a
//! learner's own time on task. `crate::query::instructor` computes them.

use axum::{
    extract::{FromRequestParts, State},
    http::{request::Parts, HeaderMap},
    response::Response,
};
use chrono::Utc;

use crate::{
    query::instructor::{self, RiskRules, Scope},
    routes::{
        access::{CourseReader, LearnerReader},
        answer::{cached, json},
        extract::{bounded, number, path_id, Page, Range, RangeQuery},
    },
    ApiError, App,
};

/// The whole query string, for the parameters only these routes take.
pub struct Params(RangeQuery);

impl FromRequestParts<App> for Params {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(Self(RangeQuery::of(parts, app).await?))
    }
}

const RULES: [&str; 4] = ["inactive", "behind", "failing", "grade"];

impl Params {
    /// `?rules=` (default all) and their thresholds.
    fn rules(&self) -> Result<RiskRules, ApiError> {
        let q = &self.0;
        let chosen: Vec<&str> = match q.rules.as_deref() {
            None => RULES.to_vec(),
            Some(list) => {
                let chosen: Vec<&str> = list.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
                if let Some(unknown) = chosen.iter().find(|r| !RULES.contains(r)) {
                    return Err(ApiError::Unprocessable(format!(
                        "`rules` has {unknown:?}; the rules are {}",
                        RULES.join(", ")
                    )));
                }
                if chosen.is_empty() {
                    return Err(ApiError::Unprocessable("`rules` names no rule".into()));
                }
                chosen
            }
        };
        let on = |rule: &str| chosen.contains(&rule);
        let inactive = bounded("inactive_days", q.inactive_days.as_deref(), 14, 1, 3650)?;
        let behind = number("behind_points", q.behind_points.as_deref(), 25.0, 0.0, 100.0)?;
        let failed = bounded("failed_in_row", q.failed_in_row.as_deref(), 3, 1, 1000)?;
        let mark = self.pass_mark()?;
        Ok(RiskRules {
            inactive_days: on("inactive").then_some(inactive),
            behind_points: on("behind").then_some(behind),
            failed_in_row: on("failing").then_some(failed),
            pass_mark: on("grade").then_some(mark),
        })
    }

    fn pass_mark(&self) -> Result<f64, ApiError> {
        number("pass_mark", self.0.pass_mark.as_deref(), 0.5, 0.0, 1.0)
    }

    fn buckets(&self) -> Result<usize, ApiError> {
        Ok(bounded("buckets", self.0.buckets.as_deref(), 10, 1, 100)? as usize)
    }

    /// `?course_id=` of a learner's time on task: one course, or (absent) all their events.
    fn course(&self) -> Result<&str, ApiError> {
        match self.0.course_id.as_deref().filter(|c| !c.is_empty()) {
            Some(course) => path_id("course_id", course).map(|()| course),
            None => Ok(""),
        }
    }
}

/// `GET /v1/courses/{id}/engagement`: current enrollees, learners active in 7 and 30 days.
pub async fn engagement(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    headers: HeaderMap,
) -> Response {
    let today = Utc::now().date_naive();
    let key = format!("engagement:{course}:{today}");
    cached(&app, &principal, &headers, key, async {
        let e = instructor::engagement(&app.pool, &principal.project, &course, today).await?;
        let mut body = json(e)?;
        body["course_id"] = course.as_str().into();
        Ok(body)
    })
    .await
}

/// `GET /v1/courses/{id}/at-risk[?rules&inactive_days&behind_points&failed_in_row&pass_mark]`.
pub async fn at_risk(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    page: Page,
    params: Params,
    headers: HeaderMap,
) -> Response {
    let rules = match params.rules() {
        Ok(rules) => rules,
        Err(e) => return e.response(),
    };
    let today = Utc::now().date_naive();
    let key = format!("at-risk:{course}:{today}:{rules:?}:{}", page.key());
    cached(&app, &principal, &headers, key, async {
        let (flagged, median) = instructor::at_risk(&app.pool, &principal.project, &course, rules, today).await?;
        let (limit, offset) = page.window();
        let total = flagged.len() as i64;
        let items: Vec<_> = flagged.into_iter().skip(offset as usize).take(limit as usize).collect();
        let mut body = page.envelope(json(items)?, total);
        body["course_id"] = course.as_str().into();
        body["median_progress_pct"] = json(median)?;
        body["as_of"] = json(today)?;
        Ok(body)
    })
    .await
}

/// `GET /v1/courses/{id}/drop-off`: reach along the catalog's items.
pub async fn drop_off(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    headers: HeaderMap,
) -> Response {
    let key = format!("drop-off:{course}");
    cached(&app, &principal, &headers, key, async {
        let mut body = json(instructor::drop_off(&app.pool, &principal.project, &course).await?)?;
        body["course_id"] = course.as_str().into();
        Ok(body)
    })
    .await
}

/// `GET /v1/courses/{id}/items/difficulty`.
pub async fn difficulty(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    headers: HeaderMap,
) -> Response {
    let key = format!("difficulty:{course}");
    cached(&app, &principal, &headers, key, async {
        let items = instructor::difficulty(&app.pool, &principal.project, &course).await?;
        Ok(serde_json::json!({"course_id": course, "items": json(items)?}))
    })
    .await
}

/// `GET /v1/courses/{id}/videos`.
pub async fn videos(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    headers: HeaderMap,
) -> Response {
    let key = format!("videos:{course}");
    cached(&app, &principal, &headers, key, async {
        let items = instructor::videos(&app.pool, &principal.project, &course).await?;
        Ok(serde_json::json!({"course_id": course, "segments_per_video": instructor::VIDEO_SEGMENTS, "items": json(items)?}))
    })
    .await
}

/// `GET /v1/courses/{id}/time-on-task?from&to`.
pub async fn course_time(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    range: Range,
    headers: HeaderMap,
) -> Response {
    let key = format!("time:{course}:{}", range.key());
    cached(&app, &principal, &headers, key, async {
        let t = instructor::time_on_task(&app.pool, &principal.project, Scope::Course(&course), range.days()).await?;
        let mut body = json(t)?;
        body["course_id"] = course.as_str().into();
        body["from"] = json(range.from)?;
        body["to"] = json(range.to)?;
        Ok(body)
    })
    .await
}

/// `GET /v1/courses/{id}/grades[?buckets&pass_mark]`.
pub async fn grades(
    State(app): State<App>,
    CourseReader { principal, course }: CourseReader,
    params: Params,
    headers: HeaderMap,
) -> Response {
    let (buckets, mark) = match params.buckets().and_then(|b| Ok((b, params.pass_mark()?))) {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    let key = format!("grades:{course}:{buckets}:{mark}");
    cached(&app, &principal, &headers, key, async {
        let mut body = json(instructor::grades(&app.pool, &principal.project, &course, buckets, mark).await?)?;
        body["course_id"] = course.as_str().into();
        body["pass_mark"] = mark.into();
        Ok(body)
    })
    .await
}

/// `GET /v1/users/{id}/time-on-task?from&to[&course_id]`.
pub async fn learner_time(
    State(app): State<App>,
    LearnerReader { principal, user }: LearnerReader,
    range: Range,
    params: Params,
    headers: HeaderMap,
) -> Response {
    let course = match params.course() {
        Ok(course) => course.to_owned(),
        Err(e) => return e.response(),
    };
    let key = format!("learner-time:{user}:{course}:{}", range.key());
    cached(&app, &principal, &headers, key, async {
        let scope = Scope::Learner {
            user: &user,
            course: &course,
        };
        let t = instructor::time_on_task(&app.pool, &principal.project, scope, range.days()).await?;
        let mut body = json(t)?;
        body["user_id"] = user.as_str().into();
        body["course_id"] = (!course.is_empty()).then_some(course.as_str()).into();
        body["from"] = json(range.from)?;
        body["to"] = json(range.to)?;
        Ok(body)
    })
    .await
}
