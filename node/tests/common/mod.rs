//! Helpers shared by the tests that run the real `meshrelay` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_meshrelay");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `meshrelay` command with no `MESHRELAY_*` variables inherited.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("MESHRELAY_") {
            cmd.env_remove(k);
        }
    }
    // Many nodes run at once: none may take the default admin port.
    cmd.env("MESHRELAY_ADMIN_LISTEN", "127.0.0.1:0");
    // The client commands' default receipts store lives under the test's
    // directory, never the user's.
    cmd.env("XDG_DATA_HOME", dir.join("xdg-data"));
    cmd
}

pub struct Node {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Node {
    pub async fn start(dir: &Path, vars: &[(&str, &str)]) -> Node {
        Self::start_on(dir, free_port(), vars).await
    }

    /// Start on a given port (a restart keeps its URL, which peers pin).
    pub async fn start_on(dir: &Path, port: u16, vars: &[(&str, &str)]) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut cmd = command(dir);
        cmd.arg("serve")
            .env("MESHRELAY_LISTEN", format!("127.0.0.1:{port}"))
            // Tests publish in bulk; the rate limit has tests of its own.
            .env("MESHRELAY_PUBLISH_RATE", "0")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let tls = vars.iter().any(|(k, _)| *k == "MESHRELAY_TLS_CERT_FILE");
        let node = Node {
            child,
            base: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            port,
        };
        // Readiness only: the tests check certificates themselves.
        let probe = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = probe.get(format!("{}/readyz", node.base)).send().await {
                if r.status() == 200 {
                    return node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node did not become ready; see {}",
                dir.join("node.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("node did not exit within 30 s")
            .unwrap()
    }

    pub async fn json(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// A fresh PostgreSQL schema, and the database URL that uses it.
pub async fn pg_schema(prefix: &str) -> (meshrelay_store::Store, String, String) {
    let base = std::env::var("MESHRELAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("{prefix}_{}", hex::encode(rand::random::<[u8; 6]>()));
    let admin = meshrelay_store::Store::connect(&base)
        .await
        .expect("PostgreSQL is needed");
    admin
        .execute_raw(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (admin, url, schema)
}

/// The `s3s-fs` server binary (a real S3-compatible server from crates.io,
/// which `.ci/run` installs).
pub fn s3s_fs() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cached = Path::new(&home).join(".cache/meshrelay-tools/bin/s3s-fs");
    if cached.exists() {
        return cached;
    }
    panic!(
        "the S3 blob tests need the s3s-fs server: `cargo install s3s-fs --version 0.14.1 --features binary \
         --locked --root ~/.cache/meshrelay-tools` (what .ci/run does), or set S3S_FS_BIN"
    );
}

/// An `s3s-fs` server on a free loopback port with one bucket, stopped when dropped.
pub struct S3Server {
    _child: Child,
    pub root: tempfile::TempDir,
    pub endpoint: String,
    pub bucket: String,
}

pub const S3_ACCESS_KEY: &str = "meshrelay-test";
pub const S3_SECRET_KEY: &str = "meshrelay-test-secret";

impl S3Server {
    pub async fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let port = free_port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        S3Server {
            _child: child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        }
    }

    /// The variables a node needs for `blob_store = s3://<bucket>/<prefix>`.
    pub fn vars(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (
                "MESHRELAY_BLOB_STORE".into(),
                format!("s3://{}/{prefix}", self.bucket),
            ),
            ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
        ]
    }

    /// Every object under `prefix`, by key relative to it, sorted.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        files_under(&self.root.path().join(&self.bucket).join(prefix))
    }
}

/// Every file under `dir`, relative to it, sorted; none when it does not exist.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A test certificate authority and the leaf certificates it signs
/// (`localhost` and `127.0.0.1`), written as PEM files.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meshrelay test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Write `<name>.crt` and `<name>.key` under `dir`; returns their paths
    /// and the certificate's DER.
    pub fn leaf(&self, dir: &Path, name: &str) -> (String, String, Vec<u8>) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (
            c.display().to_string(),
            k.display().to_string(),
            cert.der().to_vec(),
        )
    }

    /// A rustls client configuration trusting this CA only.
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(meshrelay_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }

    /// The same, offering HTTP/1.1 only (a WebSocket upgrade needs it).
    pub fn client_config_http1(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let mut config = (*self.client_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }

    /// Handshake with `addr` (as `localhost`); the server's leaf certificate and the ALPN protocol.
    pub async fn handshake(&self, addr: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (_, conn) = tls.get_ref();
        (
            conn.peer_certificates().unwrap()[0].to_vec(),
            conn.alpn_protocol().map(|p| p.to_vec()),
        )
    }

    /// Over `base` (`https://…`): subscribe over WSS, publish one payload
    /// over HTTPS once the stored matches are done, and receive it live.
    pub async fn wss_receives_what_https_publishes(&self, base: &str, channel: &str) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let wss = format!("{}/v1/ws", base.replacen("https://", "wss://", 1));
        let connector = tokio_tungstenite::Connector::Rustls(self.client_config_http1());
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(wss, None, false, Some(connector))
                .await
                .unwrap();
        let subscribe = serde_json::json!({"op": "subscribe", "sub": "s", "filters": [{"channels": [format!("{channel}/*")]}]});
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
        let key = meshrelay_protocol::NodeKey::generate();
        let p = meshrelay_protocol::Payload::sign(
            &key,
            meshrelay_protocol::payload::Draft {
                seq: 1,
                prev: None,
                created_at: meshrelay_protocol::clock::now_secs() as u64,
                kind: "post".into(),
                channel: format!("{channel}/test"),
                tags: vec![],
                content: "over wss".into(),
            },
        );
        let mut published = false;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a frame over wss")
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if v["op"] == "eose" && !published {
                let r = self
                    .http_client()
                    .post(format!("{base}/v1/payloads"))
                    .body(p.to_json())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                published = true;
            }
            if v["op"] == "payload" {
                assert_eq!(v["payload"]["id"], p.id.as_str());
                return;
            }
        }
    }

    /// A reqwest client trusting this CA.
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

/// Until `check` holds, at most `secs`.
pub async fn eventually(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node's `/metrics` text.
pub async fn metrics_text(node: &Node) -> String {
    reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A metric's value, or 0 when the series does not exist yet.
pub async fn metric(node: &Node, series: &str) -> u64 {
    metrics_text(node)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// The sum of every series whose line starts with `prefix` (any labels).
pub async fn series_sum(node: &Node, prefix: &str) -> u64 {
    metrics_text(node)
        .await
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

pub const FROM_PEER_STORED: &str =
    r#"meshrelay_payloads_ingested_total{via="peer",outcome="stored"} "#;
pub const FROM_PEER_DUP: &str =
    r#"meshrelay_payloads_ingested_total{via="peer",outcome="duplicate"} "#;
