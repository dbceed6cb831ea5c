//! `api`: telemetry, then config, then build, then serve until SIGINT/SIGTERM. `api keys …` manages
//! the API keys stored in PostgreSQL instead (see `api keys --help`), `api origins …` the browser
//! origins allowed to send each project's events to ingest.

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Subcommand as _};
use common::{config::PostgresConfig, keys, origins, project::ProjectId};

/// Subcommands besides serving (which is what `api` with no subcommand does, as always).
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create, list and revoke API keys (write keys for ingest, read keys for this api).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        postgres: PostgresConfig,
    },
    /// Set and list the browser origins allowed to send a project's events to ingest (CORS).
    Origins {
        #[command(subcommand)]
        action: OriginsAction,
        #[command(flatten)]
        postgres: PostgresConfig,
    },
}

#[derive(clap::Subcommand, Debug)]
enum OriginsAction {
    /// Replaces the project's allow-list; with no `--origin`, every origin may send again. Ingest
    /// applies it within its key cache's time to live.
    Set {
        #[arg(long)]
        project: ProjectId,
        /// `https://host[:port]`, repeated for each page origin.
        #[arg(long = "origin", value_parser = origins::normalise)]
        origins: Vec<String>,
    },
    /// Prints the project's allowed origins, one per line (none: every origin is allowed).
    List {
        #[arg(long)]
        project: ProjectId,
    },
}

#[derive(clap::Subcommand, Debug)]
enum KeysAction {
    /// Creates a key and prints it once; only its SHA-256 is stored.
    Create {
        /// The project (tenant) the key sends events to or reads.
        #[arg(long)]
        project: ProjectId,
        /// `write` (ingest) or `read` (api).
        #[arg(long, value_enum)]
        scope: keys::Scope,
    },
    /// Revokes a key by id; services stop accepting it within their key cache's time to live.
    Revoke {
        #[arg(long)]
        id: keys::KeyId,
    },
    /// Lists a project's keys (ids, scopes, dates; never the keys).
    List {
        #[arg(long)]
        project: ProjectId,
    },
}

/// The whole command line: the serve settings of [`api::Config`], or a subcommand.
fn cli() -> clap::Command {
    Command::augment_subcommands(
        api::Config::command()
            .subcommand_negates_reqs(true)
            .args_conflicts_with_subcommands(true),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = cli().get_matches();
    if matches.subcommand().is_some() {
        let command = Command::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        return run_command(command).await;
    }
    // First: a SIGTERM from here on is a clean stop, even while still connecting.
    let shutdown = common::shutdown::shutdown_token();
    let config = api::Config::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    common::telemetry::init_tracing();
    let metrics = common::telemetry::install_metrics_recorder()?;
    api::instruments::describe();
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin address {}", config.admin_addr))?;
    let app = api::App::build(config).await?;
    tokio::spawn(common::admin::serve(
        admin_listener,
        app.admin_state(Some(metrics)),
        shutdown.clone(),
    ));
    app.serve(listener, shutdown).await
}

/// Runs `api keys …` or `api origins …`: applies the migrations (so the tables exist), then does
/// the one thing asked.
async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keys { action, postgres } => keys_command(action, &connect(&postgres).await?).await,
        Command::Origins { action, postgres } => origins_command(action, &connect(&postgres).await?).await,
    }
}

/// One connection, with the schema migrated by its one owner (common::schema), which the workers
/// also apply at start.
async fn connect(postgres: &PostgresConfig) -> anyhow::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&postgres.url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}",
                common::config::redact(&postgres.url)
            )
        })?;
    common::schema::migrate(&pool).await?;
    Ok(pool)
}

/// `api keys …`. Output is for people and scripts alike: `create` prints the key alone on its
/// first line.
#[allow(clippy::print_stdout)]
async fn keys_command(action: KeysAction, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    match action {
        KeysAction::Create { project, scope } => {
            let (key, secret) = keys::create(pool, &project, scope)
                .await
                .context("cannot create the key")?;
            println!("{secret}");
            println!(
                "id={} project={} scope={} (store the key now: it is not shown again)",
                key.id, key.project, key.scope
            );
        }
        KeysAction::Revoke { id } => {
            let revoked = keys::revoke(pool, id).await.context("cannot revoke the key")?;
            anyhow::ensure!(revoked, "no unrevoked key has id {id}");
            println!("revoked {id}");
        }
        KeysAction::List { project } => {
            for key in keys::list(pool, &project).await.context("cannot list the keys")? {
                let revoked = key.revoked_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{}\t{}\t{}\tcreated={}\trevoked={revoked}",
                    key.id,
                    key.project,
                    key.scope,
                    key.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(())
}

/// `api origins …`.
#[allow(clippy::print_stdout)]
async fn origins_command(action: OriginsAction, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    match action {
        OriginsAction::Set { project, origins } => {
            origins::set(pool, &project, &origins)
                .await
                .context("cannot set the origins")?;
            if origins.is_empty() {
                println!("project {project}: every origin may send events");
            } else {
                println!(
                    "project {project}: only {} may send events from a browser",
                    origins.join(", ")
                );
            }
        }
        OriginsAction::List { project } => {
            for origin in origins::allowed(pool, &project)
                .await
                .context("cannot list the origins")?
            {
                println!("{origin}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_with_its_subcommands_is_well_formed() {
        super::cli().debug_assert();
    }

    #[test]
    fn serving_needs_no_subcommand_and_keys_need_no_serve_settings() {
        use clap::FromArgMatches as _;
        let matches = super::cli()
            .try_get_matches_from(["api", "keys", "create", "--project", "p", "--scope", "write"])
            .unwrap();
        assert!(matches!(
            super::Command::from_arg_matches(&matches).unwrap(),
            super::Command::Keys {
                action: super::KeysAction::Create { .. },
                ..
            }
        ));
        let matches = super::cli()
            .try_get_matches_from(["api", "--read-key", "rk", "--project", "p"])
            .unwrap();
        assert!(matches.subcommand().is_none());
        assert_eq!(api::Config::from_arg_matches(&matches).unwrap().read_key, "rk");
    }

    #[test]
    fn origins_are_normalised_on_the_command_line_and_bad_ones_refused() {
        use clap::FromArgMatches as _;
        let matches = super::cli()
            .try_get_matches_from([
                "api",
                "origins",
                "set",
                "--project",
                "p",
                "--origin",
                "HTTPS://Learn.Example/",
            ])
            .unwrap();
        let super::Command::Origins {
            action: super::OriginsAction::Set { origins, .. },
            ..
        } = super::Command::from_arg_matches(&matches).unwrap()
        else {
            panic!("not `origins set`");
        };
        assert_eq!(origins, ["https://learn.example"]);
        assert!(super::cli()
            .try_get_matches_from([
                "api",
                "origins",
                "set",
                "--project",
                "p",
                "--origin",
                "learn.example/path"
            ])
            .is_err());
        // Projects are checked where they enter (they become subjects and key parts).
        let error = super::cli()
            .try_get_matches_from(["api", "keys", "create", "--project", "a.b", "--scope", "write"])
            .unwrap_err();
        assert!(error.to_string().contains("1 to 64 letters"), "{error}");
    }
}
