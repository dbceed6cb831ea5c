//! Per-project browser origin allow-lists (`project_origins`, migrations/0010): which web pages
//! may send a project's events from a browser (docs/contract.md §3, CORS). An empty list allows
//! every origin. Ingest reads the list with a write key's lookup; `api origins` writes it.

use sqlx::PgPool;

/// `origin` in the form browsers send in `Origin`: `scheme://host[:port]`, lowercase, without a
/// path or a trailing `/`. Only `http` and `https` pages can be allowed.
pub fn normalise(origin: &str) -> Result<String, String> {
    let lower = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err(format!("origin {origin:?} must look like https://host[:port]"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("origin {origin:?} must be http or https"));
    }
    let valid = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(format!(
            "origin {origin:?} must be a scheme and a host (and port) only, with no path, query or user"
        ));
    }
    Ok(lower)
}

/// Whether a request's `Origin` header is allowed by `allowed` (empty: every origin is).
pub fn is_allowed(allowed: &[String], origin: &[u8]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
}

/// The origins allowed to send `project`'s events, sorted; empty when any origin may.
pub async fn allowed(pool: &PgPool, project: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select origin from project_origins where project = $1 order by origin")
        .bind(project)
        .fetch_all(pool)
        .await
}

/// Replaces `project`'s allow-list with `origins` (already normalised); none allows every origin.
pub async fn set(pool: &PgPool, project: &str, origins: &[String]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from project_origins where project = $1")
        .bind(project)
        .execute(&mut *tx)
        .await?;
    sqlx::query("insert into project_origins (project, origin) select $1, unnest($2::text[]) on conflict do nothing")
        .bind(project)
        .bind(origins)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_to_what_browsers_send() {
        assert_eq!(
            normalise(" HTTPS://Learn.Example.com/ ").unwrap(),
            "https://learn.example.com"
        );
        assert_eq!(normalise("http://localhost:5173").unwrap(), "http://localhost:5173");
        assert_eq!(normalise("http://[::1]:8000").unwrap(), "http://[::1]:8000");
        for bad in [
            "learn.example.com",
            "ftp://x",
            "https://",
            "https://a/path",
            "https://u@a",
            "https://a?q",
        ] {
            assert!(normalise(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn an_empty_list_allows_every_origin_and_a_list_only_its_own() {
        assert!(is_allowed(&[], b"https://anything.example"));
        let list = ["https://learn.example.com".to_owned()];
        assert!(is_allowed(&list, b"https://learn.example.com"));
        assert!(is_allowed(&list, b"HTTPS://LEARN.example.com"));
        assert!(!is_allowed(&list, b"https://learn.example.com.evil.test"));
        assert!(!is_allowed(&list, b"null"));
    }
}
