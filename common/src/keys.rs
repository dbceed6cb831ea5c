//! API keys: how they are generated, stored and looked up, shared by ingest (write keys) and the
//! api (read keys, and the `api keys` command that manages both).
//!
//! A key is shown once, when it is created, and only its SHA-256 (hex) is stored in the `api_keys`
//! table (migrations/0002_api_keys.sql): a leaked database does not leak usable keys. Keys carry
//! 190 random bits, so a plain, unsalted hash is enough; a lookup is by hash, so timing reveals
//! nothing about the key itself, and the hash found is compared again in constant time.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Random characters after the `wk_` / `rk_` prefix.
const KEY_RANDOM_CHARS: usize = 32;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may do: send events (ingest) or read metrics (api).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    Write,
    Read,
}

impl Scope {
    /// The name stored in `api_keys.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
        }
    }

    /// The prefix of keys of this scope, so a key pasted in the wrong place is recognisable.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Write => "wk_",
            Scope::Read => "rk_",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "write" => Some(Scope::Write),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a stored key (what `api keys revoke --id` takes).
pub type KeyId = Uuid;

/// A stored key's metadata; never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    /// The project (tenant) everything done with the key belongs to.
    pub project: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    /// Set once the key is revoked; a revoked key is never accepted again.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A new random key of `scope`: its prefix and 32 base62 characters from the OS's CSPRNG.
pub fn generate(scope: Scope) -> String {
    let mut key = String::with_capacity(3 + KEY_RANDOM_CHARS);
    key.push_str(scope.prefix());
    let mut buffer = [0u8; 64];
    while key.len() < 3 + KEY_RANDOM_CHARS {
        getrandom::fill(&mut buffer).expect("the OS random source works");
        // Rejection sampling: 248 = 4 × 62, so the characters stay uniform.
        for byte in buffer.iter().filter(|b| **b < 248) {
            if key.len() == 3 + KEY_RANDOM_CHARS {
                break;
            }
            key.push(BASE62[usize::from(*byte % 62)] as char);
        }
    }
    key
}

/// The stored form of a key: SHA-256, lowercase hex.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

/// Compares in time independent of where the inputs first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type KeyRow = (Uuid, String, String, DateTime<Utc>, Option<DateTime<Utc>>);
/// A row with the stored hash first.
type HashedKeyRow = (String, Uuid, String, String, DateTime<Utc>, Option<DateTime<Utc>>);

fn from_row((id, project, scope, created_at, revoked_at): KeyRow) -> Result<ApiKey, sqlx::Error> {
    let scope =
        Scope::parse(&scope).ok_or_else(|| sqlx::Error::Decode(format!("unknown key scope {scope:?}").into()))?;
    Ok(ApiKey {
        id,
        project,
        scope,
        created_at,
        revoked_at,
    })
}

/// Creates a key for `project` and returns it with the key itself, which is not stored anywhere:
/// the caller shows it once.
pub async fn create(pool: &PgPool, project: &str, scope: Scope) -> Result<(ApiKey, String), sqlx::Error> {
    let key = generate(scope);
    let row: KeyRow = sqlx::query_as(
        "insert into api_keys (id, project, scope, key_hash) values ($1, $2, $3, $4)
         returning id, project, scope, created_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(project)
    .bind(scope.as_str())
    .bind(hash(&key))
    .fetch_one(pool)
    .await?;
    Ok((from_row(row)?, key))
}

/// Revokes a key; returns false when no unrevoked key has that id. Services that cache lookups
/// stop accepting it within their cache's time to live.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("update api_keys set revoked_at = now() where id = $1 and revoked_at is null")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Every key of a project, revoked ones included, oldest first.
pub async fn list(pool: &PgPool, project: &str) -> Result<Vec<ApiKey>, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "select id, project, scope, created_at, revoked_at from api_keys where project = $1 order by created_at, id",
    )
    .bind(project)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// The unrevoked key whose hash matches `key`, if any. A database without the `api_keys` table
/// (migrations not yet applied) has no keys: that is `Ok(None)`, not an error.
pub async fn lookup(pool: &PgPool, key: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    let wanted = hash(key);
    let row: Result<Option<HashedKeyRow>, _> = sqlx::query_as(
        "select key_hash, id, project, scope, created_at, revoked_at from api_keys
             where key_hash = $1 and revoked_at is null",
    )
    .bind(&wanted)
    .fetch_optional(pool)
    .await;
    match row {
        Ok(Some((stored, id, project, scope, created_at, revoked_at)))
            if constant_time_eq(stored.as_bytes(), wanted.as_bytes()) =>
        {
            from_row((id, project, scope, created_at, revoked_at)).map(Some)
        }
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_scope_prefix_and_32_random_base62_characters() {
        let (a, b) = (generate(Scope::Write), generate(Scope::Read));
        assert!(a.starts_with("wk_") && b.starts_with("rk_"));
        assert_eq!(a.len(), 35);
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a[3..], generate(Scope::Write)[3..]);
    }

    #[test]
    fn keys_are_stored_as_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
