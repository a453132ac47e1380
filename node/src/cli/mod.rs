//! The command line (PROTOCOL.md 8): `serve`, `migrate`, `keygen`, `sync`, `admin`, and
//! the client commands `publish`, `subscribe` and `query`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshrelay_protocol::NodeKey;

use crate::settings::Settings;

mod admin;
mod client;

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
    /// Run one anti-entropy sync now, as this node (its key and database), with
    /// one peer or with every active peer; prints a summary.
    Sync(SyncArgs),
    /// Call the admin API of a running node: stats, peers, authors, hide,
    /// deliveries, jobs, audit.
    Admin(admin::AdminArgs),
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// The peer's URL; without it, every active peer.
    #[arg(long)]
    peer: Option<String>,
    /// Start of the window: Unix seconds, or a duration ago such as `36h` or `7d`
    /// (default: `sync_window_days`).
    #[arg(long)]
    since: Option<String>,
    /// Print the summary as JSON, one object per peer.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_logging(&settings.log_format);
            serve(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_logging(&settings.log_format);
            std::fs::create_dir_all(&settings.data_dir)?;
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
        Command::Sync(args) => sync(args).await,
        Command::Admin(args) => admin::run(args).await,
    }
}

/// `--since`: Unix seconds, or `<n>s|m|h|d` ago.
fn parse_since(s: &str, now: u64) -> anyhow::Result<u64> {
    if let Ok(t) = s.parse::<u64>() {
        return Ok(t);
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .with_context(|| format!("--since {s:?}: Unix seconds or a duration like 36h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--since {s:?}: the unit is one of s, m, h, d"),
    };
    Ok(now.saturating_sub(n.saturating_mul(secs)))
}

/// `meshrelay sync`: open the node's storage and key without serving, reconcile,
/// print a summary. Exits 1 when any peer failed.
async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(args.config.as_deref())?;
    init_logging(&settings.log_format);
    // Nothing is served: the listener only has to bind somewhere harmless.
    settings.listen = "127.0.0.1:0".to_string();
    settings.admin_listen = "127.0.0.1:0".to_string();
    let app = crate::Application::build(settings).await?;
    let state = app.state().clone();
    let fed = state.federation.clone();
    let (default_since, until) = fed.default_sync_window();
    let since = match &args.since {
        Some(s) => parse_since(s, until)?,
        None => default_since,
    };
    let targets = match &args.peer {
        Some(url) => vec![fed.sync_target_by_url(url).await?],
        None => fed.sync_targets().await?,
    };
    if targets.is_empty() {
        eprintln!("no active peers to sync with");
    }
    let mut failed = false;
    for target in &targets {
        let pb = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(target.url.clone());
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        let ingest = crate::ingest::PeerIngest(state.clone());
        let progress = Bar(pb.clone());
        let result = fed
            .sync_peer(&ingest, target, (since, until), Some(&progress))
            .await;
        pb.finish_and_clear();
        match result {
            Ok(r) if args.json => println!("{}", serde_json::to_string(&r)?),
            Ok(r) => println!(
                "{url}: have {have}, need {need}; fetched {fetched}, pushed {pushed}, rejected {rejected}; \
                 {rounds} round trips in {sessions} sessions ({splits} splits), \
                 {sync_kb:.1} KB reconciling + {xfer_kb:.1} KB moving payloads, {secs:.2} s",
                url = target.url,
                have = r.have,
                need = r.need,
                fetched = r.fetched,
                pushed = r.pushed,
                rejected = r.rejected,
                rounds = r.rounds,
                sessions = r.sessions,
                splits = r.splits,
                sync_kb = r.sync_bytes as f64 / 1000.0,
                xfer_kb = r.transfer_bytes as f64 / 1000.0,
                secs = r.seconds,
            ),
            Err(e) => {
                failed = true;
                eprintln!("{}: sync failed: {e:#}", target.url);
            }
        }
    }
    drop(state);
    app.close().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A sync's progress on a terminal.
struct Bar(indicatif::ProgressBar);

impl meshrelay_federation::sync::Progress for Bar {
    fn grow(&self, n: u64) {
        self.0.set_length(self.0.length().unwrap_or(0) + n);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn phase(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

/// Logs go to standard error, one line per event; JSON when `log_format` is json.
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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
