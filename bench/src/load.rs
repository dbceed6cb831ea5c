//! Closed-loop HTTP load: `clients` keep-alive clients sending requests back to back, each timing
//! its own requests. The suite's api phase and `hammer` (one endpoint, for profiling) share it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// What a load run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Successful requests per second.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests that failed or answered other than 2xx.
    pub errors: usize,
}

/// `clients` keep-alive clients sending `request(client, n)` back to back for `seconds`.
pub async fn run<F>(clients: usize, seconds: f64, request: F) -> Load
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .no_gzip()
        .build()
        .unwrap_or_default();
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (http, request) = (http.clone(), request.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut n) = (Vec::new(), 0usize, 0usize);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let ok = match request(&http, client * 1_000_003 + n).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            response.bytes().await.is_ok() && ok
                        }
                        Err(_) => false,
                    };
                    n += 1;
                    if ok {
                        latencies.push(started.elapsed().as_secs_f64() * 1_000.0);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    latencies.sort_by(f64::total_cmp);
    Load {
        per_second: latencies.len() as f64 / seconds,
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        errors,
    }
}

/// The `q` quantile of sorted values (NaN when there are none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}
