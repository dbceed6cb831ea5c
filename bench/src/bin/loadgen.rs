#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

//! `loadgen`: replays a generated workload against ingest in Segment batches, with a bounded
//! number of requests in flight, delivered as a real fleet of clients would (a delivery mix of
//! resends, batches sent twice and late events; `--mix none` sends every event once, in order),
//! and prints what it sent and how fast. With `--verify-api`, it then polls the api until its DAU
//! equals the generator's own count, and checks top events, top pages, every course's analytics
//! and instructor metrics (engagement, at-risk learners, drop-off, item difficulty, videos,
//! grades, time on task) and the stats and time on task of a sample of learners against the
//! generator's counts over the distinct events; then prints one course as its instructor sees it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bench::{differences, Generated, Mix, RiskRules, Truth, Workload};
use chrono::NaiveDate;
use clap::{Parser, ValueEnum};
use futures::{stream, StreamExt as _};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MixKind {
    /// 3% of events resent in a later request, 5 batches sent twice, 1.5% of events late.
    Realistic,
    /// Every event once, in order.
    None,
}

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Replay a realistic e-learning workload against ingest.")]
struct Args {
    /// Ingest base URL.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Write key to send (Basic auth, as Segment SDKs do).
    #[arg(long, env = "INGEST_WRITE_KEY")]
    write_key: String,
    #[arg(long, default_value_t = 2_000)]
    learners: usize,
    #[arg(long, default_value_t = 20)]
    courses: usize,
    #[arg(long, default_value_t = 30)]
    days: i64,
    #[arg(long, default_value_t = 12)]
    lessons: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per request (resent and late events join requests beyond it).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The delivery mix; the three settings below override its parts.
    #[arg(long, value_enum, default_value_t = MixKind::Realistic)]
    mix: MixKind,
    /// Share of the events sent a second time (same messageId) in a later request.
    #[arg(long)]
    resend_fraction: Option<f64>,
    /// Whole requests sent twice.
    #[arg(long)]
    duplicate_batches: Option<usize>,
    /// Share of the events sent late: after a later day's events of the same learner.
    #[arg(long)]
    late_fraction: Option<f64>,
    /// Write what the generator expects (DAU, top events and pages, course analytics, user
    /// stats of the sample) here, as JSON.
    #[arg(long)]
    expect_out: Option<std::path::PathBuf>,
    /// After sending, poll this api until its DAU series equals the generator's own count, then
    /// check the other metrics against it.
    #[arg(long, env = "LOADGEN_API_URL")]
    verify_api: Option<String>,
    /// Read key for the api.
    #[arg(long, env = "API_READ_KEY", default_value = "")]
    read_key: String,
    /// Longest to wait for the pipeline's DAU to catch up, in seconds.
    #[arg(long, default_value_t = 300)]
    verify_timeout_s: u64,
    /// Once DAU matches, longest to wait for the other metrics to match, in seconds.
    #[arg(long, default_value_t = 120)]
    check_timeout_s: u64,
    /// Send nothing: only check the api (with `--verify-api`) against the workload, e.g. again
    /// after a demo. The range ends yesterday, as when sending: run it on the day the workload was
    /// sent.
    #[arg(long)]
    no_send: bool,
    /// Learners (and visitors) whose stats are checked, spread over all of them.
    #[arg(long, default_value_t = 20)]
    sample_users: usize,
    /// Spread the requests over this many seconds (0: as fast as `--concurrency` allows), for a
    /// sustained load (scripts/chaos).
    #[arg(long, default_value_t = 0.0)]
    spread_s: f64,
    /// How long a request is retried, as SDKs do, while ingest answers 5xx or 429 or cannot be
    /// reached (restarting, or its stream is down), before the run fails.
    #[arg(long, default_value_t = 10)]
    retry_for_s: u64,
    /// Write every refused attempt here, one `<unix time, seconds> <status>` line each (status 0:
    /// no answer), for scripts/chaos to time how long ingest refused after each fault.
    #[arg(long)]
    refusals_out: Option<std::path::PathBuf>,
}

