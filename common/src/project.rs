//! The project (tenant) id, validated once where it enters a service (configuration, a write or
//! read key's row, a JWT, a command line) and typed from then on, so that every NATS subject,
//! database key and document id built from it is safe: 1 to 64 of `[A-Za-z0-9_-]`, hence no `.`,
//! `*` or `>` for subjects and no `:` for the ids of `documents` (docs/contract.md §3).

use std::{fmt, ops::Deref, str::FromStr, sync::Arc};

/// A valid project id; cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectId(Arc<str>);

/// Why a string is not a project id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("project {0:?} must be 1 to 64 letters, digits, `_` or `-`")]
pub struct InvalidProject(pub String);

impl ProjectId {
    pub fn parse(id: &str) -> Result<Self, InvalidProject> {
        if is_valid(id) {
            Ok(Self(id.into()))
        } else {
            Err(InvalidProject(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `id` is a valid project id (see [`ProjectId`]).
pub fn is_valid(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl FromStr for ProjectId {
    type Err = InvalidProject;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::parse(id)
    }
}

impl TryFrom<String> for ProjectId {
    type Error = InvalidProject;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::parse(&id)
    }
}

impl<'de> serde::Deserialize<'de> for ProjectId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&id).map_err(serde::de::Error::custom)
    }
}

impl Deref for ProjectId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ProjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for ProjectId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<ProjectId> for String {
    fn eq(&self, other: &ProjectId) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Bound as PostgreSQL `text`, like the `project` columns.
impl sqlx::Type<sqlx::Postgres> for ProjectId {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <str as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Postgres> for ProjectId {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_safe_subject_tokens_and_key_parts() {
        assert_eq!(ProjectId::parse("acme-learning_2").unwrap().as_str(), "acme-learning_2");
        for bad in ["", "a.b", "a b", "a:b", "a*", ">", "é", &"x".repeat(65)] {
            assert_eq!(ProjectId::parse(bad), Err(InvalidProject(bad.to_owned())), "{bad}");
        }
        let id: ProjectId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<ProjectId>("\"a.b\"").is_err());
    }
}
