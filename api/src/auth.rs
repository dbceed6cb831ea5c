//! Who is asking, and what they may read. A request carries `Authorization: Bearer <credential>`:
//! a JWT (HS256, `sub`, `role`, `project`, and for instructors the `courses` they teach), a read key
//! from PostgreSQL (`api keys create --scope read`), or the bootstrap read key of the config. Read
//! keys act as admin of their one project. Every handler gets a [`Principal`] and asks it before
//! reading; every query is scoped to the principal's project, so no response mixes projects.

use std::{sync::Arc, time::Duration};

use axum::{extract::FromRequestParts, http::header, http::request::Parts};
use common::{keys, project::ProjectId};
use serde::{Deserialize, Serialize};

use crate::{ApiError, App};

/// How long a read key lookup is remembered (a revoked key stops working within it).
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Instructor,
    Admin,
}

/// The claims of the JWTs the api accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (a student's own `/v1/users/{sub}/…`).
    pub sub: String,
    pub role: Role,
    /// The project (tenant) the token reads.
    pub project: String,
    /// For instructors: the course ids they teach.
    #[serde(default)]
    pub courses: Vec<String>,
    /// Expiry (seconds since the epoch); required.
    pub exp: u64,
    /// Not before (seconds since the epoch), checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since the epoch): the lifetime `exp - iat` is bounded by
    /// `API_JWT_MAX_LIFETIME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub project: ProjectId,
    pub role: Role,
    /// The user id for JWTs; empty for read keys.
    pub sub: String,
    /// Courses an instructor teaches.
    pub courses: Arc<Vec<String>>,
    /// May write the course catalog: admin JWTs, not read keys (which only read).
    pub catalog: bool,
}

impl Principal {
    /// A read key: every metric of its project, and nothing to write.
    fn read_key(project: ProjectId) -> Self {
        Self {
            project,
            role: Role::Admin,
            sub: String::new(),
            courses: Arc::new(Vec::new()),
            catalog: false,
        }
    }

    /// Catalog writes (`PUT /v1/courses/{id}`) need an admin JWT.
    pub fn require_catalog_writer(&self) -> Result<(), ApiError> {
        match (self.role, self.catalog) {
            (Role::Admin, true) => Ok(()),
            (Role::Admin, false) => Err(ApiError::Forbidden(
                "read keys only read; catalog writes need an admin token".into(),
            )),
            _ => Err(ApiError::Forbidden("catalog writes need an admin token".into())),
        }
    }

    /// Project-wide metrics (active users, top events, funnels, retention).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "project-wide metrics need an admin token or a read key".into(),
            ))
        }
    }

    /// The course list: admins, and instructors (who see only the courses they teach).
    pub fn require_staff(&self) -> Result<(), ApiError> {
        if self.role == Role::Student {
            Err(ApiError::Forbidden(
                "students read only their own user endpoints".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// A course's analytics and learners: admins, and instructors who teach it.
    pub fn require_course(&self, course: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Instructor if self.courses.iter().any(|c| c == course) => Ok(()),
            Role::Instructor => Err(ApiError::Forbidden(format!("you do not teach course {course:?}"))),
            Role::Student => Err(ApiError::Forbidden(
                "students read only their own user endpoints".into(),
            )),
        }
    }

    /// A learner's own endpoints: admins, and that learner.
    pub fn require_user(&self, user: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Student if self.sub == user => Ok(()),
            Role::Student => Err(ApiError::Forbidden(
                "students read only their own user endpoints".into(),
            )),
            Role::Instructor => Err(ApiError::Forbidden(
                "instructors read their courses' endpoints, not learners' own".into(),
            )),
        }
    }

    /// A learner's path in one course: admins, that learner, and the course's instructors.
    pub fn require_user_in_course(&self, user: &str, course: &str) -> Result<(), ApiError> {
        if self.role == Role::Instructor {
            self.require_course(course)
        } else {
            self.require_user(user)
        }
    }
}

/// The read keys looked up recently: key hash → project (None: not a valid read key).
pub type KeyCache = moka::future::Cache<String, Option<ProjectId>>;

pub fn key_cache() -> KeyCache {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(KEY_CACHE_TTL)
        .build()
}

impl FromRequestParts<App> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        authenticate(app, token).await
    }
}

