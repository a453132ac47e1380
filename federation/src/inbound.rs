//! A peer's requests to this node (PROTOCOL.md 5.2, 5.4, 5.5): verify the
//! signature, admit the signer, then take in its inbox items or answer its
//! sync rounds and fetches. The node's HTTP handlers only carry bytes to and
//! from these functions.

use std::sync::Arc;

use futures_util::future::join_all;
use http::HeaderMap;
use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::{ErrorCode, ProtocolError};
use meshrelay_store::{Peer, PeerStatus};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::httpsig::{Message, Verified};
use crate::ingest::{Checked, Ingest, Source};
use crate::limits::{MAX_FETCH_ANSWER_BYTES, MAX_FETCH_IDS, MAX_ITEMS};
use crate::router::wants;
use crate::sync::{FetchRequest, SyncError, SyncRequest, SyncResponse};
use crate::Federation;

/// A refused request: its wire code, HTTP status and message (PROTOCOL.md 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
    /// Seconds to put in `Retry-After` (`rate_limited`).
    pub retry_after: Option<u64>,
}

impl Refused {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            status: code.http_status(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn rate_limited(what: &str, secs: u64) -> Self {
        let mut r = Self::new(ErrorCode::RateLimited, format!("{what}; retry in {secs} s"));
        r.retry_after = Some(secs);
        r
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// This node's own failure: the cause goes to the log, not to the peer.
    fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let chain = meshrelay_protocol::error::cause_chain(err);
        tracing::error!(error = %chain, "internal error answering a peer");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<meshrelay_store::Error> for Refused {
    fn from(e: meshrelay_store::Error) -> Self {
        Self::internal(&e)
    }
}

/// One refused inbox item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    pub id: Option<String>,
    pub code: String,
}

/// The answer to an inbox request (5.4).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InboxResponse {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejected>,
}

/// `{"node", "url"}` of a peer this node shares (5.2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SharedPeer {
    pub node: String,
    pub url: String,
}

#[derive(Deserialize)]
struct InboxBody<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    hops: Option<Value>,
    #[serde(default)]
    sync: bool,
}

/// A checked inbox item, ready to store.
struct Item {
    checked: Checked,
    hops: u32,
    sync: bool,
}