impl Args {
    fn mix(&self) -> Mix {
        let base = match self.mix {
            MixKind::Realistic => Mix::realistic(self.batch_size),
            MixKind::None => Mix::none(self.batch_size),
        };
        Mix {
            batch_size: self.batch_size,
            resend_fraction: self.resend_fraction.unwrap_or(base.resend_fraction),
            duplicate_batches: self.duplicate_batches.unwrap_or(base.duplicate_batches),
            late_fraction: self.late_fraction.unwrap_or(base.late_fraction),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = args.mix();
    for (name, fraction) in [
        ("--resend-fraction", mix.resend_fraction),
        ("--late-fraction", mix.late_fraction),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&fraction),
            "{name} must be from 0 to 1, not {fraction}"
        );
    }
    let end = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let workload = Workload {
        learners: args.learners,
        courses: args.courses,
        days: args.days,
        lessons: args.lessons,
        seed: args.seed,
        end,
    };
    let generated = workload.generate();
    let deliveries = generated.deliveries(&mix);
    let sample = generated.sample_users(args.sample_users);
    let expected = Expected::new(&generated, &sample);
    if let Some(path) = &args.expect_out {
        let body = json!({
            "events": generated.events.len(), "sent": deliveries.events_sent(), "requests": deliveries.requests.len(),
            "resends": deliveries.resends, "duplicate_batches": deliveries.duplicate_batches, "late": deliveries.late,
            "dau": generated.dau, "top_events": expected.top_events, "top_pages": expected.top_pages,
            "courses": expected.courses.iter().cloned().collect::<BTreeMap<_, _>>(),
            "users": expected.users(chrono::Utc::now().date_naive()).into_iter().collect::<BTreeMap<_, _>>(),
            "instructor": expected.instructor(chrono::Utc::now().date_naive()).into_iter()
                .map(|(what, path, _, value)| (format!("{what} {path}"), value)).collect::<BTreeMap<_, _>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let client = reqwest::Client::new();
    if !args.no_send {
        send(&args, &client, &generated, &deliveries).await?;
    }
    if let Some(api) = &args.verify_api {
        let api = Api {
            client: &client,
            base: api.trim_end_matches('/'),
            key: &args.read_key,
        };
        verify_dau(&api, &generated.dau, Duration::from_secs(args.verify_timeout_s)).await?;
        let outcome = check(&api, &expected, Duration::from_secs(args.check_timeout_s)).await?;
        headlines(&api, &expected, generated.from, generated.to).await?;
        instructor_view(&api, &expected).await?;
        outcome.report()?;
    }
    Ok(())
}

/// Sends the requests, a bounded number in flight, and prints what was sent and how fast.
async fn send(
    args: &Args,
    client: &reqwest::Client,
    generated: &Generated,
    deliveries: &bench::Deliveries,
) -> anyhow::Result<()> {
    let url = format!("{}/v1/batch", args.url.trim_end_matches('/'));
    let started = Instant::now();
    let requests = deliveries.requests.len();
    let spacing = Duration::from_secs_f64(args.spread_s.max(0.0) / requests.max(1) as f64);
    let retry_for = Duration::from_secs(args.retry_for_s);
    let retried = std::sync::atomic::AtomicU64::new(0);
    let retried = &retried;
    let refusals = std::sync::Mutex::new(Vec::<(f64, u16)>::new());
    let refused = |status: u16| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        refusals.lock().expect("not poisoned").push((now.as_secs_f64(), status));
    };
    let refused = &refused;
    let results: Vec<anyhow::Result<(u64, u64)>> = stream::iter(deliveries.requests.iter().enumerate())
        .map(|(n, batch)| {
            let (client, url, key) = (client.clone(), url.clone(), args.write_key.clone());
            async move {
                tokio::time::sleep_until((started + spacing * n as u32).into()).await;
                // Stamped when sent, as an SDK does: ingest corrects event times by sentAt's skew.
                let body = serde_json::to_vec(&json!({"batch": batch, "sentAt": chrono::Utc::now()}))?;
                let first = Instant::now();
                for attempt in 1u64.. {
                    if attempt > 1 {
                        retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        anyhow::ensure!(
                            first.elapsed() < retry_for,
                            "ingest kept refusing a batch for {retry_for:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(100 * attempt.min(20))).await;
                    }
                    let response = match client
                        .post(&url)
                        .basic_auth(&key, Some(""))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(response) => response,
                        // Not reached, or the connection dropped before the answer (ingest
                        // killed): the events may or may not be in; send them again.
                        Err(_) => {
                            refused(0);
                            continue;
                        }
                    };
                    let status = response.status();
                    let reply: Value = response.json().await.unwrap_or_default();
                    if status.is_success() {
                        anyhow::ensure!(
                            reply["rejected"].as_array().is_none_or(Vec::is_empty),
                            "events were rejected: {reply}"
                        );
                        let count = |field: &str| reply[field].as_u64().unwrap_or_default();
                        return Ok((count("accepted"), count("duplicates")));
                    }
                    refused(status.as_u16());
                    anyhow::ensure!(
                        status.is_server_error() || status.as_u16() == 429,
                        "ingest answered {status}: {reply}"
                    );
                }
                unreachable!("the retry loop returns")
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(path) = &args.refusals_out {
        let mut lines = refusals.into_inner().expect("not poisoned");
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: String = lines.iter().map(|(at, status)| format!("{at:.3} {status}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let (mut accepted, mut in_request_duplicates) = (0, 0);
    for result in results {
        let (a, d) = result?;
        accepted += a;
        in_request_duplicates += d;
    }
    let sent = deliveries.events_sent();
    println!(
        "sent {sent} events ({} distinct) from {} learners and {} anonymous visitors over {} days in {requests} requests: {accepted} accepted in {elapsed:.2} s ({:.0} events/s)",
        deliveries.distinct,
        args.learners,
        generated
            .events
            .iter()
            .filter(|e| e["userId"].is_null())
            .filter_map(|e| e["anonymousId"].as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        args.days,
        accepted as f64 / elapsed
    );
    println!(
        "requests retried: {} (5xx, 429, or ingest unreachable)",
        retried.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "delivery mix: {} events resent in a later request ({:.1}%), {} requests sent twice ({} events), {} events late ({:.1}%, after a later day of the same learner); ingest counted {in_request_duplicates} repeats within a request",
        deliveries.resends,
        percent(deliveries.resends, deliveries.distinct),
        deliveries.duplicate_batches,
        deliveries.duplicate_batch_events,
        deliveries.late,
        percent(deliveries.late, deliveries.distinct),
    );
    Ok(())
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The api and its read key.
struct Api<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    key: &'a str,
}

impl Api<'_> {
    /// GET `path` (with its query) as JSON; None on 404.
    async fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.error_for_status().with_context(|| format!("GET {path}"))?;
        Ok(Some(response.json().await.with_context(|| format!("GET {path}"))?))
    }
}

/// What the generator expects the api to answer, computed once from the distinct events.
struct Expected<'a> {
    truth: Truth<'a>,
    from: NaiveDate,
    to: NaiveDate,
    top_events: Value,
    top_pages: Value,
    /// (course, analytics) of every course.
    courses: Vec<(String, Value)>,
    sample: &'a [String],
}

impl<'a> Expected<'a> {
    fn new(generated: &'a Generated, sample: &'a [String]) -> Self {
        let (from, to) = (generated.from, generated.to);
        let truth = generated.truth();
        Self {
            from,
            to,
            top_events: truth.top_events(from, to),
            top_pages: truth.top_pages(from, to),
            courses: generated
                .courses()
                .into_iter()
                .map(|c| {
                    let analytics = truth.course_analytics(&c, from, to);
                    (c, analytics)
                })
                .collect(),
            sample,
            truth,
        }
    }

    /// The instructor metrics of every course and the time on task of the sample as of `today`
    /// (activity windows and idle days depend on it): (what, api path, metric, expected answer).
    fn instructor(&self, today: NaiveDate) -> Vec<(String, String, &'static str, Value)> {
        let (from, to, truth) = (self.from, self.to, &self.truth);
        let mut out = Vec::new();
        for (course, _) in &self.courses {
            let base = format!("/v1/courses/{course}");
            let what = format!("course {course}");
            let rules = RiskRules::default();
            for (path, metric, value) in [
                (
                    format!("{base}/engagement"),
                    "engagement",
                    truth.engagement(course, today),
                ),
                (
                    format!("{base}/at-risk?limit=500"),
                    "at-risk",
                    truth.at_risk(course, rules, today),
                ),
                (format!("{base}/drop-off"), "drop-off", truth.drop_off(course)),
                (
                    format!("{base}/items/difficulty"),
                    "item difficulty",
                    truth.difficulty(course),
                ),
                (format!("{base}/videos"), "videos", truth.videos(course)),
                (
                    format!("{base}/grades"),
                    "grades",
                    truth.grades(course, 10, rules.pass_mark),
                ),
                (
                    format!("{base}/time-on-task?from={from}&to={to}"),
                    "time on task",
                    truth.course_time_on_task(course, from, to),
                ),
            ] {
                out.push((what.clone(), path, metric, value));
            }
        }
        for user in self.sample {
            out.push((
                format!("user {user}"),
                format!("/v1/users/{user}/time-on-task?from={from}&to={to}"),
                "time on task",
                truth.user_time_on_task(user, from, to),
            ));
        }
        out
    }

    /// (user, stats) of the sample as of `today` (the current streak depends on it).
    fn users(&self, today: NaiveDate) -> Vec<(String, Value)> {
        self.sample
            .iter()
            .map(|u| (u.clone(), self.truth.user_stats(u, today).unwrap_or(Value::Null)))
            .collect()
    }
}

/// A field where the api and the generator disagree.
struct Mismatch {
    what: String,
    field: String,
    expected: Value,
    actual: Value,
}

/// What one comparison of every checked metric found.
#[derive(Default)]
struct Outcome {
    /// Values compared per metric.
    compared: BTreeMap<&'static str, usize>,
    mismatches: Vec<Mismatch>,
    elapsed: Duration,
    rounds: usize,
}

/// Values (leaves) of a JSON value.
fn leaves(value: &Value) -> usize {
    match value {
        Value::Object(fields) => fields.values().map(leaves).sum(),
        Value::Array(items) => items.iter().map(leaves).sum(),
        _ => 1,
    }
}

/// `{name: count}` from the api's `items` of a top list.
fn top_map(reply: Option<&Value>, name: &str, count: &str) -> Value {
    let items = reply.and_then(|r| r["items"].as_array()).into_iter().flatten();
    Value::Object(
        items
            .filter_map(|i| Some((i[name].as_str()?.to_owned(), i[count].clone())))
            .collect(),
    )
}

/// Compares top events, top pages, every course's analytics and the sample's stats once.
async fn compare_all(api: &Api<'_>, expected: &Expected<'_>) -> anyhow::Result<Outcome> {
    let (from, to) = (expected.from, expected.to);
    let mut outcome = Outcome::default();
    let add = |outcome: &mut Outcome, metric: &'static str, what: String, expected: &Value, actual: &Value| {
        *outcome.compared.entry(metric).or_default() += leaves(expected);
        for d in differences(expected, actual) {
            outcome.mismatches.push(Mismatch {
                what: what.clone(),
                field: d.path,
                expected: d.expected,
                actual: d.actual,
            });
        }
    };
    for (path, name, count, wanted, metric) in [
        ("events/top", "event", "events", &expected.top_events, "top events"),
        ("pages/top", "page", "views", &expected.top_pages, "top pages"),
    ] {
        let reply = api
            .get(&format!("/v1/metrics/{path}?from={from}&to={to}&limit=100"))
            .await?;
        let actual = top_map(reply.as_ref(), name, count);
        // Names the api has and the generator does not are mismatches too.
        let mut wanted = wanted.clone();
        for (key, _) in actual.as_object().into_iter().flatten() {
            if wanted.get(key).is_none() {
                wanted[key] = json!(0);
            }
        }
        add(&mut outcome, metric, metric.to_owned(), &wanted, &actual);
    }
    for (course, wanted) in &expected.courses {
        let reply = api
            .get(&format!("/v1/courses/{course}/analytics?from={from}&to={to}"))
            .await?;
        add(
            &mut outcome,
            "course analytics",
            format!("course {course}"),
            wanted,
            &reply.unwrap_or_default(),
        );
    }
    for (user, wanted) in expected.users(chrono::Utc::now().date_naive()) {
        let reply = api.get(&format!("/v1/users/{user}/stats")).await?;
        add(
            &mut outcome,
            "user stats",
            format!("user {user}"),
            &wanted,
            &reply.unwrap_or_default(),
        );
    }
    let instructor = expected.instructor(chrono::Utc::now().date_naive());
    let replies: Vec<anyhow::Result<Option<Value>>> = stream::iter(instructor.iter())
        .map(|(_, path, _, _)| api.get(path))
        .buffered(8)
        .collect()
        .await;
    for ((what, path, metric, wanted), reply) in instructor.iter().zip(replies) {
        let route = path.split('?').next().unwrap_or_default();
        let route = route.rsplit_once("/v1/").map_or(route, |(_, r)| r);
        let field = route.split('/').skip(2).collect::<Vec<_>>().join("/");
        add(
            &mut outcome,
            metric,
            format!("{what} {field}"),
            wanted,
            &reply?.unwrap_or_default(),
        );
    }
    Ok(outcome)
}

/// Compares until everything matches or `timeout` passes (the rollups may still be committing
/// what DAU no longer shows); returns the last comparison.
async fn check(api: &Api<'_>, expected: &Expected<'_>, timeout: Duration) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        let mut outcome = compare_all(api, expected).await?;
        rounds += 1;
        if outcome.mismatches.is_empty() || started.elapsed() > timeout {
            outcome.elapsed = started.elapsed();
            outcome.rounds = rounds;
            return Ok(outcome);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Outcome {
    /// Prints the result of the check; an error when anything differs.
    fn report(&self) -> anyhow::Result<()> {
        let compared: Vec<String> = self.compared.iter().map(|(m, n)| format!("{m} {n}")).collect();
        let total: usize = self.compared.values().sum();
        if self.mismatches.is_empty() {
            println!(
                "\ncheck passed: the api equals the generator's own count over the distinct events in all {total} values compared ({}), after {:.1} s ({} round(s))",
                compared.join(", "),
                self.elapsed.as_secs_f64(),
                self.rounds
            );
            return Ok(());
        }
        println!(
            "\ncheck FAILED: {} of {total} values differ ({}), still after {:.1} s ({} rounds):",
            self.mismatches.len(),
            compared.join(", "),
            self.elapsed.as_secs_f64(),
            self.rounds
        );
        println!("{:<22} {:<40} {:>22} {:>22}", "what", "field", "expected", "api");
        const SHOWN: usize = 60;
        for m in self.mismatches.iter().take(SHOWN) {
            let short = |v: &Value| {
                let text = v.to_string();
                if text.chars().count() > 22 {
                    format!("{}…", text.chars().take(21).collect::<String>())
                } else {
                    text
                }
            };
            println!(
                "{:<22} {:<40} {:>22} {:>22}",
                m.what,
                m.field,
                short(&m.expected),
                short(&m.actual)
            );
        }
        if self.mismatches.len() > SHOWN {
            println!("… and {} more", self.mismatches.len() - SHOWN);
        }
        anyhow::bail!(
            "the api's metrics differ from the generator's in {} values",
            self.mismatches.len()
        )
    }
}

/// Prints the top events and pages over the range and the courses' totals, as the api reports them.
async fn headlines(api: &Api<'_>, expected: &Expected<'_>, from: NaiveDate, to: NaiveDate) -> anyhow::Result<()> {
    for (path, field, count) in [("events/top", "event", "events"), ("pages/top", "page", "views")] {
        let reply = api
            .get(&format!("/v1/metrics/{path}?from={from}&to={to}&limit=10"))
            .await?
            .unwrap_or_default();
        println!("\ntop {field}s, {from} to {to} (api):");
        let items = reply["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            println!("  (none)");
        }
        for item in items {
            println!(
                "  {:<28} {:>8}",
                item[field].as_str().unwrap_or("?"),
                item[count].as_i64().unwrap_or_default()
            );
        }
    }
    println!(
        "\n{:<10} {:>7} {:>8} {:>9} {:>9} {:>8} {:>9} {:>11}   (courses, {from} to {to}, api)",
        "course", "views", "viewers", "learners", "enrolled", "lessons", "finished", "completion"
    );
    for (course, _) in &expected.courses {
        let reply = api
            .get(&format!("/v1/courses/{course}/analytics?from={from}&to={to}"))
            .await?
            .unwrap_or_default();
        let t = &reply["totals"];
        let n = |field: &str| t[field].as_i64().unwrap_or_default();
        println!(
            "{course:<10} {:>7} {:>8} {:>9} {:>9} {:>8} {:>9} {:>10.1}%",
            n("views"),
            n("unique_viewers"),
            n("active_learners"),
            n("enrollments"),
            n("lesson_completions"),
            n("course_completions"),
            t["completion_rate"].as_f64().unwrap_or_default() * 100.0
        );
    }
    Ok(())
}

/// Prints one course (the most at-risk rules at work, then the most enrollees) as its instructor
/// sees it, from the api's instructor routes: enrollees and activity, at-risk learners, drop-off
/// along the items, the hardest item, the most watched video, grades and time on task.
async fn instructor_view(api: &Api<'_>, expected: &Expected<'_>) -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    // The course that shows the most at-risk rules at work, then the most enrollees.
    let Some((course, _)) = expected.courses.iter().max_by_key(|(c, _)| {
        let risk = expected.truth.at_risk(c, RiskRules::default(), today);
        let rules: std::collections::BTreeSet<String> = risk["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["reasons"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["rule"].as_str().map(str::to_owned))
            .collect();
        let enrollees = expected.truth.engagement(c, today)["current_enrollees"].as_i64();
        (rules.len(), enrollees)
    }) else {
        return Ok(());
    };
    let get = |route: &str| {
        let path = format!("/v1/courses/{course}/{route}");
        async move { anyhow::Ok(api.get(&path).await?.unwrap_or_default()) }
    };
    let (from, to) = (expected.from, expected.to);
    let (engagement, risk, drop, difficulty, videos, grades, time) = tokio::try_join!(
        get("engagement"),
        get("at-risk?limit=500"),
        get("drop-off"),
        get("items/difficulty"),
        get("videos"),
        get("grades"),
        get(&format!("time-on-task?from={from}&to={to}")),
    )?;
    let n = |v: &Value| v.as_i64().unwrap_or_default();
    let pct = |v: &Value| v.as_f64().map_or("–".to_owned(), |r| format!("{:.0}%", r * 100.0));
    println!("\ninstructor view of {course} (api, as of {today}):");
    println!(
        "  enrolled now {}, active in the last 7 days {}, in 30 days {}",
        n(&engagement["current_enrollees"]),
        n(&engagement["active_7d"]),
        n(&engagement["active_30d"])
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for learner in risk["items"].as_array().into_iter().flatten() {
        for reason in learner["reasons"].as_array().into_iter().flatten() {
            *reasons.entry(reason["rule"].as_str().unwrap_or("?")).or_default() += 1;
        }
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, k)| format!("{r} {k}")).collect();
    println!(
        "  at risk: {} learners ({}); median progress {:.0}%",
        n(&risk["total"]),
        reasons.join(", "),
        risk["median_progress_pct"].as_f64().unwrap_or_default()
    );
    let items = drop["items"].as_array().cloned().unwrap_or_default();
    if let (Some(first), Some(last)) = (items.first(), items.last()) {
        let steepest = items.iter().filter(|i| i["from_previous"].is_number()).min_by(|a, b| {
            let rate = |i: &Value| i["from_previous"].as_f64().unwrap_or(1.0);
            rate(a).total_cmp(&rate(b))
        });
        println!(
            "  drop-off over {} items: {} learners reached {}, {} the last ({}); steepest: {} ({} of the item before)",
            items.len(),
            n(&first["learners"]),
            first["item_id"].as_str().unwrap_or("?"),
            n(&last["learners"]),
            last["item_id"].as_str().unwrap_or("?"),
            steepest.and_then(|s| s["item_id"].as_str()).unwrap_or("–"),
            steepest.map_or("–".to_owned(), |s| pct(&s["from_previous"])),
        );
    }
    let hardest = difficulty["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| n(&i["learners"]) >= 10)
        .min_by(|a, b| {
            let rate = |i: &Value| i["first_attempt_correct_rate"].as_f64().unwrap_or(1.0);
            rate(a).total_cmp(&rate(b))
        });
    if let Some(item) = hardest {
        println!(
            "  hardest item: {} ({} learners, {} right first time, {:.2} attempts until right, {} never right)",
            item["item_id"].as_str().unwrap_or("?"),
            n(&item["learners"]),
            pct(&item["first_attempt_correct_rate"]),
            item["mean_attempts_until_correct"].as_f64().unwrap_or_default(),
            n(&item["never_correct"])
        );
    }
    if let Some(video) = videos["items"]
        .as_array()
        .into_iter()
        .flatten()
        .max_by_key(|v| n(&v["viewers"]))
    {
        let rewatched = video["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .max_by_key(|s| n(&s["rewatched"]));
        println!(
            "  video {} ({:.0} s): {} viewers, {} full views (95% or more watched); most rewatched: {:.0}-{:.0} s, by {}",
            video["video_id"].as_str().unwrap_or("?"),
            video["length_s"].as_f64().unwrap_or_default(),
            n(&video["viewers"]),
            n(&video["full_views"]),
            rewatched.and_then(|s| s["from_s"].as_f64()).unwrap_or_default(),
            rewatched.and_then(|s| s["to_s"].as_f64()).unwrap_or_default(),
            rewatched.map_or(0, |s| n(&s["rewatched"]))
        );
    }
    println!(
        "  grades: {} graded, {} passed (pass rate {})",
        n(&grades["graded"]),
        n(&grades["passed"]),
        pct(&grades["pass_rate"])
    );
    let totals = &time["totals"];
    println!(
        "  time on task {from} to {to}: {:.0} h reported, {:.0} h in {} sessions",
        n(&totals["reported_s"]) as f64 / 3600.0,
        totals["session_s"].as_f64().unwrap_or_default() / 3600.0,
        n(&totals["sessions"])
    );
    Ok(())
}

/// Polls the api until its DAU per day equals `expected`, then prints the series side by side.
async fn verify_dau(api: &Api<'_>, expected: &BTreeMap<NaiveDate, usize>, timeout: Duration) -> anyhow::Result<()> {
    let (Some(from), Some(to)) = (expected.keys().next(), expected.keys().next_back()) else {
        return Ok(());
    };
    let path = format!("/v1/metrics/active-users?from={from}&to={to}&interval=day");
    let started = Instant::now();
    loop {
        let reply = api.get(&path).await?.unwrap_or_default();
        let rows = reply["series"].as_array().cloned().unwrap_or_default();
        let actual: BTreeMap<NaiveDate, usize> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    row["date"].as_str()?.parse().ok()?,
                    usize::try_from(row["dau"].as_u64()?).ok()?,
                ))
            })
            .collect();
        let expected_nonzero: BTreeMap<_, _> = expected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| (*d, *n))
            .collect();
        let actual_nonzero: BTreeMap<_, _> = actual.iter().filter(|(_, n)| **n > 0).map(|(d, n)| (*d, *n)).collect();
        if actual_nonzero == expected_nonzero {
            println!(
                "\n{:<12} {:>6} {:>6} {:>6}   (DAU: expected by the generator / reported by the api)",
                "day", "DAU", "WAU", "MAU"
            );
            for row in &rows {
                let n = |field: &str| row[field].as_i64().unwrap_or_default();
                println!(
                    "{:<12} {:>6} {:>6} {:>6}",
                    row["date"].as_str().unwrap_or("?"),
                    n("dau"),
                    n("wau"),
                    n("mau")
                );
            }
            let total: usize = expected.values().sum();
            println!(
                "\nDAU correct: the api's series equals the generator's own count on all {} days ({total} user-days), after {:.1} s",
                expected.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            anyhow::bail!("after {timeout:?} the api's DAU still differs from the generator's: expected {expected_nonzero:?}, got {actual_nonzero:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
