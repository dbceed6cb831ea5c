//! The workers' own CPU per event, stage by stage, on one 100-event message as ingest publishes
//! it: decoding, the ledger keys, the MongoDB documents, the ledger's property column and the
//! rollup fold. What a drain costs the workers beyond these is I/O (the drivers, the runtime,
//! the kernel); bench/RESULTS.md gives the drain's total.

use bench::Workload;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn message() -> Vec<u8> {
    let workload = Workload {
        learners: 20,
        courses: 20,
        days: 30,
        lessons: 12,
        seed: 7,
        end: chrono::Utc::now().date_naive() - chrono::Duration::days(1),
    };
    let raw: Vec<_> = workload.generate().events.into_iter().take(200).collect();
    let accepted: Vec<_> = bench::normalised::events("bench", &raw)
        .unwrap_or_default()
        .into_iter()
        .take(100)
        .collect();
    serde_json::to_vec(&accepted).unwrap_or_default()
}

fn stages(c: &mut Criterion) {
    let payload = message();
    let (events, _) = workers::decode(&payload).unwrap_or_default();
    assert_eq!(events.len(), 100, "the message holds 100 events");
    let mut group = c.benchmark_group("worker_cpu_per_100_events");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("decode", |b| b.iter(|| workers::decode(&payload).map(|(e, _)| e.len())));
    group.bench_function("event_key", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| workers::ledger::event_key(&e.project, &e.message_id).as_u128() as u64)
                .fold(0u64, u64::wrapping_add)
        })
    });
    group.bench_function("to_raw_document", |b| {
        b.iter(|| {
            events
                .iter()
                .filter_map(|e| workers::store::to_raw_document(e).ok())
                .map(|d| d.as_bytes().len())
                .sum::<usize>()
        })
    });
    group.bench_function("scalar_properties", |b| {
        b.iter(|| {
            events
                .iter()
                .filter_map(workers::ledger::scalar_properties)
                .map(|s| s.len())
                .sum::<usize>()
        })
    });
    group.bench_function("delta", |b| {
        b.iter(|| workers::rollup::Delta::from_events(events.iter()).touched().len())
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
