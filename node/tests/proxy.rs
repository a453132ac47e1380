//! The node behind a TLS-terminating proxy, with the example configurations
//! of `docs/examples` run for real: nginx and Caddy from Debian (`.ci/run`
//! installs them) in front of the `meshrelay` binary on loopback. Through
//! each: HTTPS requests, a WSS subscription that receives a live payload,
//! and a signed blob upload, whose signature is checked against the
//! node's `public_url` (the proxy's URL), not the loopback address.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, Node, TestCa};
use meshrelay_federation::httpsig;
use meshrelay_protocol::NodeKey;
use serde_json::Value;
use tokio::process::{Child, Command};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example no longer has {from:?}");
    text.replace(from, to)
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn binary(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{name} is needed for the proxy tests: apt-get install nginx-light caddy (what .ci/run does)");
}

async fn nginx(dir: &Path, ca: &TestCa, port: u16, node_port: u16) -> Child {
    let site = replaced(
        &example("nginx-meshrelay.conf"),
        "proxy_pass http://127.0.0.1:7700;",
        &format!("proxy_pass http://127.0.0.1:{node_port};"),
    );
    nginx_with(dir, ca, port, site).await
}

/// nginx serving `site` (an example, its upstreams already set) on `port`
/// with a certificate of the test's CA.
async fn nginx_with(dir: &Path, ca: &TestCa, port: u16, mut site: String) -> Child {
    let (cert, key, _) = ca.leaf(dir, "proxy");
    site = replaced(
        &site,
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{port} ssl http2;"),
    );
    site = replaced(
        &site,
        "/etc/letsencrypt/live/relay.example.org/fullchain.pem",
        &cert,
    );
    site = replaced(
        &site,
        "/etc/letsencrypt/live/relay.example.org/privkey.pem",
        &key,
    );
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = format!(
        "user root;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n{site}\n}}\n",
        p = prefix.display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let child = Command::new(binary("nginx"))
        .args(["-p", &prefix.display().to_string(), "-c"])
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        // One process (master_process off), so killing it leaves no worker
        // behind holding the test's output open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting nginx");
    wait_for_port(port, "nginx").await;
    child
}

async fn caddy(dir: &Path, ca: &TestCa, port: u16, node_port: u16) -> Child {
    let (cert, key, _) = ca.leaf(dir, "proxy");
    let mut site = example("Caddyfile");
    site = replaced(
        &site,
        "relay.example.org {",
        &format!("https://localhost:{port} {{\n\ttls {cert} {key}"),
    );
    site = replaced(
        &site,
        "reverse_proxy 127.0.0.1:7700",
        &format!("reverse_proxy 127.0.0.1:{node_port}"),
    );
    // The test's own: no admin endpoint, no certificate management.
    let file = dir.join("Caddyfile");
    std::fs::write(
        &file,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}"),
    )
    .unwrap();
    let child = Command::new(binary("caddy"))
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("starting caddy");
    wait_for_port(port, "caddy").await;
    child
}

/// HTTPS, WSS and a signed upload through the proxy at `public`.
async fn through(ca: &TestCa, public: &str) {
    let https = ca.http_client();
    let info: Value = https
        .get(format!("{public}/v1/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["url"], public);

    ca.wss_receives_what_https_publishes(public, "proxy").await;

    let key = NodeKey::generate();
    // A signed upload: its @target-uri is the proxy's URL, as public_url says.
    let bytes = vec![42u8; 3 * 1024 * 1024];
    let name = meshrelay_client::blob_name(&bytes);
    let url = format!("{public}/v1/blobs/{name}");
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(
        &key,
        "PUT",
        &url,
        &mut headers,
        Some(&bytes),
        meshrelay_protocol::clock::now_secs(),
    )
    .unwrap();
    let r = https
        .put(&url)
        .headers(headers)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

async fn node_behind(dir: &Path, public: &str) -> (Node, u16) {
    let port = free_port();
    let node = Node::start_on(dir, port, &[("MESHRELAY_PUBLIC_URL", public)]).await;
    (node, port)
}

#[tokio::test]
async fn the_nginx_example_proxies_https_wss_and_signed_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let proxy_port = free_port();
    let public = format!("https://localhost:{proxy_port}");
    let (_node, node_port) = node_behind(dir.path(), &public).await;
    let _nginx = nginx(dir.path(), &ca, proxy_port, node_port).await;
    through(&ca, &public).await;
}

#[tokio::test]
async fn the_caddy_example_proxies_https_wss_and_signed_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let proxy_port = free_port();
    let public = format!("https://localhost:{proxy_port}");
    let (_node, node_port) = node_behind(dir.path(), &public).await;
    let _caddy = caddy(dir.path(), &ca, proxy_port, node_port).await;
    through(&ca, &public).await;
}

/// docs/examples/nginx-meshrelay-cluster.conf in front of two processes of
/// one node on PostgreSQL (PROTOCOL.md 8.1): requests and WebSocket
/// upgrades go to either process, and what is published through one
/// reaches a subscription held on the other.
#[tokio::test]
async fn the_nginx_cluster_example_spreads_one_node_over_two_processes() {
    let (admin, url, schema) = common::pg_schema("meshrelay_nginx").await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = TestCa::new();
    let proxy_port = free_port();
    let public = format!("https://localhost:{proxy_port}");
    let key_file = da.path().join("node.key");
    std::fs::write(&key_file, NodeKey::generate().seed_hex()).unwrap();
    let key_file = key_file.display().to_string();
    let vars = [
        ("MESHRELAY_DATABASE_URL", url.as_str()),
        ("MESHRELAY_NODE_KEY_FILE", key_file.as_str()),
        ("MESHRELAY_PUBLIC_URL", public.as_str()),
        ("MESHRELAY_ADMIN_TOKEN", "nginx-cluster-token"),
        ("MESHRELAY_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start_on(da.path(), pa, &vars).await;
    let b = Node::start_on(db.path(), pb, &vars).await;
    let mut site = example("nginx-meshrelay-cluster.conf");
    site = replaced(
        &site,
        "server 127.0.0.1:7700;",
        &format!("server 127.0.0.1:{pa};"),
    );
    site = replaced(
        &site,
        "server 127.0.0.1:7710;",
        &format!("server 127.0.0.1:{pb};"),
    );
    let _nginx = nginx_with(da.path(), &ca, proxy_port, site).await;
    // Round robin: the subscription lands on one process and the publish
    // on the next, so the payload crosses processes.
    for round in 0..4 {
        ca.wss_receives_what_https_publishes(&public, &format!("cluster-{round}"))
            .await;
    }
    // Each process served a part: publishes on one, the subscriptions (and
    // so the deliveries of what the other stored) on the other, or both.
    let served = |n: &Node| {
        let base = n.base.clone();
        async move {
            let text = reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let sum = |prefix: &str| {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>()
            };
            (
                sum("meshrelay_payloads_ingested_total{via=\"http\""),
                sum("meshrelay_live_deliveries_total"),
            )
        }
    };
    let (ingest_a, live_a) = served(&a).await;
    let (ingest_b, live_b) = served(&b).await;
    assert_eq!((ingest_a + ingest_b, live_a + live_b), (4, 4));
    assert!(
        ingest_a + live_a > 0 && ingest_b + live_b > 0,
        "one process served everything: a {ingest_a}/{live_a}, b {ingest_b}/{live_b}"
    );
    for n in [a, b] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
    admin
        .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    admin.close().await;
}
