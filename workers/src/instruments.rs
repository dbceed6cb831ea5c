//! The Prometheus metrics workers record (docs/contract.md §8), described once so `/metrics`
//! carries HELP text and units for each. Stage timings and counts are enough to tell where a
//! batch's time goes (bench/RESULTS.md reads them).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers the descriptions; called by `main` after the recorder is installed.
pub fn describe() {
    describe_counter!(
        "workers_messages_processed_total",
        Unit::Count,
        "JetStream messages rolled up, stored and acknowledged."
    );
    describe_counter!(
        "workers_events_counted_total",
        Unit::Count,
        "Events claimed in the ledger and added to the rollups (each event once, ever)."
    );
    describe_counter!(
        "workers_events_resent_total",
        Unit::Count,
        "Events already claimed by another message (client resends): neither counted nor stored again."
    );
    describe_counter!(
        "workers_events_redelivered_total",
        Unit::Count,
        "Events already claimed by the same message (a redelivery after a crash): stored, not counted again."
    );
    describe_counter!(
        "workers_events_stored_total",
        Unit::Count,
        "Events newly inserted into MongoDB `events`."
    );
    describe_counter!(
        "workers_events_duplicate_total",
        Unit::Count,
        "Events whose MongoDB insert found them stored already (by an earlier attempt)."
    );
    describe_counter!(
        "workers_redeliveries_total",
        Unit::Count,
        "Messages delivered more than once by JetStream."
    );
    describe_counter!(
        "workers_dead_letters_total",
        Unit::Count,
        "Dead letters written (a whole message or one event), by reason."
    );
    describe_counter!(
        "workers_dead_letter_events_total",
        Unit::Count,
        "Events in dead letters written, by reason."
    );
    describe_counter!(
        "workers_transient_failures_total",
        Unit::Count,
        "Attempts of a stage that failed transiently and were retried, by stage."
    );
    describe_counter!(
        "workers_learning_paths_written_total",
        Unit::Count,
        "`student_learning_paths` documents rewritten by the flusher."
    );
    describe_counter!(
        "workers_identity_links_refused_total",
        Unit::Count,
        "identify and alias links refused (identified, invalid_id, too_many_ids), by reason; a replay that refuses a link again counts it again."
    );
    describe_counter!(
        "workers_raw_events_pruned_total",
        Unit::Count,
        "Raw events deleted from MongoDB past WORKERS_RAW_EVENT_RETENTION."
    );
    describe_counter!(
        "workers_ledger_pruned_total",
        Unit::Count,
        "Ledger rows deleted past the retention."
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
        "workers_stage_duration_seconds",
        Unit::Seconds,
        "Time spent in a stage: decode (one message), prepare (a batch's MongoDB documents), rollup (a batch's PostgreSQL work, prepare included), store (a batch's MongoDB insert), paths (one learning-path flush)."
    );
    describe_histogram!("workers_batch_events_size", Unit::Count, "Events per batch.");
    describe_histogram!(
        "workers_rollup_commit_duration_seconds",
        Unit::Seconds,
        "Time of one PostgreSQL rollup transaction, from begin to commit."
    );
    describe_histogram!(
        "workers_end_to_end_lag_seconds",
        Unit::Seconds,
        "Time from ingest receiving an event to its rollup being committed."
    );
}
