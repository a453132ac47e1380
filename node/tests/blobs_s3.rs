//! Blobs on S3 storage (PROTOCOL.md 4.3), against a real S3-compatible server:
//! `s3s-fs` from crates.io on loopback (`.ci/run` installs it), and the real
//! `meshrelay` binary configured by `blob_store = "s3://bucket/prefix"` and the
//! usual AWS variables. A blob of several multipart parts round-trips, ranges
//! cross part boundaries, and refused, interrupted, removed and collected
//! blobs leave no object behind.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, Node, S3Server};
use meshrelay_client::{blob_name, RelayClient};
use meshrelay_federation::httpsig;
use meshrelay_protocol::NodeKey;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const BUCKET: &str = "meshrelay";
const PREFIX: &str = "blobs";

struct Running {
    node: Node,
    admin: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn node_on(s3: &S3Server) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let mut vars = s3.vars(PREFIX);
    vars.push(("MESHRELAY_BLOB_GRACE_SECS".into(), "0".into()));
    vars.push(("MESHRELAY_ADMIN_LISTEN".into(), admin_listen.clone()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start(dir.path(), &vars).await;
    let token = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Running {
        node,
        admin: format!("http://{admin_listen}"),
        token,
        _dir: dir,
    }
}

impl Running {
    async fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> i64 {
    meshrelay_protocol::clock::now_secs()
}

#[tokio::test]
async fn blobs_on_s3_round_trip_in_parts_and_leave_no_stray_objects() {
    let s3 = S3Server::start(BUCKET).await;
    let n = node_on(&s3).await;
    let client = RelayClient::new(&n.node.base).unwrap();
    let key = NodeKey::generate();

    // 12 MiB: three multipart parts of 5, 5 and 2 MiB.
    let big: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha = blob_name(&big);
    let stored = client.put_blob(&key, big.clone()).await.unwrap();
    assert!(stored.created);
    assert_eq!(stored.size, big.len() as u64);
    assert_eq!(
        s3.objects(PREFIX),
        vec![sha.clone()],
        "one object, no temporary left"
    );
    let got = client.get_blob(&sha, 1 << 30).await.unwrap().unwrap();
    assert!(got == big, "the bytes round-trip");
    let boundary = 5 * 1024 * 1024;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/blobs/{sha}", n.node.base))
        .header("range", format!("bytes={}-{}", boundary - 10, boundary + 9))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        &big[boundary - 10..boundary + 10]
    );

    // Bytes that do not hash to the name: refused, nothing kept.
    let wrong = b"not what the name says".to_vec();
    let url = format!("{}/v1/blobs/{}", n.node.base, "ab".repeat(32));
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(&key, "PUT", &url, &mut headers, Some(&wrong), now()).unwrap();
    let resp = reqwest::Client::new()
        .put(&url)
        .headers(headers)
        .body(wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    // An upload cut off midway: its multipart upload is aborted.
    let half = vec![1u8; 6 * 1024 * 1024];
    let cut = blob_name(&half);
    let url = format!("{}/v1/blobs/{cut}", n.node.base);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(&key, "PUT", &url, &mut headers, Some(&half), now()).unwrap();
    let mut head = format!(
        "PUT /v1/blobs/{cut} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        half.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", n.node.port))
        .await
        .unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&half[..half.len() / 2]).await.unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(n.node.json(&format!("/v1/blobs/{cut}")).await.0, 404);
    assert_eq!(s3.objects(PREFIX), vec![sha.clone()]);

    // Removed by the operator: the object goes, re-uploads are refused.
    let (s, v) = n.admin("DELETE", &format!("/admin/v1/blobs/{sha}")).await;
    assert_eq!((s, &v["freed_bytes"]), (200, &Value::from(big.len())));
    assert!(s3.objects(PREFIX).is_empty());
    assert_eq!(n.node.json(&format!("/v1/blobs/{sha}")).await.0, 404);

    // Unreferenced past the grace (0 s): blob_gc deletes the object.
    let loose = b"nobody names me".to_vec();
    client.put_blob(&key, loose.clone()).await.unwrap();
    assert_eq!(s3.objects(PREFIX), vec![blob_name(&loose)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _) = n.admin("POST", "/admin/v1/jobs/blob_gc/run").await;
    assert_eq!(s, 202);
    eventually("blob_gc deletes the object", async || {
        s3.objects(PREFIX).is_empty()
    })
    .await;
    let (_, stats) = n.admin("GET", "/admin/v1/stats").await;
    assert_eq!(stats["blobs"]["storage"], "s3");
    assert_eq!(stats["blobs"]["count"], 0);
}
