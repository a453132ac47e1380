//! `meshrelay blob put|get` (PROTOCOL.md 4.3, 8): upload a file as a blob,
//! signed by a client key, or download one checked against its name.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use meshrelay_client::RelayClient;

#[derive(Debug, Args)]
pub struct BlobArgs {
    #[command(subcommand)]
    pub command: BlobCommand,
}

#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Upload a file; prints `{"sha256", "size", "type", "created"}`. Tag a
    /// payload with `--tag b=<sha256>` to keep the blob referenced.
    Put {
        #[arg(long, env = "MESHRELAY_RELAY", default_value = super::client::DEFAULT_RELAY)]
        relay: String,
        /// File holding the uploader's secret seed (as written by `keygen --out`).
        #[arg(long, env = "MESHRELAY_KEY_FILE")]
        key: PathBuf,
        file: PathBuf,
    },
    /// Download a blob, checked against its name, to a file or standard output.
    Get {
        #[arg(long, env = "MESHRELAY_RELAY", default_value = super::client::DEFAULT_RELAY)]
        relay: String,
        sha256: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Refuse a blob larger than this.
        #[arg(long, default_value_t = 1 << 30)]
        max_bytes: u64,
    },
}

pub async fn run(args: BlobArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BlobCommand::Put { relay, key, file } => {
            let key = crate::node_key::load(&key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let stored = RelayClient::new(&relay)?.put_blob(&key, bytes).await?;
            println!(
                "{}",
                serde_json::json!({
                    "sha256": stored.sha256,
                    "size": stored.size,
                    "type": stored.content_type,
                    "created": stored.created,
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
            let Some(bytes) = RelayClient::new(&relay)?
                .get_blob(&sha256, max_bytes)
                .await?
            else {
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
