//! Blobs (PROTOCOL.md 4.3) on the filesystem storage: uploads and every
//! refusal in the documented order, serving rules, the admin routes,
//! `blob_gc`, and mirroring between two nodes. The same on S3 runs against a
//! real S3-compatible server in `tests/blobs_s3.rs`.

use std::time::Duration;

use meshrelay_client::{blob_name, RelayClient};
use meshrelay_federation::httpsig;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::{admin, eventually};
use crate::common::S3Server;
use crate::helpers::{now, spawn_app_with, TestApp};

/// Which storage a test's node keeps its blobs in.
#[derive(Clone, Copy, Debug)]
enum Store {
    Fs,
    S3,
}

/// A node on one storage, and the S3 server behind it.
struct Ctx {
    app: TestApp,
    s3: Option<S3Server>,
}

impl Ctx {
    async fn start(store: Store, vars: &[(&str, &str)]) -> Ctx {
        let s3 = match store {
            Store::Fs => None,
            Store::S3 => Some(S3Server::start("meshrelay").await),
        };
        let mut all: Vec<(String, String)> =
            s3.as_ref().map(|s| s.vars("blobs")).unwrap_or_default();
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Ctx {
            app: spawn_app_with(&all).await,
            s3,
        }
    }

    /// Everything the storage holds, by name relative to its root (blobs
    /// by their sharded path or key, temporaries under `tmp/`).
    fn objects(&self) -> Vec<String> {
        match &self.s3 {
            Some(s3) => s3.objects("blobs"),
            None => crate::common::files_under(&self.app.state.settings.data_dir.join("blobs")),
        }
    }
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// A PUT of `body` to the blob named `name`, signed by `key` over `signed`
/// (the bytes the Content-Digest is computed from).
async fn put_signed(
    app: &TestApp,
    key: &NodeKey,
    name: &str,
    signed: &[u8],
    body: Vec<u8>,
) -> (u16, Value) {
    let url = format!("{}/v1/blobs/{name}", app.base);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(key, "PUT", &url, &mut headers, Some(signed), now() as i64).unwrap();
    let resp = app
        .client
        .put(&url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put(app: &TestApp, key: &NodeKey, bytes: &[u8]) -> (u16, Value) {
    put_signed(app, key, &blob_name(bytes), bytes, bytes.to_vec()).await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn with_blob(key: &NodeKey, seq: u64, sha: &str) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: now(),
            kind: "post".into(),
            channel: "pics/cats".into(),
            tags: vec![vec!["b".into(), sha.into()]],
            content: "look".into(),
        },
    )
}

/// Send `head` and then `body` over a raw connection; the status line of the answer.
async fn raw(app: &TestApp, head: String, body: &[u8], then_close: bool) -> String {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    if then_close {
        s.shutdown().await.unwrap();
        drop(s);
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the node answers without waiting for the body")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn an_upload_is_stored_once_and_served_with_its_type_and_cache_headers(store: Store) {
    let ctx = Ctx::start(store, &[]).await;
    let app = &ctx.app;
    let key = NodeKey::generate();
    let client = RelayClient::new(&app.base).unwrap();
    let stored = client.put_blob(&key, PNG.to_vec()).await.unwrap();
    let sha = blob_name(PNG);
    assert_eq!(
        (
            stored.sha256.as_str(),
            stored.size,
            stored.content_type.as_str(),
            stored.created
        ),
        (sha.as_str(), PNG.len() as u64, "image/png", true)
    );
    // A second upload, by anyone, answers 200 with the same body.
    let again = client
        .put_blob(&NodeKey::generate(), PNG.to_vec())
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.content_type, "image/png");
    assert_eq!(
        client.get_blob(&sha, 1 << 20).await.unwrap().as_deref(),
        Some(PNG)
    );

    let resp = app.get(&format!("/v1/blobs/{sha}")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["content-length"], PNG.len().to_string().as_str());
    assert!(h.get("content-disposition").is_none());

    let head = app
        .client
        .head(format!("{}/v1/blobs/{sha}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        PNG.len().to_string().as_str()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    let ranged = app
        .client
        .get(format!("{}/v1/blobs/{sha}", app.base))
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 1-3/{}", PNG.len()).as_str()
    );
    assert_eq!(&ranged.bytes().await.unwrap()[..], &PNG[1..4]);
    let suffix = app
        .client
        .get(format!("{}/v1/blobs/{sha}", app.base))
        .header("range", "bytes=-4")
        .send()
        .await
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(&suffix.bytes().await.unwrap()[..], &PNG[PNG.len() - 4..]);
    let outside = app
        .client
        .get(format!("{}/v1/blobs/{sha}", app.base))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 416);
    assert_eq!(
        outside.headers()["content-range"],
        format!("bytes */{}", PNG.len()).as_str()
    );
    assert_eq!(outside.headers()["x-content-type-options"], "nosniff");
    let cached = app
        .client
        .get(format!("{}/v1/blobs/{sha}", app.base))
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());

