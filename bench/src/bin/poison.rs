//! `poison`: publishes messages the workers cannot use straight into a project's event subject,
//! as a bug upstream of them would (ingest itself accepts nothing the stores refuse): payloads
//! that are not JSON, and arrays whose one element is not an event. scripts/chaos injects them
//! under load and then expects exactly one dead letter each, and every other event counted.

#![allow(clippy::print_stdout)] // A command-line tool: what it published goes to stdout.

use anyhow::Context as _;
use clap::Parser;
use common::stream::Subjects;

#[derive(Parser, Debug)]
#[command(name = "poison", about = "Publish messages the workers must dead-letter.")]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, env = "NATS_SUBJECT_PREFIX")]
    subject_prefix: String,
    #[arg(long)]
    project: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 4)]
    count: usize,
    /// Distinguishes this run's messages from another's (their `Nats-Msg-Id`s).
    #[arg(long, default_value = "poison")]
    tag: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(common::config::servers(&args.nats_url))
        .await
        .context("cannot connect to NATS")?;
    let js = async_nats::jetstream::new(client);
    let subject = Subjects::new(&args.subject_prefix).events(&args.project);
    for n in 0..args.count {
        let payload = if n % 2 == 0 {
            format!("not json {n}")
        } else {
            format!(
                r#"[{{"project": "{}", "message_id": "{}-{n}", "event": "no type, no time"}}]"#,
                args.project, args.tag
            )
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}-{n}", args.tag).as_str());
        js.publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .context("cannot publish")?
            .await
            .context("JetStream did not acknowledge")?;
    }
    println!("published {} poison message(s) to {subject}", args.count);
    Ok(())
}
