//! The command line (PROTOCOL.md 8): `serve`, `migrate`, `keygen`, `sync`, `admin`, and
//! the client commands `publish`, `subscribe`, `query` and `audit`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshrelay_protocol::NodeKey;

use crate::settings::Settings;

mod admin;
mod audit;
mod blob;
mod client;
mod community;
mod sync;

pub use client::{FilterArgs, PublishArgs, QueryArgs, SubscribeArgs};

#[derive(Debug, Parser)]
#[command(
    name = "meshrelay",
    version,
    about = "A federated relay of signed payloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (defaults: SQLite in ./data, public 0.0.0.0:7700).
    Serve {
        /// TOML settings; MESHRELAY_* variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a new Ed25519 key pair.
    Keygen {
        /// Write the secret seed to this new file (mode 0600) and print the public key;
        /// without it, print both as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a payload and publish it to one or more relays, chaining it to the
    /// author's head.
    Publish(PublishArgs),
    /// Print live payloads matching a filter, one JSON object a line.
    Subscribe(SubscribeArgs),
    /// Print stored payloads matching a filter, one JSON object a line.
    Query(QueryArgs),
    /// Check an author's log across relays against each other and the
    /// receipts kept: invalid entries, forks, omissions, withheld payloads,
    /// rollbacks. Exit 0 clean, 1 with findings, 2 when it could not run.
    Audit(audit::AuditArgs),
    /// Upload or download a blob (PROTOCOL.md 4.3): put, get.
    Blob(blob::BlobArgs),
    /// Govern a community (PROTOCOL.md 9): create, show, grant, ban, unban,
    /// policy, invite, join, moderate.
    Community(community::CommunityArgs),
    /// Ask the running node to run one anti-entropy sync now, with one peer
    /// or with every active or unreachable peer; shows its progress and
    /// prints a summary.
    Sync(sync::SyncArgs),
    /// Call the admin API of a running node: stats, peers, authors, hide,
    /// deliveries, jobs, audit.
    Admin(admin::AdminArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_logging(&settings);
            serve(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_logging(&settings);
            crate::data_dir::prepare(&settings.data_dir)?;
            crate::data_dir::prepare_sqlite(&settings.database_url)?;
            let store = meshrelay_store::Store::connect(&settings.database_url)
                .await
                .context("opening the database")?;
            store.migrate().await.context("applying migrations")?;
            store.close().await;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => {
            let key = NodeKey::generate();
            match out {
                Some(path) => {
                    crate::node_key::write_new(&path, &key)?;
                    println!("{}", key.public_hex());
                }
                None => println!(
                    "{}",
                    serde_json::json!({"public": key.public_hex(), "secret": key.seed_hex()})
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(args) => client::publish(args).await,
        Command::Subscribe(args) => client::subscribe(args).await,
        Command::Query(args) => client::query(args).await,
        Command::Audit(args) => audit::audit(args).await,
        Command::Blob(args) => blob::run(args).await,
        Command::Community(args) => community::run(args).await,
        Command::Sync(args) => sync::sync(args).await,
        Command::Admin(args) => admin::run(args).await,
    }
}

/// Logs go to standard error, one line per event; JSON when `log_format` is
/// json. What loading the settings warned about is logged first.
fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match settings.log_format {
        crate::settings::LogFormat::Json => builder.json().try_init(),
        crate::settings::LogFormat::Text => builder.try_init(),
    };
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
}

/// Build the node, stop it on SIGTERM or SIGINT, and drain before returning.
async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = crate::Application::build(settings).await?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
    app.run_until_stopped().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    /// Clap's own checks of every command's arguments (unique names, valid
    /// defaults), which otherwise only fail when that command is run.
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