    // Markup is a download; text is text.
    let html = b"<!doctype html><script>alert(1)</script>";
    assert_eq!(
        put(app, &key, html).await.1["type"],
        "application/octet-stream"
    );
    let resp = app.get(&format!("/v1/blobs/{}", blob_name(html))).await;
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let text = b"meeting at noon\n";
    assert_eq!(put(app, &key, text).await.1["type"], "text/plain");
    let resp = app.get(&format!("/v1/blobs/{}", blob_name(text))).await;
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");

    let (s, v) = app.get_json(&format!("/v1/blobs/{}", "0".repeat(64))).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = app.get_json("/v1/blobs/NOT-HEX").await;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    // A 20 MiB declared body is refused from its head, before it is sent.
    let head = format!(
        "PUT /v1/blobs/{sha} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        20 * 1024 * 1024
    );
    assert!(raw(app, head, b"", false).await.contains("413"));
    let (_, info) = app.get_json("/v1/info").await;
    assert_eq!(info["limits"]["max_blob_bytes"], 16 * 1024 * 1024);
    assert_eq!(info["limits"]["blob_quota_bytes"], 256 * 1024 * 1024);
}

async fn uploads_are_refused_in_the_documented_order_and_keep_nothing(store: Store) {
    let ctx = Ctx::start(
        store,
        &[
            ("MESHRELAY_MAX_BLOB_BYTES", "2000"),
            ("MESHRELAY_BLOB_QUOTA_BYTES", "3000"),
        ],
    )
    .await;
    let app = &ctx.app;
    let key = NodeKey::generate();
    let a = vec![1u8; 1500];
    let b = vec![2u8; 1500];

    // The name first, then the size from Content-Length, before the signature.
    let (s, v) = put_signed(app, &key, "ABC", &a, a.clone()).await;
    let app = &ctx.app;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let big = vec![3u8; 2001];
    let (s, v) = app
        .client
        .put(format!("{}/v1/blobs/{}", app.base, blob_name(&big)))
        .body(big.clone())
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 413, "too_large before the (missing) signature");
    assert_eq!(code(&v.json().await.unwrap()), "too_large");
    // Declared too large, body never sent: answered at once.
    let head = format!(
        "PUT /v1/blobs/{} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n",
        "a".repeat(64)
    );
    assert!(raw(app, head, b"", false).await.contains("413"));

    // Unsigned, and signed for another body.
    let resp = app
        .client
        .put(format!("{}/v1/blobs/{}", app.base, blob_name(&a)))
        .body(a.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(code(&resp.json().await.unwrap()), "auth_failed");
    let (s, v) = put_signed(app, &key, &blob_name(&b), &a, b.clone()).await;
    assert_eq!((s, code(&v)), (401, "auth_failed"), "{v}");
    // Signed and digested right, but the bytes are not the name.
    let (s, v) = put_signed(app, &key, &blob_name(&b), &a, a.clone()).await;
    assert_eq!((s, code(&v)), (422, "invalid_id"), "{v}");

    // Chunked (no Content-Length) past the limit: the node stops reading.
    let url = format!("{}/v1/blobs/{}", app.base, blob_name(&big));
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(&key, "PUT", &url, &mut headers, Some(&big), now() as i64).unwrap();
    let chunks = futures_util::stream::iter(
        big.chunks(500)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = app
        .client
        .put(&url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // Quota: 1500 + 1500 fills 3000 exactly; one byte more is refused; a
    // held blob costs nothing again.
    assert_eq!(put(app, &key, &a).await.0, 201);
    assert_eq!(put(app, &key, &b).await.0, 201);
    let (s, v) = put(app, &key, &[9u8]).await;
    assert_eq!((s, code(&v)), (403, "quota_exceeded"), "{v}");
    assert_eq!(put(app, &key, &a).await.0, 200);
    let used = app
        .state
        .store
        .blob_bytes_of(&key.public_hex())
        .await
        .unwrap();
    assert_eq!(used, 3000);

    // A blocked uploader, and a blob the operator removed.
    let blocked = NodeKey::generate();
    let (s, _) = admin(
        app,
        "POST",
        &format!("/admin/v1/authors/{}/block", blocked.public_hex()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = put(app, &blocked, b"from a blocked key").await;
    assert_eq!((s, code(&v)), (403, "blocked"));
    let gone = b"removed before it arrived";
    let (s, _) = admin(
        app,
        "DELETE",
        &format!("/admin/v1/blobs/{}", blob_name(gone)),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = put(app, &NodeKey::generate(), gone).await;
    assert_eq!((s, code(&v)), (403, "blocked"));

    // Nothing refused was kept: no record, no file, no temporary.
    for refused in [&big[..], &[9u8][..], b"from a blocked key", gone] {
        let (s, _) = app
            .get_json(&format!("/v1/blobs/{}", blob_name(refused)))
            .await;
        assert_eq!(s, 404);
    }
    let files = ctx.objects();
    assert_eq!(files.len(), 2, "the two stored blobs only: {files:?}");
    assert!(files.iter().all(|f| !f.starts_with("tmp/")), "{files:?}");
}

async fn an_interrupted_upload_leaves_no_file_behind(store: Store) {
    let ctx = Ctx::start(store, &[]).await;
    let app = &ctx.app;
    let key = NodeKey::generate();
    let bytes = vec![7u8; 200_000];
    let sha = blob_name(&bytes);
    let url = format!("{}/v1/blobs/{sha}", app.base);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(&key, "PUT", &url, &mut headers, Some(&bytes), now() as i64).unwrap();
    let mut head = format!(
        "PUT /v1/blobs/{sha} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        bytes.len()
    );
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("\r\n");
    // Half the body; once the node is writing it, the client goes away.
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&bytes[..100_000]).await.unwrap();
    match store {
        Store::Fs => {
            eventually("the upload is being written", || async {
                !ctx.objects().is_empty()
            })
            .await
        }
        // A multipart upload shows no object until it completes.
        Store::S3 => tokio::time::sleep(Duration::from_millis(300)).await,
    }
    drop(conn);
    eventually("the temporary object is removed", || async {
        ctx.objects().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get_json(&format!("/v1/blobs/{sha}")).await.0, 404);
    assert!(app.state.store.blob(&sha).await.unwrap().is_none());
    assert_eq!(ctx.objects().len(), 0);
}

async fn admin_lists_blobs_with_references_and_removes_one_for_good(store: Store) {
    let ctx = Ctx::start(store, &[]).await;
    let app = &ctx.app;
    let key = NodeKey::generate();
    let sha = blob_name(PNG);
    assert_eq!(put(app, &key, PNG).await.0, 201);
    assert_eq!(app.publish(&with_blob(&key, 1, &sha)).await.0, 201);

    let (s, v) = admin(
        app,
        "GET",
        &format!("/admin/v1/blobs?uploader={}", key.public_hex()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let listed = &v["blobs"][0];
    assert_eq!(
        (
            &listed["sha256"],
            &listed["size"],
            &listed["type"],
            &listed["uploader"],
            &listed["references"],
            &listed["removed"]
        ),
        (
            &json!(sha),
            &json!(PNG.len()),
            &json!("image/png"),
            &json!(key.public_hex()),
            &json!(1),
            &json!(false)
        )
    );
    let (_, other) = admin(
        app,
        "GET",
        &format!(
            "/admin/v1/blobs?uploader={}",
            NodeKey::generate().public_hex()
        ),
        None,
    )
    .await;
    assert_eq!(other["blobs"], json!([]));
    let (s, v) = admin(app, "GET", "/admin/v1/blobs?uploader=nope", None).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (_, stats) = admin(app, "GET", "/admin/v1/stats", None).await;
    assert_eq!(
        (
            &stats["blobs"]["count"],
            &stats["blobs"]["bytes"],
            &stats["blobs"]["storage"]
        ),
        (
            &json!(1),
            &json!(PNG.len()),
            &json!(if ctx.s3.is_some() { "s3" } else { "fs" })
        )
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("meshrelay_blobs_stored 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("meshrelay_blob_stored_bytes {}", PNG.len())),
        "{metrics}"
    );

    let (s, v) = admin(app, "DELETE", &format!("/admin/v1/blobs/{sha}"), None).await;
    assert_eq!(
        (s, &v),
        (
            200,
            &json!({"sha256": sha, "removed": true, "changed": true, "freed_bytes": PNG.len()})
        )
    );
    let (s, v) = admin(app, "DELETE", &format!("/admin/v1/blobs/{sha}"), None).await;
    assert_eq!((s, &v["changed"]), (200, &json!(false)));
    let (s, v) = admin(app, "DELETE", "/admin/v1/blobs/xyz", None).await;
    assert_eq!((s, code(&v)), (422, "invalid_id"));
    assert_eq!(app.get_json(&format!("/v1/blobs/{sha}")).await.0, 404);
    let (s, v) = put(app, &key, PNG).await;
    assert_eq!((s, code(&v)), (403, "blocked"));
    assert_eq!(ctx.objects().len(), 0);
    let (_, v) = admin(app, "GET", "/admin/v1/blobs", None).await;
    assert_eq!(v["blobs"][0]["removed"], json!(true));
    let (_, audit) = admin(app, "GET", "/admin/v1/audit", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "remove" && e["target"] == format!("blob:{sha}")),
        "{audit}"
    );
}

async fn run_job(app: &TestApp, name: &str) {
    let before = job_runs(app, name).await;
    let (s, _) = admin(app, "POST", &format!("/admin/v1/jobs/{name}/run"), None).await;
    assert_eq!(s, 202);
    eventually("the job ran", || async {
        job_runs(app, name).await > before
    })
    .await;
}

async fn job_runs(app: &TestApp, name: &str) -> usize {
    app.state
        .store
        .recent_runs(name, 100)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.finished_at.is_some())
        .count()
}

async fn blob_gc_deletes_what_no_visible_payload_references_once_past_the_grace(store: Store) {
    let ctx = Ctx::start(store, &[("MESHRELAY_BLOB_GRACE_SECS", "0")]).await;
    let app = &ctx.app;
    let (_, jobs) = admin(app, "GET", "/admin/v1/jobs", None).await;
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "blob_gc" && j["schedule"] == "0 15 * * * *"),
        "{jobs}"
    );
    let key = NodeKey::generate();
    let kept = b"referenced by a payload";
    let loose = b"referenced by nothing";
    assert_eq!(put(app, &key, kept).await.0, 201);
    assert_eq!(put(app, &key, loose).await.0, 201);
    let post = with_blob(&key, 1, &blob_name(kept));
    assert_eq!(app.publish(&post).await.0, 201);
    // Held longer than the grace (0 s) once the clock has moved on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_job(app, "blob_gc").await;
    assert_eq!(
        app.get_json(&format!("/v1/blobs/{}", blob_name(loose)))
            .await
            .0,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/blobs/{}", blob_name(kept)))
            .await
            .status(),
        200
    );
    assert!(app
        .state
        .store
        .blob(&blob_name(loose))
        .await
        .unwrap()
        .is_none());

    // The author deletes the payload: the blob goes at the next run.
    let delete = Payload::sign(
        &key,
        Draft {
            seq: 2,
            prev: Some(post.id.clone()),
            created_at: now(),
            kind: "delete".into(),
            channel: "pics/cats".into(),
            tags: vec![vec!["e".into(), post.id.clone()]],
            content: String::new(),
        },
    );
    assert_eq!(app.publish(&delete).await.0, 201);
    run_job(app, "blob_gc").await;
    assert_eq!(
        app.get_json(&format!("/v1/blobs/{}", blob_name(kept)))
            .await
            .0,
        404
    );
    assert_eq!(ctx.objects().len(), 0);
}

async fn a_peer_s_payload_makes_the_node_mirror_its_blobs_but_never_removed_ones(store: Store) {
    let a_ctx = Ctx::start(store, &[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let a = &a_ctx.app;
    let b_ctx = Ctx::start(
        store,
        &[
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
            ("MESHRELAY_SEED_PEERS", &a.base),
        ],
    )
    .await;
    let b = &b_ctx.app;
    eventually("a knows b", || async {
        !a.state.store.peers().await.unwrap().is_empty()
    })
    .await;
    let key = NodeKey::generate();
    let wanted = vec![5u8; 300_000];
    let refused = b"b's operator removed this one".to_vec();
    let (s, _) = admin(
        b,
        "DELETE",
        &format!("/admin/v1/blobs/{}", blob_name(&refused)),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(put(a, &key, &wanted).await.0, 201);
    assert_eq!(put(a, &key, &refused).await.0, 201);
    let p1 = with_blob(&key, 1, &blob_name(&wanted));
    let p2 = with_blob(&key, 2, &blob_name(&refused));
    // Until a has polled b's preferences, it may not forward: publish until b has both.
    eventually("b holds both payloads", || async {
        a.publish(&p1).await;
        a.publish(&p2).await;
        b.state.store.get_payload(&p1.id).await.unwrap().is_some()
            && b.state.store.get_payload(&p2.id).await.unwrap().is_some()
    })
    .await;
    let client = RelayClient::new(&b.base).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if client
            .get_blob(&blob_name(&wanted), 1 << 20)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never mirrored the blob"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec = b
        .state
        .store
        .blob_with_references(&blob_name(&wanted))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.uploader, rec.size, rec.references),
        (None, wanted.len() as i64, Some(1))
    );
    // The removed one stays removed: nothing was fetched, nothing is queued.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.get_json(&format!("/v1/blobs/{}", blob_name(&refused)))
            .await
            .0,
        404
    );
    assert!(b
        .state
        .store
        .blob(&blob_name(&refused))
        .await
        .unwrap()
        .unwrap()
        .removed_at
        .is_some());
    assert_eq!(
        b.state.store.blob_totals().await.unwrap().fetches_pending,
        0
    );
}

/// Each test above, once per storage.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Store::Fs).await;
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Store::S3).await;
            })*
        }
    };
}

on_both_stores!(
    an_upload_is_stored_once_and_served_with_its_type_and_cache_headers,
    uploads_are_refused_in_the_documented_order_and_keep_nothing,
    an_interrupted_upload_leaves_no_file_behind,
    admin_lists_blobs_with_references_and_removes_one_for_good,
    blob_gc_deletes_what_no_visible_payload_references_once_past_the_grace,
    a_peer_s_payload_makes_the_node_mirror_its_blobs_but_never_removed_ones,
);
