//! Starting and stopping a real node for a scenario.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub struct Node {
    pub child: Child,
    pub base: String,
    /// The admin listener's address (`meshrelay sync` asks the node there).
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Start `bin serve` on a free loopback port with a fresh data directory.
    pub async fn start(bin: &Path, vars: &[(&str, String)]) -> anyhow::Result<Node> {
        Self::start_in(bin, tempfile::tempdir()?, vars).await
    }

    /// Start `bin serve` with `dir/data` as its data directory (which may hold
    /// a prepared database); the directory goes when the node is dropped.
    pub async fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        vars: &[(&str, String)],
    ) -> anyhow::Result<Node> {
        let free_port = || -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (port, admin_port) = (free_port()?, free_port()?);
        let admin = format!("127.0.0.1:{admin_port}");
        let mut cmd = serve_command(bin, dir.path(), &format!("127.0.0.1:{port}"), &admin);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let tls = vars.iter().any(|(k, _)| *k == "MESHRELAY_TLS_CERT_FILE");
        let node = Node {
            child,
            base: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            admin,
            _dir: dir,
        };
        wait_ready(&node.base).await?;
        Ok(node)
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn ws_url(&self) -> String {
        let ws = match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => self.base.replacen("http://", "ws://", 1),
        };
        format!("{ws}/v1/ws")
    }

    /// CPU seconds (user + system) the node process has used (Linux).
    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(self.child.id()?)
    }

    /// Resident set size of the node process, in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The anonymous part of the RSS (heap, stacks): what a leak would grow.
    pub fn rss_anon_kib(&self) -> Option<u64> {
        self.status_kib("RssAnon:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        status_kib(self.child.id()?, field)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }
}

static NODE_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Start every node of this run under `taskset -c cpus`.
pub fn pin_nodes_to(cpus: String) {
    let _ = NODE_CPUS.set(cpus);
}

/// `bin serve` listening on `listen` and `admin`, with `dir/data` as its
/// data directory, its output quiet but for warnings.
pub fn serve_command(bin: &Path, dir: &Path, listen: &str, admin: &str) -> Command {
    let mut cmd = match NODE_CPUS.get() {
        // taskset execs the node: the child's pid is the node's.
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("serve")
        .current_dir(dir)
        .env("MESHRELAY_LISTEN", listen)
        .env("MESHRELAY_ADMIN_LISTEN", admin)
        .env("MESHRELAY_DATA_DIR", dir.join("data"))
        // Load generation, not abuse: measure the node, not its limiter.
        .env("MESHRELAY_PUBLISH_RATE", "0")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Wait until the node at `base` answers `/readyz` (at most 20 s).
pub async fn wait_ready(base: &str) -> anyhow::Result<()> {
    // Readiness only; the scenarios trust the certificates they made.
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = probe.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node at {base} did not become ready")
}

/// CPU seconds (user + system) a process has used, from /proc (Linux), in
/// clock ticks of 10 ms.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `RssAnon:`), Linux.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
