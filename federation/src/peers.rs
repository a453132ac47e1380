//! Knowing peers: joining by URL, answering announces, scheduled polling of
//! their documents (PROTOCOL.md 5.2, 5.3), operators' decisions, and the
//! routing table built from the preferences of the peers that receive forwards.

use std::sync::Arc;

use meshrelay_protocol::clock::now_secs;
use meshrelay_protocol::node_doc::{SignedNodeDoc, Subscribe};
use meshrelay_protocol::Payload;
use meshrelay_store::{Peer, PeerStatus};

use crate::client::FetchError;
use crate::router::Router;
use crate::{Federation, EVERY_PEER};

/// Why a join or an announce was refused; maps to PROTOCOL.md 5.2's answers.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the node document could not be fetched or checked: {0}")]
    Fetch(#[from] FetchError),
    #[error("the document's node {doc} is not the signer {signer}")]
    KeyMismatch { doc: String, signer: String },
    #[error("{url} is known under another key")]
    KeyChanged { url: String },
    #[error("this peer is blocked")]
    Blocked,
    #[error("this node knows {0} peers, as many as it takes (max_peers)")]
    TooManyPeers(usize),
    #[error("storage failed")]
    Store(#[from] meshrelay_store::Error),
}

impl JoinError {
    /// The refusal as PROTOCOL.md 5.2 answers it: its code and HTTP status
    /// (the message is the error's text). None for a storage failure, which
    /// is this node's own fault and answered as `internal`.
    pub fn answer(&self) -> Option<(meshrelay_protocol::ErrorCode, u16)> {
        use meshrelay_protocol::ErrorCode;
        let code = match self {
            Self::Store(_) => return None,
            Self::Blocked | Self::TooManyPeers(_) => ErrorCode::Blocked,
            Self::KeyChanged { .. } => ErrorCode::KeyChanged,
            // A document that cannot be fetched or does not match its signer.
            Self::Fetch(_) | Self::KeyMismatch { .. } => return Some((ErrorCode::BadRequest, 422)),
        };
        Some((code, code.http_status()))
    }
}

/// Peers polled at once by the `poll` job.
const POLLS_AT_ONCE: usize = 8;
/// Longest one poll may take.
const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A peer's URL is its base: an http(s) URL without query or fragment (which
/// would choose what `/.well-known/meshrelay` is appended to).
fn check_base_url(url: &str) -> Result<(), FetchError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| FetchError::Refused(format!("{url:?}: {e}")))?;
    if parsed.query().is_some() || parsed.fragment().is_some() || url.ends_with(['?', '#']) {
        return Err(FetchError::Refused(format!(
            "{url:?}: a peer URL has no query or fragment"
        )));
    }
    Ok(())
}

/// Why peers could not reach this node at its `public_url`, if they could not:
/// its host is unspecified (`0.0.0.0`, `::`), or loopback while private
/// addresses are not allowed (a mesh on one machine chooses loopback).
pub fn unreachable_public_url(public_url: &str, allow_private: bool) -> Option<String> {
    let url = reqwest::Url::parse(public_url).ok()?;
    let unreachable = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_unspecified() || (!allow_private && ip.is_loopback()),
        url::Host::Ipv6(ip) => ip.is_unspecified() || (!allow_private && ip.is_loopback()),
        url::Host::Domain(d) => !allow_private && d.eq_ignore_ascii_case("localhost"),
    };
    unreachable.then(|| {
        format!(
            "public_url {public_url} is not an address other machines can reach: peers \
             fetch this node's document and deliver to its inbox there, and refuse a \
             document whose url differs from where they fetched it; set public_url \
             (MESHRELAY_PUBLIC_URL) to the URL peers reach"
        )
    })
}

