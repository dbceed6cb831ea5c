//! The Prometheus metrics workers record (CONTRACT.md §8), described once so `/metrics` carries
//! HELP text and units for each.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers the descriptions; called by `main` after the recorder is installed.
pub fn describe() {
    describe_counter!(
        "workers_messages_processed_total",
        Unit::Count,
        "JetStream messages stored, rolled up and acknowledged."
    );
    describe_counter!(
        "workers_events_stored_total",
        Unit::Count,
        "Events newly inserted into MongoDB `events`."
    );
    describe_counter!(
        "workers_events_duplicate_total",
        Unit::Count,
        "Events already stored (client resends, redeliveries), recognised by their id."
    );
    describe_counter!(
        "workers_redeliveries_total",
        Unit::Count,
        "Messages delivered more than once by JetStream."
    );
    describe_counter!(
        "workers_poison_messages_total",
        Unit::Count,
        "Messages given up on, by reason."
    );
    describe_counter!(
        "workers_batch_failures_total",
        Unit::Count,
        "Batches whose stores failed and were left for redelivery."
    );
    describe_gauge!(
        "workers_consumer_pending_messages",
        Unit::Count,
        "Messages in the stream not yet delivered to the durable consumer."
    );
    describe_gauge!(
        "workers_consumer_ack_pending_messages",
        Unit::Count,
        "Messages delivered but not yet acknowledged."
    );
    describe_histogram!(
        "workers_batch_duration_seconds",
        Unit::Seconds,
        "Time to store, roll up and acknowledge one fetched batch."
    );
    describe_histogram!("workers_batch_events_size", Unit::Count, "Events per fetched batch.");
    describe_histogram!(
        "workers_rollup_commit_duration_seconds",
        Unit::Seconds,
        "Time of one PostgreSQL rollup transaction."
    );
    describe_histogram!(
        "workers_end_to_end_lag_seconds",
        Unit::Seconds,
        "Time from ingest receiving an event to its rollup being committed."
    );
}