impl Federation {
    /// Check a signed request against this node's own `public_url` followed
    /// by the request's path and query (so signatures survive a proxy). Its
    /// nonce is not remembered yet: `admit_verified` does that for known peers.
    fn verify_signed(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Verified, Refused> {
        let target = format!("{}{path_and_query}", self.config.public_url);
        let msg = Message {
            method: "POST",
            target_uri: &target,
            headers,
        };
        let now = meshrelay_protocol::clock::now_secs();
        self.verifier
            .check(&msg, Some(body), now)
            .map_err(|e| Refused::new(ErrorCode::AuthFailed, e.0))
    }

    /// A client's signed request whose body streams in after this check (a
    /// blob upload, PROTOCOL.md 4.3 and 6): the signer's key and the body's
    /// claimed SHA-256, which the caller compares with what it reads. The
    /// nonce is remembered now, in a cache of its own (`client_verifier`):
    /// any key may sign, and those entries never displace peers' nonces.
    pub async fn verify_client_streamed(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<(meshrelay_protocol::PublicKey, [u8; 32]), Refused> {
        let target = format!("{}{path_and_query}", self.config.public_url);
        let msg = Message {
            method,
            target_uri: &target,
            headers,
        };
        let now = meshrelay_protocol::clock::now_secs();
        let (verified, digest) = self
            .client_verifier
            .check_streamed(&msg, now)
            .map_err(|e| Refused::new(ErrorCode::AuthFailed, e.0))?;
        self.client_verifier
            .remember(&verified)
            .map_err(|e| Refused::new(ErrorCode::AuthFailed, e.0))?;
        self.remember_in_cluster("client", &verified).await?;
        Ok((verified.key, digest))
    }

    /// Remember a verified request's nonce; a replay is refused.
    async fn remember(&self, verified: &Verified) -> Result<(), Refused> {
        self.verifier
            .remember(verified)
            .map_err(|e| Refused::new(ErrorCode::AuthFailed, e.0))?;
        self.remember_in_cluster("peer", verified).await
    }

    /// Several processes (PROTOCOL.md 8.1): a request accepted by one is a
    /// replay at every other, so its nonce is recorded in the database too
    /// (after this process's cache, which refuses most replays for free).
    async fn remember_in_cluster(&self, scope: &str, verified: &Verified) -> Result<(), Refused> {
        if self.config.cluster.is_none() {
            return Ok(());
        }
        let key = format!("{scope}:{}", verified.nonce_key());
        let until = meshrelay_protocol::clock::now_secs() + crate::httpsig::NONCE_TTL_SECS;
        if self.store.record_nonce(&key, until).await? {
            Ok(())
        } else {
            Err(Refused::new(
                ErrorCode::AuthFailed,
                "nonce was seen before (replay)",
            ))
        }
    }

    /// The signer must be a known peer whose status accepts its requests.
    pub async fn admit(&self, signer: &str) -> Result<Peer, Refused> {
        let peer = self.store.peer(signer).await?.ok_or_else(|| {
            Refused::new(ErrorCode::UnknownPeer, "the signer is not a known peer")
        })?;
        if peer.status.accepts_inbox() {
            return Ok(peer);
        }
        Err(match peer.status {
            PeerStatus::Pending => {
                Refused::new(ErrorCode::PeerPending, "this peer awaits approval")
            }
            PeerStatus::KeyChanged => Refused::new(
                ErrorCode::KeyChanged,
                "this peer's key changed; an operator must decide",
            ),
            _ => Refused::new(ErrorCode::Blocked, "this peer is blocked"),
        })
    }

    /// The checks every request but announce takes: the signature, the
    /// signer a peer that may send, within its `inbox_rate`, and a nonce not
    /// seen before (remembered only now, for an admitted peer).
    pub async fn authenticate(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Peer, Refused> {
        let verified = self.verify_signed(path_and_query, headers, body)?;
        let peer = self.admit(&verified.key.to_hex()).await?;
        self.inbox_rates
            .check(&peer.node)
            .map_err(|secs| Refused::rate_limited("over this peer's inbox_rate", secs))?;
        self.remember(&verified).await?;
        Ok(peer)
    }

    /// `POST /v1/federation/announce` (5.2) from `from`: within its
    /// `announce_rate` (checked before the signature, which costs more), signed
    /// by the key it announces.
    pub async fn receive_announce(
        self: &Arc<Self>,
        from: std::net::IpAddr,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<PeerStatus, Refused> {
        #[derive(Deserialize)]
        struct Announce {
            url: String,
        }
        self.announces
            .check(&from)
            .map_err(|secs| Refused::rate_limited("over this address's announce_rate", secs))?;
        let verified = self.verify_signed(path_and_query, headers, body)?;
        self.remember(&verified).await?;
        let signer = verified.key.to_hex();
        let signer = signer.as_str();
        let req: Announce = serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("announce body: {e}")))?;
        self.warn_if_unreachable("a peer announced itself");
        match self.accept_announce(signer, &req.url).await {
            Ok(peer) => Ok(peer.status),
            Err(e) => Err(match e.answer() {
                Some((code, status)) => Refused {
                    code,
                    status,
                    message: e.to_string(),
                    retry_after: None,
                },
                None => Refused::internal(&e),
            }),
        }
    }

    /// `POST /v1/federation/inbox` (5.4) from an admitted `peer`: check each
    /// item, store the good ones through `ingest`, answer per item.
    pub async fn receive_inbox(
        &self,
        ingest: Arc<dyn Ingest>,
        peer: &Peer,
        body: &[u8],
    ) -> Result<InboxResponse, Refused> {
        let text =
            std::str::from_utf8(body).map_err(|_| Refused::bad_request("body is not UTF-8"))?;
        let parsed: InboxBody = serde_json::from_str(text)
            .map_err(|e| Refused::bad_request(format!("inbox body: {e}")))?;
        if parsed.items.len() > MAX_ITEMS {
            return Err(Refused::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_ITEMS} items per request"),
            ));
        }
        let mut rejected = Vec::new();
        let mut checked = Vec::new();
        for raw in parsed.items {
            match self.check_item(ingest.as_ref(), raw) {
                Ok(item) => checked.push(item),
                Err((id, e)) => rejected.push(Rejected {
                    id,
                    code: e.code.as_str().to_string(),
                }),
            }
        }
        // All items together, so they share the writer's batches. In a task of
        // its own: if the sender hangs up mid-request, what gets committed is
        // still counted and delivered to local subscribers.
        let node = peer.node.clone();
        let task = tokio::spawn(async move { store_items(ingest, node, checked, rejected).await });
        let (answer, forwarded) = task.await.map_err(|e| Refused::internal(&e))?;
        // Counted, not judged: whether this peer should push to us is its
        // call, made from our answer (PROTOCOL.md 5.6).
        self.metrics
            .forwarded("received", forwarded.new, forwarded.duplicate);
        // An item this node failed to store (not refused: failed) must not be
        // given up by the sender, which drops a batch answered 202: answer so
        // it sends the batch again (what was stored is a duplicate then).
        if answer
            .rejected
            .iter()
            .any(|r| r.code == ErrorCode::Internal.as_str())
        {
            let mut r = Refused::new(
                ErrorCode::Internal,
                "some items could not be stored here; send the batch again",
            );
            r.status = 503;
            return Err(r);
        }
        Ok(answer)
    }

    /// One inbox item: its shape, then the payload's checks and our preference.
    fn check_item(
        &self,
        ingest: &dyn Ingest,
        raw: &RawValue,
    ) -> Result<Item, (Option<String>, ProtocolError)> {
        let Ok(item) = serde_json::from_str::<RawItem>(raw.get()) else {
            return Err((None, ProtocolError::bad_request("item is not an object")));
        };
        let hops = item
            .hops
            .as_ref()
            .and_then(Value::as_u64)
            .filter(|h| *h >= 1);
        let (Some(payload), Some(hops)) = (item.payload, hops) else {
            return Err((
                id_of(item.payload),
                ProtocolError::bad_request("an item needs a payload and integer hops >= 1"),
            ));
        };
        let checked = ingest
            .check(payload.get())
            .map_err(|e| (id_of(Some(payload)), e))?;
        if !wants(&self.config.own_subscribe, &checked.payload) {
            let e = ProtocolError::new(ErrorCode::NotSubscribed, "not in this node's preference");
            return Err((Some(checked.payload.id), e));
        }
        Ok(Item {
            checked,
            hops: u32::try_from(hops).unwrap_or(u32::MAX),
            sync: item.sync,
        })
    }

