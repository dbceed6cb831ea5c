//! Change notifications: after each commit, workers publish on `<prefix>.changes` what the commit
//! touched (project, days, users), so the api can invalidate its cache and push live updates.
//! Core NATS is enough: a lost notification only delays freshness until the cache TTL.

use crate::rollup::Touched;

pub async fn publish(nats: &async_nats::Client, subject: &str, touched: &[Touched]) {
    for change in touched {
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
