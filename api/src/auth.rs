//! Who is asking, and what they may read. A request carries `Authorization: Bearer <credential>`:
//! a JWT (HS256, `sub`, `role`, `project`, and for instructors the `courses` they teach), a read key
//! from PostgreSQL (`api keys create --scope read`), or the bootstrap read key of the config. Read
//! keys act as admin of their one project. Every handler gets a [`Principal`] and asks it before
//! reading; every query is scoped to the principal's project, so no response mixes projects.

use std::{sync::Arc, time::Duration};

use axum::{extract::FromRequestParts, http::header, http::request::Parts};
use common::keys;
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
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub project: String,
    pub role: Role,
    /// The user id for JWTs; empty for read keys.
    pub sub: String,
    /// Courses an instructor teaches.
    pub courses: Arc<Vec<String>>,
}

impl Principal {
    fn admin(project: String) -> Self {
        Self {
            project,
            role: Role::Admin,
            sub: String::new(),
            courses: Arc::new(Vec::new()),
        }
    }

    /// Project-wide metrics (active users, top events, funnels, retention, the catalog's writes).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "project-wide metrics need an admin token or a read key".into(),
            ))
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
pub type KeyCache = moka::future::Cache<String, Option<String>>;

pub fn key_cache() -> KeyCache {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(KEY_CACHE_TTL)
        .build()
}

impl FromRequestParts<App> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        authenticate(app, token).await
    }
}

/// Resolves a bearer credential (also used by the dashboard's `?key=` and SSE).
pub async fn authenticate(app: &App, token: &str) -> Result<Principal, ApiError> {
    let bootstrap = app.config.read_key.as_bytes();
    if !bootstrap.is_empty() && keys::constant_time_eq(token.as_bytes(), bootstrap) {
        return Ok(Principal::admin(app.config.project.clone()));
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
            Ok::<_, sqlx::Error>(key.filter(|k| k.scope == keys::Scope::Read).map(|k| k.project))
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot look up a read key: {e}")))?;
    project.map(Principal::admin).ok_or(ApiError::Unauthorized)
}

/// How JWTs are checked; None when no secret is configured (JWTs are then refused).
pub struct JwtKeys {
    key: Option<jsonwebtoken::DecodingKey>,
    validation: jsonwebtoken::Validation,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            key: (!secret.is_empty()).then(|| jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())),
            validation,
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
    if !common::stream::is_valid_project(&claims.project) || claims.sub.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(Principal {
        project: claims.project,
        role: claims.role,
        sub: claims.sub,
        courses: Arc::new(claims.courses),
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
