//! Decoding and validating a 100-event Segment batch, against plain `serde_json` parsing of the
//! same bytes as the baseline measured in the same run (bench/RESULTS.md reports the ratio).

use bench::Workload;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn batch_body() -> Vec<u8> {
    let workload = Workload {
        learners: 20,
        courses: 4,
        days: 10,
        lessons: 8,
        seed: 1,
        end: chrono::NaiveDate::from_ymd_opt(2026, 3, 10).unwrap_or_default(),
    };
    let events: Vec<_> = workload.generate().events.into_iter().take(100).collect();
    serde_json::to_vec(&serde_json::json!({"batch": events})).unwrap_or_default()
}

fn decode(c: &mut Criterion) {
    let body = batch_body();
    let limits = ingest::Limits::default();
    let mut group = c.benchmark_group("decode_100_event_batch");
    group.throughput(Throughput::Elements(100));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&body).map(|v| v.is_object()))
    });
    // What the server does per request: decode, then check and encode each event into the
    // message buffer (`encode`; `validate` also reads the events back, for tests).
    group.bench_function("ingest_decode_and_encode", |b| {
        b.iter(|| {
            let mut bytes = body.clone();
            ingest::decode_batch(&mut bytes, ingest::Endpoint::Batch, &limits).map(|envelope| {
                envelope
                    .encode(&ingest::Normalisation {
                        project: "bench",
                        received_at: chrono::Utc::now(),
                        max_clock_skew: std::time::Duration::from_secs(60),
                        historical_horizon: std::time::Duration::from_secs(30 * 86_400),
                        limits: &limits,
                    })
                    .accepted
                    .len()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
