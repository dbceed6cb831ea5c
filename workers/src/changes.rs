//! Publishes the change notifications (`common::change::Change`) after each rollup commit, so the
//! api drops its cached answers for the project and pushes live progress. Core NATS: a lost
//! notification only delays freshness until the api's cache TTL.

use common::change::Change;

pub async fn publish(nats: &async_nats::Client, subject: &str, changes: &[Change]) {
    for change in changes {
        match serde_json::to_vec(change) {
            Ok(payload) => {
                if let Err(error) = nats.publish(subject.to_owned(), payload.into()).await {
                    tracing::warn!(%error, project = %change.project, "cannot publish a change notification");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot encode a change notification"),
        }
    }
}
