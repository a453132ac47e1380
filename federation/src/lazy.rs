//! Lazy forwarding (PROTOCOL.md 5.6). Receiving: a peer offers ids with
//! `POST /v1/federation/ihave` and this node answers the ones it wants.
//! Sending: to a peer whose link `policy` judged redundant, the delivery loop
//! offers the ids of the items due (each at least `offer_delay_ms` old, so
//! that an eager path can bring them first) and pushes what it wants through
//! the inbox; the outbox row stays until the offer is answered and the
//! wanted payload delivered, so an offer is as durable as a forward.

use std::time::Duration;

use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::ErrorCode;
use meshrelay_store::{Forwarding, OutboxItem, Peer};
use serde::{Deserialize, Serialize};

use crate::attempt::Sent;
use crate::delivery::{Next, PIPELINE};
use crate::inbound::Refused;
use crate::{plan_batches, Federation};

/// Ids one offer may carry (PROTOCOL.md 5.6).
pub const MAX_IHAVE_ITEMS: usize = 1000;

#[derive(Deserialize)]
struct IhaveRequest {
    items: Vec<Offered>,
}

#[derive(Deserialize)]
struct Offered {
    id: String,
    /// The hops the payload would arrive with; it does not change what is wanted.
    #[allow(dead_code)]
    hops: u32,
}

/// The answer to an offer: the offered ids this node neither holds nor
/// keeps a tombstone of, in offer order, each once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IhaveResponse {
    pub want: Vec<String>,
}

