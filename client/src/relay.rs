//! `RelayClient`: one relay's client API (PROTOCOL.md 4.1, 4.2, 4.4) with
//! everything it answers verified before the caller sees it.

use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use meshrelay_protocol::community::{Evaluation, GOVERNANCE_KINDS};
use meshrelay_protocol::receipt::{Receipt, SignedHead};
use meshrelay_protocol::{Filter, Limits, Payload};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::{Error, Result};

/// Most pages one `log` call follows: a relay that never stops paging is a
/// hostile one, and 10,000 pages of up to `max_limit` entries is past any log.
const MAX_LOG_PAGES: usize = 10_000;

/// What a client checks payloads from a relay against: the id and signature
/// always; a relay's own content limit and clock skew are its business.
const VERIFY_LIMITS: Limits = Limits {
    max_content_bytes: usize::MAX,
    max_future_skew: u64::MAX,
};

/// A TLS client configuration for WebSockets: the web roots and `pem`'s CAs.
fn ws_tls_config(pem: &[u8]) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Usage(format!("the CA bundle is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Usage(format!("a CA certificate is not usable: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Usage(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A client of one relay.
#[derive(Debug, Clone)]
pub struct RelayClient {
    base: String,
    http: reqwest::Client,
    node: std::sync::Arc<OnceCell<String>>,
    /// For `wss://` with extra trust roots; `None` uses the built-in web roots.
    ws_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// An accepted publish: `receipt` verified and naming this payload and the
/// relay's node key (`None` only for a duplicate of a payload the relay
/// purged before it kept first storage times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub duplicate: bool,
    pub receipt: Option<Receipt>,
}

/// One page of a query.
#[derive(Debug, Clone)]
pub struct Page {
    pub payloads: Vec<Payload>,
    pub next_cursor: Option<String>,
}

/// An entry of an author's log as the relay served it: checked, or the
/// reason it failed, with what the entry claimed to be.
#[derive(Debug, Clone)]
pub enum LogEntry {
    Valid(Payload),
    Invalid {
        seq: Option<u64>,
        id: Option<String>,
        reason: String,
        raw: Value,
    },
}

impl LogEntry {
    /// The seq the entry claims, valid or not.
    pub fn seq(&self) -> Option<u64> {
        match self {
            LogEntry::Valid(p) => Some(p.seq),
            LogEntry::Invalid { seq, .. } => *seq,
        }
    }
}

/// What a live subscription yields.
#[derive(Debug, Clone)]
pub enum Event {
    /// A payload (stored or live), verified.
    Payload(Box<Payload>),
    /// The stored matches are done; live ones follow.
    EndOfStored,
}

impl RelayClient {
    /// A client of the relay at `base` (`http://` or `https://`).
    pub fn new(base: &str) -> Result<Self> {
        Self::with_roots(base, None)
    }

    /// A client that trusts the CA certificates in `extra_roots_pem` (a PEM
    /// bundle) beside the built-in web roots (webpki-roots, Mozilla's list),
    /// for `https://` and `wss://` alike: a relay of a private mesh.
    pub fn with_roots(base: &str, extra_roots_pem: Option<&[u8]>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "relay URL must start with http:// or https://, got {base:?}"
            )));
        }
        let mut builder = reqwest::Client::builder();
        let mut ws_tls = None;
        if let Some(pem) = extra_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Usage(format!("the CA bundle is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Usage("the CA bundle holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
            ws_tls = Some(ws_tls_config(pem)?);
        }
        let http = builder
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("meshrelay-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            base,
            http,
            node: Default::default(),
            ws_tls,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/info` as JSON.
    pub async fn info(&self) -> Result<Value> {
        self.get_json("/v1/info").await
    }

    /// The relay's node key (from `/v1/info`, asked once): receipts and
    /// heads must be signed by it.
    pub async fn node_key(&self) -> Result<String> {
        let key = self
            .node
            .get_or_try_init(|| async {
                let info = self.info().await?;
                let node = info["node"].as_str().unwrap_or_default().to_string();
                meshrelay_protocol::PublicKey::from_hex(&node)
                    .map_err(|e| self.bad(format!("/v1/info names no valid node key: {e}")))?;
                Ok::<_, Error>(node)
            })
            .await?;
        Ok(key.clone())
    }

    /// Publish one payload; the receipt is checked against this relay's key.
    pub async fn publish(&self, payload: &Payload) -> Result<Published> {
        #[derive(Deserialize)]
        struct Answer {
            id: String,
            duplicate: bool,
            receipt: Option<Receipt>,
        }
        let resp = self
            .http
            .post(format!("{}/v1/payloads", self.base))
            .header("content-type", "application/json")
            .body(payload.to_json())
            .send()
            .await
            .map_err(|e| self.transport("publishing", e))?;
        let status = resp.status().as_u16();
        if status != 200 && status != 201 {
            return Err(refused(resp).await);
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| self.bad(format!("publish answer: {e}")))?;
        if answer.id != payload.id {
            return Err(self.bad(format!("accepted {} for {}", answer.id, payload.id)));
        }
        match &answer.receipt {
            Some(r) => self.check_receipt(r, &payload.id).await?,
            // A relay that keeps no evidence of what it accepted cannot be
            // audited for it: only a duplicate of a payload it purged before
            // it kept first storage times may come without one.
            None if !answer.duplicate => {
                return Err(self.bad(format!(
                    "accepted {} without the receipt PROTOCOL.md 4.4 requires",
                    payload.id
                )))
            }
            None => {}
        }
        Ok(Published {
            id: answer.id,
            duplicate: answer.duplicate,
            receipt: answer.receipt,
        })
    }

    async fn check_receipt(&self, r: &Receipt, id: &str) -> Result<()> {
        let node = self.node_key().await?;
        if r.node != node || r.id != id {
            return Err(self.bad(format!(
                "receipt names node {} and payload {}, expected {node} and {id}",
                r.node, r.id
            )));
        }
        r.verify().map_err(|e| self.bad(format!("receipt: {e}")))
    }

    /// One payload by id, verified and checked to be that id; `None` on 404.
    pub async fn get(&self, id: &str) -> Result<Option<Payload>> {
        let resp = self
            .http
            .get(format!("{}/v1/payloads/{id}", self.base))
            .send()
            .await
            .map_err(|e| self.transport("getting a payload", e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(refused(resp).await),
        }
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport("reading a payload", e))?;
        let p = verify(&text).map_err(|e| self.bad(format!("payload {id}: {e}")))?;
        if p.id != id {
            return Err(self.bad(format!("asked for {id}, served {}", p.id)));
        }
        Ok(Some(p))
    }

    /// One page of stored payloads matching `filter` (its `limit` per page),
    /// after `cursor`; every payload verified and checked against the filter.
    pub async fn query(&self, filter: &Filter, cursor: Option<&str>) -> Result<Page> {
        let mut params = query_params(filter);
        if let Some(c) = cursor {
            params.push(("cursor".into(), c.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}/v1/payloads", self.base))
            .query(&params)
            .send()
            .await
            .map_err(|e| self.transport("querying", e))?;
        if !resp.status().is_success() {
            return Err(refused(resp).await);
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| self.bad(format!("query answer: {e}")))?;
        let mut payloads = Vec::new();
        for raw in v["payloads"].as_array().into_iter().flatten() {
            let p = verify(&raw.to_string()).map_err(|e| self.bad(format!("query: {e}")))?;
            if !filter.matches(&p) {
                return Err(self.bad(format!("served {}, which the filter does not match", p.id)));
            }
            payloads.push(p);
        }
        Ok(Page {
            payloads,
            next_cursor: v["next_cursor"].as_str().map(String::from),
        })
    }

    /// The author's head, its signature checked against this relay's key;
    /// `None` when the relay holds nothing of the author (404).
    pub async fn head(&self, author: &str) -> Result<Option<SignedHead>> {
        let Some(v) = self
            .get_json_or_404(&format!("/v1/authors/{author}/head"))
            .await?
        else {
            return Ok(None);
        };
        let head: SignedHead =
            serde_json::from_value(v).map_err(|e| self.bad(format!("head answer: {e}")))?;
        let node = self.node_key().await?;
        if head.node != node || head.author != author {
            return Err(self.bad(format!(
                "head signed by {} for author {}, expected {node} and {author}",
                head.node, head.author
            )));
        }
        head.verify().map_err(|e| self.bad(format!("head: {e}")))?;
        Ok(Some(head))
    }

    /// The author's whole log, every page, each entry checked; entries that
    /// do not verify are returned as `Invalid` (an audit reports them).
    pub async fn log(&self, author: &str) -> Result<Vec<LogEntry>> {
        let mut entries = Vec::new();
        let mut after = 0u64;
        for _ in 0..MAX_LOG_PAGES {
            let v = self
                .get_json(&format!("/v1/authors/{author}/log?after_seq={after}"))
                .await?;
            let page = v["payloads"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return Ok(entries);
            }
            let mut highest = after;
            for raw in page {
                let entry = check_entry(author, raw);
                if let Some(seq) = entry.seq() {
                    highest = highest.max(seq);
                }
                entries.push(entry);
            }
            if highest == after {
                // A page of nothing beyond `after`: it would be served again.
                return Err(self.bad(format!("the log page after seq {after} does not advance")));
            }
            after = highest;
        }
        Err(self.bad(format!("the log has more than {MAX_LOG_PAGES} pages")))
    }

    /// A community's state (PROTOCOL.md 9.3) computed here from every
    /// governance payload the relay serves on its root channel, each
    /// verified: the relay's word is not needed. Also how many were read.
    pub async fn community(&self, root: &str) -> Result<(Evaluation, usize)> {
        let governance = self.community_governance(root).await?;
        Ok((Evaluation::new(root, &governance), governance.len()))
    }

    /// Every governance payload the relay serves on a community's root,
    /// each verified.
    pub async fn community_governance(&self, root: &str) -> Result<Vec<Payload>> {
        let filter = Filter {
            channels: Some(vec![root.to_string()]),
            kinds: Some(GOVERNANCE_KINDS.iter().map(|k| k.to_string()).collect()),
            limit: Some(500),
            ..Filter::default()
        };
        let mut governance = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LOG_PAGES {
            let page = self.query(&filter, cursor.as_deref()).await?;
            governance.extend(page.payloads);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(governance);
            }
        }
        Err(self.bad(format!(
            "the governance of {root} has more than {MAX_LOG_PAGES} pages"
        )))
    }

    /// The relay's own answer to `GET /v1/communities/{owner}/{name}`, or
    /// `None` when it holds nothing of the community.
    pub async fn community_answer(&self, root: &str) -> Result<Option<Value>> {
        let path = root.strip_prefix("g/").unwrap_or(root);
        self.get_json_or_404(&format!("/v1/communities/{path}"))
            .await
    }

    /// Subscribe over WebSocket: stored matches, `EndOfStored`, then live
    /// matches, each verified and checked against the filters.
    pub async fn subscribe(
        &self,
        filters: Vec<Filter>,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + Unpin + 'static> {
        let url = ws_url(&self.base)?;
        let connector = self
            .ws_tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, false, connector)
                .await
                .map_err(|e| Error::Transport(format!("connecting to {url}: {e}")))?;
        let frame = json!({"op": "subscribe", "sub": "client", "filters": filters});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| Error::Transport(format!("{url}: {e}")))?;
        let relay = self.base.clone();
        let stream = futures_util::stream::unfold(Some(ws), move |ws| {
            let (relay, filters) = (relay.clone(), filters.clone());
            async move {
                let mut ws = ws?;
                loop {
                    let msg = match ws.next().await? {
                        Ok(m) => m,
                        Err(e) => {
                            return Some((Err(Error::Transport(format!("{relay}: {e}"))), None))
                        }
                    };
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Close(frame) => {
                            return Some((Err(Error::Closed(describe_close(frame.as_ref()))), None))
                        }
                        _ => continue,
                    };
                    match subscription_event(&text, &filters) {
                        Ok(Some(event)) => return Some((Ok(event), Some(ws))),
                        Ok(None) => continue,
                        Err(e) => {
                            return Some((Err(Error::BadAnswer(format!("{relay}: {e}"))), None))
                        }
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        self.get_json_or_404(path)
            .await?
            .ok_or_else(|| Error::Refused {
                status: 404,
                code: "not_found".into(),
                message: format!("{}{path}", self.base),
            })
    }

    async fn get_json_or_404(&self, path: &str) -> Result<Option<Value>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.transport(path, e))?;
        match resp.status().as_u16() {
            200 => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| self.bad(format!("{path}: {e}"))),
            404 => Ok(None),
            _ => Err(refused(resp).await),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn transport(&self, what: &str, e: reqwest::Error) -> Error {
        Error::Transport(format!("{} ({what}): {e}", self.base))
    }

    pub(crate) fn bad(&self, what: String) -> Error {
        Error::BadAnswer(format!("{}: {what}", self.base))
    }
}

/// Check payload JSON text as a client does: fields, id, signature.
pub fn verify(text: &str) -> std::result::Result<Payload, String> {
    let now = meshrelay_protocol::clock::now_wire_secs();
    Payload::from_json(text, &VERIFY_LIMITS, now).map_err(|e| e.to_string())
}

/// A log entry, checked to verify and to be by `author`.
fn check_entry(author: &str, raw: Value) -> LogEntry {
    let invalid = |reason: String, raw: Value| LogEntry::Invalid {
        seq: raw["seq"].as_u64(),
        id: raw["id"].as_str().map(String::from),
        reason,
        raw,
    };
    match verify(&raw.to_string()) {
        Ok(p) if p.author == author => LogEntry::Valid(p),
        Ok(p) => invalid(
            format!("an entry by {} in this author's log", p.author),
            raw,
        ),
        Err(e) => invalid(e, raw),
    }
}

/// One frame of a subscription: an event, nothing to yield, or the reason
/// the relay's frame cannot be trusted.
fn subscription_event(
    text: &str,
    filters: &[Filter],
) -> std::result::Result<Option<Event>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("frame: {e}"))?;
    match v["op"].as_str() {
        Some("payload") => {
            let p = verify(&v["payload"].to_string())?;
            if !filters.iter().any(|f| f.matches(&p)) {
                return Err(format!("sent {}, which no filter matches", p.id));
            }
            Ok(Some(Event::Payload(Box::new(p))))
        }
        Some("eose") => Ok(Some(Event::EndOfStored)),
        Some("error") | Some("closed") => Err(format!(
            "{}: {}",
            v["code"].as_str().or(v["reason"].as_str()).unwrap_or("?"),
            v["message"].as_str().unwrap_or_default()
        )),
        _ => Ok(None),
    }
}

/// A filter as `GET /v1/payloads` parameters (lists comma-separated).
fn query_params(f: &Filter) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut list = |k: &str, v: &Option<Vec<String>>| {
        if let Some(v) = v {
            params.push((k.to_string(), v.join(",")));
        }
    };
    list("ids", &f.ids);
    list("authors", &f.authors);
    list("kinds", &f.kinds);
    list("channels", &f.channels);
    for (name, values) in f.tags.iter().flatten() {
        params.push((format!("tag_{name}"), values.join(",")));
    }
    for (k, v) in [("since", f.since), ("until", f.until)] {
        if let Some(v) = v {
            params.push((k.into(), v.to_string()));
        }
    }
    if let Some(l) = f.limit {
        params.push(("limit".into(), l.to_string()));
    }
    params
}

/// An error answer as `Error::Refused`.
pub(crate) async fn refused(resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    Error::Refused {
        status,
        code: v["error"]["code"].as_str().unwrap_or("?").to_string(),
        message: v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// `ws://host/v1/ws` for `http://host`, `wss://` for `https://`.
pub fn ws_url(relay: &str) -> Result<String> {
    let b = relay.trim_end_matches('/');
    if let Some(rest) = b.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/ws"))
    } else if let Some(rest) = b.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/ws"))
    } else {
        Err(Error::Usage(format!(
            "relay URL must start with http:// or https://, got {relay:?}"
        )))
    }
}

/// A WebSocket close in words: the code's meaning and the relay's reason.
pub fn describe_close(frame: Option<&CloseFrame>) -> String {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let Some(frame) = frame else {
        return "the relay closed the connection without saying why".to_string();
    };
    let meaning = match frame.code {
        CloseCode::Normal => "normal closure",
        CloseCode::Away => "the relay is shutting down or restarting",
        CloseCode::Policy => "policy violation",
        CloseCode::Size => "a message was too large",
        CloseCode::Error => "the relay failed",
        CloseCode::Again => "the relay is overloaded; try again later",
        _ => "closed",
    };
    let code = u16::from(frame.code);
    match frame.reason.as_str() {
        "" => format!("the relay closed the connection: {meaning} (code {code})"),
        reason => format!("the relay closed the connection: {reason} ({meaning}, code {code})"),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    use super::*;

    #[test]
    fn a_close_is_told_in_words() {
        let slow = CloseFrame {
            code: CloseCode::Policy,
            reason: "slow consumer".into(),
        };
        assert_eq!(
            describe_close(Some(&slow)),
            "the relay closed the connection: slow consumer (policy violation, code 1008)"
        );
        let away = CloseFrame {
            code: CloseCode::Away,
            reason: "".into(),
        };
        assert_eq!(
            describe_close(Some(&away)),
            "the relay closed the connection: the relay is shutting down or restarting (code 1001)"
        );
        assert!(describe_close(None).contains("without saying why"));
    }

    #[test]
    fn a_filter_becomes_query_parameters() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let f = Filter::from_value(
            json!({"authors": [a, b], "tags": {"t": ["x"]}, "since": 5, "limit": 7}),
        )
        .unwrap();
        let p = query_params(&f);
        assert!(p.contains(&("authors".into(), format!("{a},{b}"))));
        assert!(p.contains(&("tag_t".into(), "x".into())));
        assert!(p.contains(&("since".into(), "5".into())));
        assert!(p.contains(&("limit".into(), "7".into())));
    }

    #[test]
    fn ws_urls_follow_the_scheme() {
        assert_eq!(ws_url("http://h:1/").unwrap(), "ws://h:1/v1/ws");
        assert_eq!(ws_url("https://h").unwrap(), "wss://h/v1/ws");
        assert!(ws_url("ftp://h").is_err());
    }
}
