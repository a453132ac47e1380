//! Blobs: upload and download throughput of 1 MiB and 64 MiB blobs on the
//! filesystem storage and on S3 (a real `s3s-fs` server on loopback, when
//! given), with the node's CPU time per MiB and its RSS during an upload:
//! a streamed upload must not grow the node by the blob's size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshrelay_client::RelayClient;
use meshrelay_protocol::NodeKey;
use serde_json::json;

use crate::node::{cpu_secs, status_kib, Node};
use crate::stats::spread;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Blob sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    sizes_mib: Vec<u64>,
    /// The `s3s-fs` binary: also measure `blob_store = s3://...` against it.
    #[arg(long, env = "S3S_FS_BIN")]
    s3s_fs: Option<PathBuf>,
}

const MIB: u64 = 1024 * 1024;

struct S3Server {
    _child: tokio::process::Child,
    _root: tempfile::TempDir,
    endpoint: String,
}

async fn start_s3(bin: &Path) -> anyhow::Result<S3Server> {
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("bench"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "bench", "--secret-key", "bench-secret"])
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("s3s-fs did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(S3Server {
        _child: child,
        _root: root,
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

pub async fn run(node_bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let largest = args.sizes_mib.iter().copied().max().unwrap_or(1) * MIB;
    let s3 = match &args.s3s_fs {
        Some(bin) => Some(start_s3(bin).await?),
        None => {
            eprintln!("no --s3s-fs: measuring the filesystem storage only");
            None
        }
    };
    let mut stores = vec![("fs", Vec::new())];
    if let Some(s3) = &s3 {
        stores.push((
            "s3",
            vec![
                ("MESHRELAY_BLOB_STORE", "s3://bench/blobs".to_string()),
                ("AWS_ACCESS_KEY_ID", "bench".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "bench-secret".to_string()),
                ("AWS_REGION", "us-east-1".to_string()),
                ("AWS_ENDPOINT_URL", s3.endpoint.clone()),
            ],
        ));
    }
    for (store, mut vars) in stores {
        vars.push(("MESHRELAY_MAX_BLOB_BYTES", largest.to_string()));
        vars.push(("MESHRELAY_BLOB_QUOTA_BYTES", (largest * 64).to_string()));
        vars.push(("MESHRELAY_REQUEST_TIMEOUT_SECS", "300".to_string()));
        let node = Node::start(node_bin, &vars).await?;
        let pid = node.child.id().context("the node runs")?;
        let client = RelayClient::new(&node.base)?;
        for &mib in &args.sizes_mib {
            let (mut up, mut down, mut up_cpu, mut down_cpu, mut growth) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let bytes: Vec<u8> = (0..mib * MIB).map(|_| rand::random::<u8>()).collect();
                let key = NodeKey::generate();
                let before_rss = node.rss_kib().unwrap_or(0);
                let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before_rss));
                let sampler = {
                    let peak = peak.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Some(kib) = status_kib(pid, "VmRSS:") {
                                peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                };
                let cpu0 = cpu_secs(pid).unwrap_or(0.0);
                let t = Instant::now();
                let stored = client.put_blob(&key, bytes.clone()).await?;
                let up_secs = t.elapsed().as_secs_f64();
                let cpu1 = cpu_secs(pid).unwrap_or(0.0);
                sampler.abort();
                let t = Instant::now();
                let got = client.get_blob(&stored.sha256, mib * MIB).await?;
                let down_secs = t.elapsed().as_secs_f64();
                let cpu2 = cpu_secs(pid).unwrap_or(0.0);
                if got.as_deref() != Some(&bytes[..]) {
                    bail!("the {mib} MiB blob did not round-trip");
                }
                up.push(mib as f64 / up_secs);
                down.push(mib as f64 / down_secs);
                up_cpu.push((cpu1 - cpu0) * 1e3 / mib as f64);
                down_cpu.push((cpu2 - cpu1) * 1e3 / mib as f64);
                let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
                growth.push(peak.saturating_sub(before_rss) as f64 / 1024.0);
            }
            println!(
                "{}",
                json!({
                    "scenario": "blobs",
                    "store": store,
                    "size_mib": mib,
                    "runs": runs,
                    "upload_mib_per_sec": spread(&up),
                    "download_mib_per_sec": spread(&down),
                    "node_cpu_ms_per_mib_upload": spread(&up_cpu),
                    "node_cpu_ms_per_mib_download": spread(&down_cpu),
                    "node_rss_growth_mib_during_upload": spread(&growth),
                })
            );
        }
        node.stop().await?;
    }
    Ok(())
}
