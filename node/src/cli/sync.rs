//! `meshrelay sync`: ask the running node to reconcile now (its admin API's
//! `POST /admin/v1/sync`), show its progress, and print a summary per peer.
//! The node does the work, so what it fetches reaches its live subscribers.

use std::process::ExitCode;

use anyhow::Context;
use meshrelay_admin_api::api::sync::{SyncLine, SyncRequest};
use meshrelay_federation::sync::Report;

use super::admin::{client, NodeConnection};

/// Longest line the node's answer may have.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    node: NodeConnection,
    /// The peer's URL; without it, every active or unreachable peer.
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

/// Exits 1 when any peer failed.
pub async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let c = client(&args.node)?;
    let now = meshrelay_protocol::clock::now_wire_secs();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()?;
    let req = SyncRequest {
        peer: args.peer.clone(),
        since,
    };
    let mut resp = c.stream("/admin/v1/sync", &req).await?;
    let mut shown = Shown::new(args.json);
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the node's answer")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line: SyncLine =
                serde_json::from_slice(&line).context("a line of the node's answer")?;
            if let Some(code) = shown.take(line)? {
                return Ok(code);
            }
        }
        anyhow::ensure!(
            pending.len() <= MAX_LINE,
            "the node's answer has a line over {MAX_LINE} bytes"
        );
    }
    anyhow::bail!("the node's answer ended before the sync did")
}

/// What the terminal shows while the node syncs.
struct Shown {
    json: bool,
    bar: Option<indicatif::ProgressBar>,
    failed: bool,
}

impl Shown {
    fn new(json: bool) -> Self {
        Self {
            json,
            bar: None,
            failed: false,
        }
    }

    /// Show one line; the exit code once the last line came.
    fn take(&mut self, line: SyncLine) -> anyhow::Result<Option<ExitCode>> {
        match line {
            SyncLine::Start { url, .. } => self.bar = Some(self.new_bar(url)),
            SyncLine::Progress {
                done, total, phase, ..
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(phase);
                }
            }
            SyncLine::Report(r) => {
                self.clear();
                if self.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}", summary(&r));
                }
            }
            SyncLine::Error { url, message, .. } => {
                self.clear();
                self.failed = true;
                eprintln!("{url}: sync failed: {message}");
            }
            SyncLine::Done { peers, .. } => {
                if peers == 0 {
                    eprintln!("no active peers to sync with");
                }
                let code = if self.failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                };
                return Ok(Some(code));
            }
        }
        Ok(None)
    }

    fn new_bar(&self, url: String) -> indicatif::ProgressBar {
        let bar = if self.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(url);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// One peer's report as a line of text.
fn summary(r: &Report) -> String {
    format!(
        "{peer}: have {have}, need {need}; fetched {fetched}, pushed {pushed}, rejected {rejected}; \
         {rounds} round trips in {sessions} sessions ({splits} splits), \
         {sync_kb:.1} KB reconciling + {xfer_kb:.1} KB moving payloads, {secs:.2} s",
        peer = r.peer,
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
    )
}

/// `--since`: Unix seconds, or a duration before `now` (`90s`, `15m`, `36h`, `7d`).
pub fn parse_since(s: &str, now: u64) -> anyhow::Result<u64> {
    if let Ok(t) = s.parse::<u64>() {
        return Ok(t);
    }
    let secs =
        parse_duration(s).with_context(|| format!("--since {s:?}: Unix seconds or a duration"))?;
    Ok(now.saturating_sub(secs))
}

/// A duration like `90s`, `15m`, `36h` or `7d`, in seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 36h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("{s:?}: the unit of a duration is one of s, m, h, d"),
    };
    Ok(n.saturating_mul(secs))
}