/// The credential of an `Authorization: Bearer <credential>` header (the scheme in either case
/// SDKs and proxies write it), if the request has one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Resolves a bearer credential (also used by the dashboard's `?key=` and SSE).
pub async fn authenticate(app: &App, token: &str) -> Result<Principal, ApiError> {
    let bootstrap = app.config.read_key.as_bytes();
    if !bootstrap.is_empty() && keys::constant_time_eq(token.as_bytes(), bootstrap) {
        return Ok(Principal::read_key(app.config.project.clone()));
    }
    if token.matches('.').count() == 2 {
        return decode_jwt(&app.jwt, token);
    }
    let hash = keys::hash(token);
    let pool = app.pool.clone();
    let owned = token.to_owned();
    let project = app
        .keys
        .try_get_with(hash, async move {
            let key = keys::lookup(&pool, &owned).await?;
            let key = key.filter(|k| k.scope == keys::Scope::Read);
            // Stored keys were created for valid projects (`api keys create` checks).
            Ok::<_, sqlx::Error>(key.and_then(|k| ProjectId::parse(&k.project).ok()))
        })
        .await
        .map_err(|e| {
            // Unreachable PostgreSQL is a 503 to retry, as ingest answers for write keys.
            ApiError::unavailable(&e)
                .unwrap_or_else(|| ApiError::Internal(anyhow::anyhow!("cannot look up a read key: {e}")))
        })?;
    project.map(Principal::read_key).ok_or(ApiError::Unauthorized)
}

/// How JWTs are checked; None when no secret is configured (JWTs are then refused).
pub struct JwtKeys {
    key: Option<jsonwebtoken::DecodingKey>,
    validation: jsonwebtoken::Validation,
    max_lifetime: Duration,
}

impl JwtKeys {
    pub fn new(secret: &str, max_lifetime: Duration) -> Self {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            key: (!secret.is_empty()).then(|| jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())),
            validation,
            max_lifetime,
        }
    }
}

fn decode_jwt(keys: &JwtKeys, token: &str) -> Result<Principal, ApiError> {
    let key = keys.key.as_ref().ok_or(ApiError::Unauthorized)?;
    let data = jsonwebtoken::decode::<Claims>(token, key, &keys.validation).map_err(|error| {
        tracing::debug!(%error, "JWT refused");
        ApiError::Unauthorized
    })?;
    let claims = data.claims;
    let issued = claims
        .iat
        .unwrap_or_else(|| u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
    if claims.exp.saturating_sub(issued) > keys.max_lifetime.as_secs() {
        tracing::debug!(
            exp = claims.exp,
            issued,
            "JWT refused: its lifetime is over the maximum"
        );
        return Err(ApiError::Unauthorized);
    }
    // The subject is a user id of the event model (at most 256 bytes, no control characters);
    // anything else cannot name a learner and must not reach a query.
    let sub_ok = !claims.sub.is_empty() && claims.sub.len() <= 256 && !claims.sub.chars().any(char::is_control);
    let (Ok(project), true) = (ProjectId::parse(&claims.project), sub_ok) else {
        return Err(ApiError::Unauthorized);
    };
    Ok(Principal {
        project,
        role: claims.role,
        sub: claims.sub,
        courses: Arc::new(claims.courses),
        catalog: claims.role == Role::Admin,
    })
}

/// Signs `claims` as an HS256 JWT with `secret` (for tests, the demo, and operators issuing
/// tokens by hand; the platform's own login service normally issues them).
pub fn sign(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