    /// `POST /v1/federation/sync` (5.5): one round of a session from `peer`.
    pub async fn answer_sync(&self, peer: &Peer, body: &[u8]) -> Result<SyncResponse, Refused> {
        let req: SyncRequest = serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("sync body: {e}")))?;
        if let Ok(filter) = crate::sync::parse_filter(&req.filter) {
            filter
                .check_values(self.config.max_filter_values)
                .map_err(|e| Refused::new(e.code, e.message))?;
        }
        match self.sync.answer(&self.store, &peer.node, &req).await {
            Ok(msg) => {
                self.metrics
                    .served(&peer.node, body.len(), msg.len() * 2 + 10);
                Ok(SyncResponse {
                    msg: hex::encode(msg),
                })
            }
            Err(SyncError::TooManyItems(cap)) => Err(Refused::new(
                ErrorCode::TooLarge,
                format!("more than {cap} payloads in this window; split it"),
            )),
            Err(SyncError::BadRequest(why)) => Err(Refused::bad_request(why)),
            Err(e @ SyncError::TooManyRounds(_)) => {
                // The round count restarts within sync_max_secs.
                Err(Refused::rate_limited(
                    &e.to_string(),
                    self.config.sync.max_secs,
                ))
            }
            Err(SyncError::Store(e)) => Err(Refused::internal(&e)),
        }
    }

    /// `POST /v1/federation/fetch` (5.5): the visible payloads among the ids
    /// asked for, as a JSON answer of at most `MAX_FETCH_ANSWER_BYTES` of them.
    pub async fn answer_fetch(&self, body: &[u8]) -> Result<String, Refused> {
        let req: FetchRequest = serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("fetch body: {e}")))?;
        if req.ids.len() > MAX_FETCH_IDS {
            return Err(Refused::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_FETCH_IDS} ids per request"),
            ));
        }
        if let Some(bad) = req.ids.iter().find(|id| !is_hex32(id)) {
            return Err(Refused::bad_request(format!(
                "{bad:?} is not a payload id (64 lowercase hex digits)"
            )));
        }
        // The database hands over no more than the answer holds; the
        // initiator asks again for what did not fit.
        let budget = MAX_FETCH_ANSWER_BYTES.min(self.config.max_response_bytes);
        let (found, _) = self.store.payloads_by_ids(&req.ids, budget).await?;
        // Stored JSON goes out as it is, not re-encoded.
        let mut out = String::from(r#"{"payloads":["#);
        for (i, (_, json)) in found.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(json);
        }
        out.push_str("]}");
        Ok(out)
    }

    /// `GET /v1/federation/peers` (5.2): the peers this node shares.
    pub async fn shared_peers(&self) -> Result<Vec<SharedPeer>, Refused> {
        Ok(self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status.is_shared())
            .map(|p| SharedPeer {
                node: p.node,
                url: p.url,
            })
            .collect())
    }
}

/// Items forwarded (not pushed by sync) in one inbox request: stored, and
/// already held.
#[derive(Debug, Default)]
struct Forwarded {
    new: u64,
    duplicate: u64,
}

/// Store the checked items of one inbox request and build its answer.
async fn store_items(
    ingest: Arc<dyn Ingest>,
    node: String,
    checked: Vec<Item>,
    mut rejected: Vec<Rejected>,
) -> (InboxResponse, Forwarded) {
    let results = join_all(checked.into_iter().map(|item| {
        let (ingest, node) = (ingest.as_ref(), node.as_str());
        async move {
            let id = item.checked.payload.id.clone();
            let source = Source::Peer {
                node,
                hops: item.hops,
                sync: item.sync,
            };
            (id, item.sync, ingest.store(item.checked, source).await)
        }
    }))
    .await;
    let (mut accepted, mut duplicates) = (0, 0);
    let mut forwarded = Forwarded::default();
    for (id, sync, result) in results {
        match result {
            Ok(a) if a.duplicate => {
                duplicates += 1;
                forwarded.duplicate += u64::from(!sync);
            }
            Ok(_) => {
                accepted += 1;
                forwarded.new += u64::from(!sync);
            }
            Err(e) => rejected.push(Rejected {
                id: Some(id),
                code: e.code.as_str().into(),
            }),
        }
    }
    let answer = InboxResponse {
        accepted,
        duplicates,
        rejected,
    };
    (answer, forwarded)
}

fn id_of(raw: Option<&RawValue>) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    raw.and_then(|r| serde_json::from_str::<IdOnly>(r.get()).ok())
        .map(|x| x.id)
}