impl Federation {
    /// Fetch and check a peer's document (5.1), and what this node requires
    /// of it besides: an inbox on the document's own origin (so a peer cannot
    /// aim our deliveries at a third party) and preference filters within
    /// `max_filter_values` (every payload is matched against them).
    pub(crate) async fn document(&self, url: &str) -> Result<SignedNodeDoc, FetchError> {
        let doc = self.client.document(url).await?;
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_string(),
                    u.host_str().map(str::to_string),
                    u.port_or_known_default(),
                )
            })
        };
        if origin(&doc.doc.inbox).is_none() || origin(&doc.doc.inbox) != origin(&doc.doc.url) {
            return Err(FetchError::BadDocument(format!(
                "inbox {:?} is not on the document's origin {:?}",
                doc.doc.inbox, doc.doc.url
            )));
        }
        if let Subscribe::Filtered { filters } = &doc.doc.subscribe {
            for f in filters {
                f.validate()
                    .and_then(|()| f.check_values(self.config.max_filter_values))
                    .map_err(|e| FetchError::BadDocument(format!("subscribe: {}", e.message)))?;
            }
        }
        Ok(doc)
    }

    /// Warn (once) when peers are expected but `public_url` is one they
    /// cannot reach: at start when seed peers are set, or on an announce.
    pub fn warn_if_unreachable(&self, why_now: &str) {
        let allow = self.config.allow_private_peers;
        let Some(why) = unreachable_public_url(&self.config.public_url, allow) else {
            return;
        };
        if !self
            .warned_unreachable
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(public_url = %self.config.public_url, "{why} ({why_now})");
        }
    }

    /// An operator's decision on a peer (`active` to approve or unblock,
    /// `blocked`): None when the peer is unknown. An approved or unblocked
    /// peer's queue is delivered at once; a blocked one gets nothing more.
    pub async fn set_peer_status(
        self: &Arc<Self>,
        node: &str,
        status: PeerStatus,
    ) -> Result<Option<Peer>, meshrelay_store::Error> {
        if !self.store.set_peer_status(node, status).await? {
            return Ok(None);
        }
        tracing::info!(peer = %node, %status, "peer status set by an operator");
        self.rebuild_router().await?;
        self.tell_peer_changed(node).await;
        self.ensure_delivery_loop(node);
        self.wake(&[(node.to_string(), 0)]);
        self.store.peer(node).await
    }

    /// Forget a peer and its queue; its delivery loop ends. False when unknown.
    pub async fn forget_peer(&self, node: &str) -> Result<bool, meshrelay_store::Error> {
        let known = self.store.delete_peer(node).await?;
        self.rebuild_router().await?;
        self.tell_peer_changed(node).await;
        let waker = self.wakers.lock().expect("lock").get(node).cloned();
        if let Some(n) = waker {
            n.notify_one();
        }
        if known {
            tracing::info!(peer = %node, "peer forgotten");
        }
        Ok(known)
    }

    /// Poll one peer now and rebuild the routes; None when the peer is unknown.
    pub async fn poll_now(
        &self,
        node: &str,
    ) -> Result<Option<(Peer, Result<bool, FetchError>)>, meshrelay_store::Error> {
        let Some(peer) = self.store.peer(node).await? else {
            return Ok(None);
        };
        let outcome = self.poll_peer(&peer).await;
        if outcome.is_err() {
            self.store.record_poll_failure(node, now_secs()).await?;
        }
        self.rebuild_router().await?;
        self.tell_peer_changed(node).await;
        let peer = self.store.peer(node).await?.unwrap_or(peer);
        Ok(Some((peer, outcome)))
    }

    /// Rebuild the routing table from the peers that are active.
    pub async fn rebuild_router(&self) -> Result<(), meshrelay_store::Error> {
        let prefs = self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status.receives_forwards())
            .filter_map(|p| {
                let pref = serde_json::from_str::<Subscribe>(p.subscribe.as_deref()?).ok()?;
                Some((p.node, pref))
            });
        *self.router.write().expect("lock") = Arc::new(Router::new(prefs));
        Ok(())
    }

    /// Where to forward a payload: (peer, hops) for each peer that wants it.
    /// `from` is the peer it came from and `hops` the hops it arrived with
    /// (None for a local client). Nothing goes on at `max_hops`.
    pub fn forward_targets(&self, p: &Payload, from: Option<(&str, u32)>) -> Vec<(String, i64)> {
        let hops = match from {
            None => 1,
            Some((_, h)) if h >= self.config.max_hops => return Vec::new(),
            Some((_, h)) => h + 1,
        };
        let router = self.router.read().expect("lock").clone();
        router
            .targets(p, from.map(|(peer, _)| peer))
            .into_iter()
            .map(|peer| (peer, i64::from(hops)))
            .collect()
    }

    /// Tell the delivery loops of these peers that items were queued.
    pub fn wake(&self, peers: &[(String, i64)]) {
        let wakers = self.wakers.lock().expect("lock");
        for (peer, _) in peers {
            if let Some(n) = wakers.get(peer) {
                n.notify_one();
            }
        }
    }

    /// Join a peer by URL: fetch and check its document, pin its key, announce
    /// ourselves to it. The operator chose it, so it is active at once.
    pub async fn join(self: &Arc<Self>, url: &str) -> Result<Peer, JoinError> {
        let url = url.trim_end_matches('/');
        check_base_url(url)?;
        let doc = self.document(url).await?;
        let peer = self.record_peer(url, &doc, PeerStatus::Active).await?;
        self.announce_to(url).await;
        Ok(peer)
    }

    /// Handle `POST /v1/federation/announce` from `signer` (already verified).
    pub async fn accept_announce(
        self: &Arc<Self>,
        signer: &str,
        url: &str,
    ) -> Result<Peer, JoinError> {
        let url = url.trim_end_matches('/');
        let known = match self.store.peer(signer).await? {
            Some(p) if p.status == PeerStatus::Blocked => return Err(JoinError::Blocked),
            Some(_) => true,
            // A stranger costs an outbox row per payload: at most max_peers of them.
            None if self.store.peers().await?.len() >= self.config.max_peers => {
                return Err(JoinError::TooManyPeers(self.config.max_peers))
            }
            None => false,
        };
        check_base_url(url)?;
        let doc = self.document(url).await?;
        if doc.doc.node != signer {
            return Err(JoinError::KeyMismatch {
                doc: doc.doc.node,
                signer: signer.to_string(),
            });
        }
        let status = if self.config.require_peer_approval {
            PeerStatus::Pending
        } else {
            PeerStatus::Active
        };
        let peer = self.record_peer(url, &doc, status).await?;
        if known {
            // A known peer announces itself again after a restart: what waits
            // for it goes now, not when its backoff runs out (here, and in
            // this node's other processes).
            let moved = self
                .store
                .make_due(signer, meshrelay_protocol::clock::now_ms())
                .await?;
            if moved > 0 {
                tracing::info!(peer = %signer, items = moved, "peer is back: delivering what waited for it now");
            }
            self.kick_peer(signer);
            self.tell_peer_changed(signer).await;
        }
        Ok(peer)
    }

    /// At start, tell the peers this node delivered to before (`urls`) that
    /// it is back, so that they end their backoffs toward it.
    pub(crate) async fn announce_return(self: &Arc<Self>, urls: Vec<String>) {
        use futures_util::StreamExt;
        futures_util::stream::iter(urls)
            .for_each_concurrent(POLLS_AT_ONCE, |url| async move {
                self.announce_to(&url).await;
            })
            .await;
    }

    /// Pin a peer on first contact; a URL known under another key is refused.
    async fn record_peer(
        self: &Arc<Self>,
        url: &str,
        doc: &SignedNodeDoc,
        status: PeerStatus,
    ) -> Result<Peer, JoinError> {
        if let Some(known) = self.store.peer_by_url(url).await? {
            if known.node != doc.doc.node {
                return Err(JoinError::KeyChanged {
                    url: url.to_string(),
                });
            }
            return Ok(known);
        }
        if let Some(known) = self.store.peer(&doc.doc.node).await? {
            return Ok(known);
        }
        let subscribe = serde_json::to_string(&doc.doc.subscribe).expect("serializes");
        self.store
            .insert_peer(
                &doc.doc.node,
                url,
                status,
                &subscribe,
                &doc.doc.inbox,
                now_secs(),
            )
            .await?;
        tracing::info!(peer = %doc.doc.node, %url, %status, "peer recorded");
        self.learn_offer_support(&doc.doc.node, url, false).await;
        self.rebuild_router().await?;
        self.tell_peer_changed(&doc.doc.node).await;
        self.ensure_delivery_loop(&doc.doc.node);
        Ok(self
            .store
            .peer(&doc.doc.node)
            .await?
            .expect("just inserted"))
    }

    async fn announce_to(&self, url: &str) {
        match self.client.announce(url, &self.config.public_url).await {
            Ok(a) if a.status == 202 => tracing::info!(%url, "announced to peer"),
            Ok(a) => {
                let answer = a.excerpt(crate::MAX_ERROR_TEXT);
                tracing::warn!(%url, status = a.status, %answer, "announce refused")
            }
            Err(e) => tracing::warn!(%url, error = %e, "announce failed"),
        }
    }

    /// Join each seed not known yet; retried by every poll until it works.
    pub async fn join_seeds(self: &Arc<Self>) {
        for seed in &self.config.seed_peers {
            let url = seed.trim_end_matches('/');
            if matches!(self.store.peer_by_url(url).await, Ok(Some(_))) {
                continue;
            }
            if let Err(e) = self.join(url).await {
                tracing::warn!(%url, error = %e, "joining seed peer failed; retried at the next poll");
            }
        }
    }

    /// The `poll` job: refresh every non-blocked peer's preference.
    pub async fn poll_all(self: &Arc<Self>) -> anyhow::Result<String> {
        use futures_util::StreamExt;
        self.join_seeds().await;
        let peers: Vec<Peer> = self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status.is_polled())
            .collect();
        // Several at once, each within POLL_TIMEOUT: slow peers (a stranger
        // can announce many) cost their own slot, not everyone's poll.
        let outcomes: Vec<(Peer, Result<bool, FetchError>)> = futures_util::stream::iter(peers)
            .map(|peer| async move {
                let polled = tokio::time::timeout(POLL_TIMEOUT, self.poll_peer(&peer)).await;
                let outcome = polled.unwrap_or_else(|_| {
                    Err(FetchError::Refused(format!(
                        "no answer within {} s",
                        POLL_TIMEOUT.as_secs()
                    )))
                });
                (peer, outcome)
            })
            .buffer_unordered(POLLS_AT_ONCE)
            .collect()
            .await;
        let (mut ok, mut failed, mut changed) = (0, 0, 0);
        for (peer, outcome) in outcomes {
            match outcome {
                Ok(true) => ok += 1,
                Ok(false) => changed += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(peer = %peer.node, url = %peer.url, error = %e, "poll failed");
                    self.store
                        .record_poll_failure(&peer.node, now_secs())
                        .await?;
                }
            }
        }
        self.rebuild_router().await?;
        self.tell_peer_changed(EVERY_PEER).await;
        Ok(format!(
            "polled {} peers: {ok} ok, {failed} failed, {changed} with a changed key",
            ok + failed + changed
        ))
    }

    /// Poll one peer. Ok(false) when its document names another key: the peer is
    /// flagged `key_changed` and gets nothing more until an operator decides.
    pub async fn poll_peer(&self, peer: &Peer) -> Result<bool, FetchError> {
        let doc = self.document(&peer.url).await?;
        if doc.doc.node != peer.node {
            tracing::error!(peer = %peer.node, url = %peer.url, new_key = %doc.doc.node, "peer's key changed; refusing it");
            let _ = self
                .store
                .set_peer_status(&peer.node, PeerStatus::KeyChanged)
                .await;
            return Ok(false);
        }
        let subscribe = serde_json::to_string(&doc.doc.subscribe).expect("serializes");
        let _ = self
            .store
            .record_poll_ok(&peer.node, &subscribe, &doc.doc.inbox, now_secs())
            .await;
        self.learn_offer_support(&peer.node, &peer.url, peer.answers_offers)
            .await;
        // It answers again (5.3): deliver to it again, without waiting for a
        // delivery to succeed first (its queue may be empty, all given up).
        if peer.status == PeerStatus::Unreachable
            && matches!(
                self.store
                    .swap_peer_status(&peer.node, PeerStatus::Unreachable, PeerStatus::Active)
                    .await,
                Ok(true)
            )
        {
            tracing::info!(peer = %peer.node, "peer answers its poll again; active");
        }
        Ok(true)
    }
}

