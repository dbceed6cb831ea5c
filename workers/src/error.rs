//! The two ways a step can fail, decided once for every error the stores return:
//!
//! - [`WorkerError::Poison`]: the data itself is refused (a value PostgreSQL cannot hold, a
//!   document MongoDB rejects). Retrying the same events can never succeed, so the pipeline
//!   isolates the events that cause it (see `worker.rs`) and dead-letters them alone.
//! - [`WorkerError::Transient`]: the store is unreachable, overloaded, or a transaction lost a
//!   race (deadlock, serialization). The same events will succeed later, so the batch is retried
//!   in place, with backoff, without counting a failed delivery.

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The events are refused by a store; the reason is for the dead-letter record.
    #[error("refused by the store: {0}")]
    Poison(String),
    /// Retry later.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl WorkerError {
    /// A PostgreSQL error, with what was being done.
    pub fn postgres(error: sqlx::Error, doing: &str) -> Self {
        if let sqlx::Error::Database(db) = &error {
            if let Some(code) = db.code() {
                if is_data_error(&code) {
                    return WorkerError::Poison(format!(
                        "PostgreSQL refused it while {doing}: {} ({code})",
                        db.message()
                    ));
                }
            }
        }
        WorkerError::Transient(anyhow::Error::new(error).context(format!("PostgreSQL failed while {doing}")))
    }
}

/// SQLSTATE classes that depend on the data, not on the server's state: 22 data exception
/// (invalid byte sequence, date out of range, value too long), 23 integrity constraint violation,
/// 54 program limit exceeded (index row too large). Everything else (08 connection, 40
/// serialization/deadlock, 53 resources, 57 operator intervention, XX internal) is transient.
fn is_data_error(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "23" | "54"))
}

/// MongoDB write errors that depend on the document rather than on the server (bad values,
/// too large, invalid field names): the codes MongoDB and FerretDB return for documents they
/// will never accept (docs/ferretdb.md lists FerretDB's).
pub fn is_document_rejection(code: i32) -> bool {
    matches!(
        code,
        2 // BadValue
            | 14 // TypeMismatch
            | 17 // CannotCreateIndex / FerretDB invalid document
            | 52 // DollarPrefixedFieldName
            | 55 // InvalidDBRef
            | 56 // EmptyFieldName
            | 57 // DottedFieldName
            | 10334 // BSONObjectTooLarge
            | 17419 // document too large
            | 17280 // key too large to index
            | 15 // Overflow
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_poison_and_the_rest_transient() {
        for code in ["22021", "22008", "22001", "23505", "54000"] {
            assert!(is_data_error(code), "{code}");
        }
        for code in ["40001", "40P01", "08006", "53300", "57P01", "XX000"] {
            assert!(!is_data_error(code), "{code}");
        }
    }
}