impl Federation {
    /// Answer an offer from an authenticated peer. An offer names ids only,
    /// so a payload of a blocked author or outside this node's preference
    /// cannot be told apart here: it is asked for, and refused at the inbox.
    /// The link's other direction follows the sender's choice (`mirror`).
    pub async fn answer_ihave(&self, peer: &Peer, body: &[u8]) -> Result<IhaveResponse, Refused> {
        let req: IhaveRequest = serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("ihave body: {e}")))?;
        if req.items.len() > MAX_IHAVE_ITEMS {
            return Err(Refused::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_IHAVE_ITEMS} items per offer"),
            ));
        }
        if let Some(bad) = req.items.iter().find(|o| !is_hex32(&o.id)) {
            return Err(Refused::bad_request(format!(
                "{:?} is not a payload id (64 lowercase hex digits)",
                bad.id
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<String> = req
            .items
            .into_iter()
            .map(|o| o.id)
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let known = self.store.known_ids(&ids).await?;
        let want: Vec<String> = ids
            .iter()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect();
        self.metrics.offer("received", ids.len(), want.len());
        if !ids.is_empty() {
            self.mirror(peer, want.is_empty()).await;
        }
        Ok(IhaveResponse { want })
    }

    /// Keep both directions of a link alike, as Plumtree's PRUNE and GRAFT
    /// do: the eager links then form an undirected overlay, which carries a
    /// payload from any node to every node as long as it is connected (a
    /// direction pruned alone could leave a node reachable from some origins
    /// only). A peer that offers has pruned its direction: so does this
    /// node, if its offer brought nothing new (`declined`); a peer that was
    /// wanted grafts its direction: so does this node.
    async fn mirror(&self, peer: &Peer, declined: bool) {
        if !self.config.forward_lazily || !peer.answers_offers {
            return;
        }
        let (to, why) = if declined {
            (
                Forwarding::Lazy,
                "the peer offers what this node holds already: offering to it lazily too",
            )
        } else {
            self.policy.grafted(&peer.node);
            (
                Forwarding::Eager,
                "this node wanted the peer's offer: pushing to it again too",
            )
        };
        if peer.forwarding == to {
            return;
        }
        if let Err(e) = self.switch_link(&peer.node, to, why).await {
            tracing::warn!(peer = %peer.node, error = %e, "changing a link's forwarding failed");
        }
    }

    /// Set how this node forwards to `peer`; when that changed it, the
    /// gauge follows and `why` is logged. True when it changed.
    async fn switch_link(
        &self,
        peer: &str,
        to: Forwarding,
        why: &str,
    ) -> Result<bool, meshrelay_store::Error> {
        let changed = self.store.set_forwarding(peer, to).await?;
        if changed {
            self.metrics.set_lazy(peer, to == Forwarding::Lazy);
            tracing::info!(%peer, "{why}");
        }
        Ok(changed)
    }

    /// Whether this node offers instead of pushing to `peer` now.
    pub(crate) fn offers_to(&self, peer: &Peer) -> bool {
        self.config.forward_lazily && peer.answers_offers && peer.forwarding == Forwarding::Lazy
    }

    /// Judge the link to `peer` by what its answers said of the items
    /// pushed to it; a redundant one becomes lazy.
    pub(crate) async fn judge_link(&self, peer: &Peer, new: u64, duplicate: u64) {
        if !self.config.forward_lazily
            || !peer.answers_offers
            || peer.forwarding == Forwarding::Lazy
        {
            return;
        }
        if !self.policy.observe(&peer.node, new, duplicate) {
            return;
        }
        let why = "payloads reach this peer by other links too: offering them lazily";
        if let Err(e) = self.switch_link(&peer.node, Forwarding::Lazy, why).await {
            tracing::warn!(peer = %peer.node, error = %e, "making a link lazy failed");
        }
    }

    /// One attempt for a lazy peer: offer the ids of the items due, drop the
    /// ones it declines, push the ones it wants (and push to it from now on:
    /// no eager path brought them in time).
    pub(crate) async fn offer_once(
        &self,
        info: &Peer,
        inbox: &str,
        due: Vec<OutboxItem>,
        now: i64,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let peer = info.node.as_str();
        let (hidden, due): (Vec<OutboxItem>, Vec<OutboxItem>) =
            due.into_iter().partition(|i| i.json.is_none());
        let hidden: Vec<i64> = hidden.iter().map(|i| i.item_id).collect();
        self.store.delete_items(&hidden).await?;
        if due.is_empty() {
            return Ok(if hidden.is_empty() {
                Next::Offering
            } else {
                Next::More
            });
        }
        let items: Vec<(&str, i64)> = due
            .iter()
            .map(|i| (i.payload_id.as_str(), i.hops))
            .collect();
        let answer = self
            .leased(peer, self.client.ihave(&info.url, &items))
            .await;
        let why = match answer {
            Ok(a) if a.status == 200 => {
                self.metrics.bytes("ihave", a.wire_bytes);
                match serde_json::from_slice::<IhaveResponse>(&a.body) {
                    Ok(r) => return self.take_up(info, inbox, due, r.want, now, failures).await,
                    Err(e) => format!("ihave answer: {e}"),
                }
            }
            Ok(a) if a.status == 404 || a.status == 405 => {
                // It stopped answering offers: push to it until a poll says otherwise.
                tracing::warn!(%peer, status = a.status, "peer no longer answers offers; pushing to it");
                self.store.set_answers_offers(peer, false).await?;
                self.metrics.set_lazy(peer, false);
                return Ok(Next::More);
            }
            Ok(a) => {
                self.metrics.bytes("ihave", a.wire_bytes);
                let why = format!("HTTP {}: {}", a.status, a.excerpt(crate::MAX_ERROR_TEXT));
                if a.status == 429 {
                    // Over the peer's inbox_rate: wait as it says, as for a push.
                    let sent = Sent {
                        failed: vec![(0, why)],
                        throttled: Some(Duration::from_secs(a.retry_after.unwrap_or(1).max(1))),
                        ..Default::default()
                    };
                    return self.record_sent(info, &[due], sent, now, failures).await;
                }
                why
            }
            Err(e) => crate::attempt::cut(&e.to_string(), crate::MAX_ERROR_TEXT),
        };
        self.record(info, &[due], vec![(0, why)], now, failures)
            .await
    }

    /// What came of an offer: declined items leave the outbox, wanted ones
    /// go out through the inbox at once.
    async fn take_up(
        &self,
        info: &Peer,
        inbox: &str,
        due: Vec<OutboxItem>,
        want: Vec<String>,
        now: i64,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let want: std::collections::HashSet<String> = want.into_iter().collect();
        let (wanted, declined): (Vec<OutboxItem>, Vec<OutboxItem>) =
            due.into_iter().partition(|i| want.contains(&i.payload_id));
        self.metrics
            .offer("sent", wanted.len() + declined.len(), wanted.len());
        let declined: Vec<i64> = declined.iter().map(|i| i.item_id).collect();
        self.store.delete_items(&declined).await?;
        if wanted.is_empty() {
            return self.record(info, &[], Vec::new(), now, failures).await;
        }
        // Graft: the peer lacked these after the offer delay.
        self.policy.grafted(&info.node);
        let why = format!(
            "peer wanted {} offered payloads: pushing to it again",
            wanted.len()
        );
        self.switch_link(&info.node, Forwarding::Eager, &why)
            .await?;
        let plan = plan_batches(wanted, PIPELINE);
        self.give_up_too_big(&plan.too_big, now).await?;
        let sent = self
            .leased(&info.node, self.send(inbox, &plan.batches))
            .await;
        self.metrics.forwarded("sent", sent.new, sent.duplicate);
        self.record_sent(info, &plan.batches, sent, now, failures)
            .await
    }
}