impl Federation {
    /// Ask the peer's `/v1/info` whether it answers offers (PROTOCOL.md 5.6)
    /// and record a change; when it cannot be asked, what was known stays.
    async fn learn_offer_support(&self, node: &str, url: &str, known: bool) {
        match self.client.answers_offers(url).await {
            Ok(answers) if answers != known => {
                if let Err(e) = self.store.set_answers_offers(node, answers).await {
                    tracing::warn!(peer = %node, error = %e, "recording offer support failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "asking whether the peer answers offers failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unreachable_public_url;

    #[test]
    fn a_public_url_no_peer_can_reach_is_named() {
        for bad in [
            "http://0.0.0.0:7700",
            "http://127.0.0.1:7700",
            "http://[::]:7700",
            "http://localhost",
        ] {
            assert!(unreachable_public_url(bad, false).is_some(), "{bad}");
        }
        for good in ["https://relay.example.org", "http://192.0.2.7:7700"] {
            assert!(unreachable_public_url(good, false).is_none(), "{good}");
        }
        // A mesh on one machine chose loopback; 0.0.0.0 is nobody's address.
        assert!(unreachable_public_url("http://127.0.0.1:7700", true).is_none());
        assert!(unreachable_public_url("http://0.0.0.0:7700", true).is_some());
    }
}
