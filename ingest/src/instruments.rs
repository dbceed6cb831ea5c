//! The Prometheus metrics ingest records (docs/contract.md §8), described once so `/metrics` carries
//! HELP text and units for each.

use metrics::{describe_counter, describe_histogram, Unit};

/// Registers the descriptions; called by `main` after the recorder is installed.
pub fn describe() {
    describe_counter!(
        "ingest_events_received_total",
        Unit::Count,
        "Events received in requests that passed authentication and envelope parsing."
    );
    describe_counter!(
        "ingest_events_accepted_total",
        Unit::Count,
        "Events acknowledged by JetStream and reported accepted to the client."
    );
    describe_counter!(
        "ingest_events_rejected_total",
        Unit::Count,
        "Events rejected one by one, by reason."
    );
    describe_counter!(
        "ingest_events_duplicate_total",
        Unit::Count,
        "Repeats of a messageId within one request, dropped."
    );
    describe_counter!(
        "ingest_requests_failed_total",
        Unit::Count,
        "Requests answered with an error status, by reason."
    );
    describe_counter!(
        "ingest_jetstream_publish_failures_total",
        Unit::Count,
        "Requests whose events JetStream did not acknowledge, by reason."
    );
    describe_histogram!(
        "ingest_http_request_duration_seconds",
        Unit::Seconds,
        "Time from request to response, by route and status."
    );
    describe_histogram!(
        "ingest_jetstream_publish_duration_seconds",
        Unit::Seconds,
        "Time from publishing one JetStream message (coalesced events of one or more requests) to its acknowledgement."
    );
    describe_histogram!(
        "ingest_jetstream_publish_batch_size",
        Unit::Count,
        "Events per JetStream message."
    );
}
