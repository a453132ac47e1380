//! `spawn_app()` and a `TestApp` with one helper per endpoint.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meshrelay::{Application, Settings};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    /// The admin listener, e.g. `http://127.0.0.1:40123`.
    pub admin: String,
    /// The admin token (the generated `data_dir/admin.token`).
    pub admin_token: String,
    pub client: reqwest::Client,
    pub state: meshrelay::state::AppState,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A node on 127.0.0.1:0 with a fresh data directory and extra `MESHRELAY_*` variables.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("MESHRELAY_LISTEN".to_string(), "127.0.0.1:0".to_string()),
        (
            "MESHRELAY_ADMIN_LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "MESHRELAY_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
        // Tests publish in bulk; the rate limit has tests of its own.
        ("MESHRELAY_PUBLISH_RATE".to_string(), "0".to_string()),
    ];
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::load_from(None, env).unwrap();
    let app = Application::build(settings).await.unwrap();
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let base = format!(
        "{}://{}",
        scheme(app.state().tls.public.is_some()),
        app.local_addr()
    );
    let admin = format!(
        "{}://{}",
        scheme(app.state().tls.admin.is_some()),
        app.admin_addr()
    );
    let admin_token = std::fs::read_to_string(dir.path().join("admin.token"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        admin,
        admin_token,
        client: reqwest::Client::new(),
        state,
        shutdown,
        handle,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// A new key, recorded as an active peer (at an address nobody serves)
    /// whose signed federation requests this node admits.
    pub async fn active_peer(&self) -> meshrelay_protocol::NodeKey {
        let peer = meshrelay_protocol::NodeKey::generate();
        self.state
            .store
            .insert_peer(
                &peer.public_hex(),
                "http://127.0.0.1:9",
                meshrelay_store::PeerStatus::Active,
                r#"{"scope":"all"}"#,
                "",
                1,
            )
            .await
            .unwrap();
        peer
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/payloads", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn publish(&self, p: &Payload) -> (u16, Value) {
        self.post_raw(p.to_json()).await
    }

    pub async fn ws(&self) -> WsClient {
        let url = format!("{}/v1/ws", self.base.replacen("http://", "ws://", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut ws = WsClient {
            stream,
            hello: Value::Null,
        };
        let hello = ws.next_json().await;
        assert_eq!(hello["op"], "hello");
        ws.hello = hello;
        ws
    }
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
}

impl WsClient {
    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: &str) {
        self.stream
            .send(Message::text(t.to_string()))
            .await
            .unwrap();
    }

    /// The next JSON frame, failing the test after 10 s.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("no frame within 10 s")
                .expect("connection ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Read past queued frames to the close frame: its code and reason, or
    /// None when the stream ends (or stays silent `secs`) without one.
    pub async fn close_frame(
        &mut self,
        secs: u64,
    ) -> Option<(
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode,
        String,
    )> {
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_secs(secs), self.stream.next()).await
        {
            match msg {
                Ok(Message::Close(Some(frame))) => {
                    return Some((frame.code, frame.reason.to_string()))
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The next frame if one arrives within `ms` milliseconds.
    pub async fn maybe_json(&mut self, ms: u64) -> Option<Value> {
        match tokio::time::timeout(Duration::from_millis(ms), self.stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Some(serde_json::from_str(&t).unwrap()),
            _ => None,
        }
    }
}

/// An accepting answer with its receipt taken out, after checking that it
/// verifies and names the answer's id (PROTOCOL.md 4.4).
pub fn without_receipt(mut answer: Value) -> Value {
    let receipt = answer
        .as_object_mut()
        .and_then(|o| o.remove("receipt"))
        .unwrap_or_else(|| panic!("no receipt in {answer}"));
    let receipt: meshrelay_protocol::receipt::Receipt = serde_json::from_value(receipt).unwrap();
    receipt.verify().unwrap();
    assert_eq!(answer["id"].as_str(), Some(receipt.id.as_str()));
    answer
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signed payload by `key` with the given place in its log.
pub fn signed(
    key: &NodeKey,
    seq: u64,
    prev: Option<&str>,
    channel: &str,
    content: &str,
) -> Payload {
    signed_at(key, seq, prev, channel, content, now())
}

pub fn signed_at(
    key: &NodeKey,
    seq: u64,
    prev: Option<&str>,
    channel: &str,
    content: &str,
    created_at: u64,
) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: prev
                .map(String::from)
                .or_else(|| (seq > 1).then(|| "ab".repeat(32))),
            created_at,
            kind: "post".into(),
            channel: channel.into(),
            tags: vec![],
            content: content.into(),
        },
    )
}

/// A file of `../shared/vectors` (or of `MESHRELAY_VECTORS`, as in the protocol crate's tests).
pub fn vectors(name: &str) -> Value {
    let dir = std::env::var("MESHRELAY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
