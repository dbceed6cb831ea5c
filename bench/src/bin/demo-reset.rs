//! `demo-reset`: deletes the demo's JetStream stream (and its dead-letter stream) and MongoDB
//! database so that a rerun of `./scripts/demo` starts from nothing (the script recreates the
//! PostgreSQL database itself).

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "demo-reset", about = "Delete the demo's stream and MongoDB database.")]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long)]
    stream: String,
    #[arg(long, env = "MONGO_URI", default_value = "mongodb://127.0.0.1:27017")]
    mongo_uri: String,
    #[arg(long)]
    mongo_db: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(common::config::servers(&args.nats_url))
        .await
        .context("cannot connect to NATS")?;
    let js = async_nats::jetstream::new(client);
    for stream in [args.stream.clone(), format!("{}_DLQ", args.stream)] {
        if js.get_stream(&stream).await.is_ok() {
            js.delete_stream(&stream)
                .await
                .with_context(|| format!("cannot delete the stream {stream}"))?;
        }
    }
    let mongo = mongodb::Client::with_uri_str(&args.mongo_uri)
        .await
        .context("invalid MongoDB URI")?;
    mongo
        .database(&args.mongo_db)
        .drop()
        .await
        .context("cannot drop the MongoDB database")?;
    Ok(())
}
