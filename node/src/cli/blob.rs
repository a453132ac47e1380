//! `meshrelay blob put|get` (PROTOCOL.md 4.3, 8): upload a file as a blob,
//! signed by a client key, or download one checked against its name; and
//! the uploads behind `meshrelay publish --attach`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use meshrelay_client::{Progress, StoredBlob};
use meshrelay_protocol::NodeKey;

/// Files from this size on show a progress bar (on a terminal).
const BAR_FROM_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub struct BlobArgs {
    #[command(subcommand)]
    pub command: BlobCommand,
}

#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Upload a file; prints `{"sha256", "size", "type", "created", "tag"}`,
    /// `tag` being the `["b", <sha256>]` tag a payload names it with
    /// (`meshrelay publish --tag b=<sha256>`, or `--attach FILE` in one step).
    Put {
        file: PathBuf,
        /// File holding the uploader's secret seed (as written by `keygen --out`).
        #[arg(long, env = "MESHRELAY_KEY_FILE")]
        key: PathBuf,
        #[arg(long, env = "MESHRELAY_RELAY", default_value = super::client::DEFAULT_RELAY)]
        relay: String,
    },
    /// Download a blob, checked against its name, to a file or standard output.
    Get {
        sha256: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[arg(long, env = "MESHRELAY_RELAY", default_value = super::client::DEFAULT_RELAY)]
        relay: String,
        /// Refuse a blob larger than this.
        #[arg(long, default_value_t = 1 << 30)]
        max_bytes: u64,
    },
}

/// A progress bar on standard error for `len` bytes, hidden when small or
/// when standard error is not a terminal.
fn bar(len: u64, what: String) -> indicatif::ProgressBar {
    let bar = if len < BAR_FROM_BYTES || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what);
    bar
}

/// Upload `file` to `relay`, signed by `key`, with a progress bar.
pub async fn upload(relay: &str, key: &NodeKey, file: &Path) -> anyhow::Result<StoredBlob> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let bar = bar(bytes.len() as u64, format!("{} -> {relay}", file.display()));
    let shown = bar.clone();
    let progress: Progress = Arc::new(move |n| shown.set_position(n));
    let stored = super::client::relay(relay)?
        .put_blob_with(key, bytes, Some(progress))
        .await
        .with_context(|| format!("uploading {} to {relay}", file.display()))?;
    bar.finish_and_clear();
    Ok(stored)
}

pub async fn run(args: BlobArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BlobCommand::Put { relay, key, file } => {
            let key = crate::node_key::load(&key)?;
            let stored = upload(&relay, &key, &file).await?;
            println!(
                "{}",
                serde_json::json!({
                    "sha256": stored.sha256,
                    "size": stored.size,
                    "type": stored.content_type,
                    "created": stored.created,
                    "tag": ["b", stored.sha256],
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        BlobCommand::Get {
            relay,
            sha256,
            out,
            max_bytes,
        } => {
            let bar = bar(0, sha256.clone());
            let (at, total) = (bar.clone(), bar.clone());
            let progress: (Progress, Progress) = (
                Arc::new(move |n| at.set_position(n)),
                Arc::new(move |n| {
                    if n >= BAR_FROM_BYTES && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                        total.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    }
                    total.set_length(n)
                }),
            );
            let got = super::client::relay(&relay)?
                .get_blob_with(&sha256, max_bytes, Some(progress))
                .await?;
            bar.finish_and_clear();
            let Some(bytes) = got else {
                eprintln!("{relay} holds no blob {sha256}");
                return Ok(ExitCode::from(1));
            };
            match out {
                Some(path) => std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
