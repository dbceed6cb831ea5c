//! `hammer`: one endpoint under closed-loop load, for profiling a single route (run `perf` on the
//! service meanwhile). `hammer http://127.0.0.1:8081/v1/retention?from=..&to=.. --key demo-read-key`
//! GETs; `--body '{..}'` POSTs JSON. Prints req/s, p50, p99 and errors.

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "hammer", about = "Load one HTTP endpoint and report req/s, p50 and p99.")]
struct Args {
    /// The URL to request.
    url: String,
    /// Bearer token sent with every request.
    #[arg(long)]
    key: Option<String>,
    /// A JSON body: POST it instead of GET.
    #[arg(long)]
    body: Option<String>,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Args { url, key, body, .. } = args;
    let load = bench::load::run(args.clients, args.seconds, move |http, _| {
        let request = match &body {
            Some(body) => http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone()),
            None => http.get(&url),
        };
        match &key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    })
    .await;
    println!(
        "{:.0} req/s  p50 {:.1} ms  p99 {:.1} ms  errors {}",
        load.per_second, load.p50_ms, load.p99_ms, load.errors
    );
    Ok(())
}
