//! One delivery loop per peer drains its durable outbox (PROTOCOL.md 5.4):
//! `plan_batches` decides what goes out (pure); `send` carries it and
//! `record` writes what came of it, with exponential backoff and jitter
//! (both in `attempt`).

use std::sync::Arc;
use std::time::Duration;

use meshrelay_protocol::clock::now_ms;
use meshrelay_store::OutboxItem;
use tokio::sync::Notify;

use crate::peer_client::InboxBody;
use crate::Federation;

/// Consecutive failed deliveries after which a peer counts as unreachable.
pub(crate) const UNREACHABLE_AFTER: u32 = 5;
/// Inbox requests in flight to one peer at a time.
pub(crate) const PIPELINE: usize = 4;
/// Several processes (PROTOCOL.md 8.1): one delivers to a peer at a time,
/// under a lease of this long, renewed at every attempt and while idle.
const LEASE_MS: i64 = 15_000;
/// How often a process without the lease looks whether it is free, and
/// the longest an idle leader sleeps before renewing it.
const LEASE_CHECK: Duration = Duration::from_secs(4);

/// What a delivery loop does after one attempt.
pub(crate) enum Next {
    /// A batch went out; more may be due at once.
    More,
    /// Nothing due: wait for new items or the next due time.
    Idle,
    /// Nothing due to offer to a lazy peer: wait for the next due time plus
    /// the offer delay.
    Offering,
    /// The peer failed: wait this long whatever gets queued meanwhile.
    Backoff(Duration),
    /// The peer was forgotten: the loop ends.
    Gone,
    /// Another process of this node delivers to this peer.
    Standby,
}

impl Federation {
    /// Wake every delivery loop, those backing off from a failing peer too
    /// (an operator put dead letters back in the queue).
    pub fn wake_all(&self) {
        for n in self.wakers.lock().expect("lock").values() {
            n.notify_one();
        }
        self.kick.notify_waiters();
    }

    /// Wake the delivery loops of this process that hold their peer's lease
    /// and wait for work (another process of this node queued some);
    /// backoffs are left to run out, and loops standing by look for
    /// themselves every `LEASE_CHECK`.
    pub fn wake_idle(&self) {
        let leading = self.leading.lock().expect("lock");
        for (peer, n) in self.wakers.lock().expect("lock").iter() {
            if leading.contains(peer) {
                n.notify_one();
            }
        }
    }

    /// Whether this process's loop for `peer` holds its lease now.
    fn set_leading(&self, peer: &str, leading: bool) {
        let mut set = self.leading.lock().expect("lock");
        if leading {
            if !set.contains(peer) {
                set.insert(peer.to_string());
            }
        } else {
            set.remove(peer);
        }
    }

    pub(crate) fn ensure_delivery_loop(self: &Arc<Self>, peer: &str) {
        let notify = {
            let mut wakers = self.wakers.lock().expect("lock");
            if wakers.contains_key(peer) {
                return;
            }
            let n = Arc::new(Notify::new());
            wakers.insert(peer.to_string(), n.clone());
            n
        };
        let kick = Arc::new(Notify::new());
        self.kicks
            .lock()
            .expect("lock")
            .insert(peer.to_string(), kick.clone());
        let this = self.clone();
        let peer = peer.to_string();
        self.tasks
            .spawn(async move { this.delivery_loop(peer, notify, kick).await });
    }

    /// End `peer`'s backoff now, if its loop is sleeping one out: the peer
    /// said it is back (it announced itself again after a restart).
    pub(crate) fn kick_peer(&self, peer: &str) {
        if let Some(k) = self.kicks.lock().expect("lock").get(peer) {
            k.notify_waiters();
        }
    }

    /// Drain one peer's outbox: batches of at most 100 items and 1 MiB, retried
    /// with exponential backoff and jitter, given up after `max_delivery_age_secs`.
    async fn delivery_loop(self: Arc<Self>, peer: String, notify: Arc<Notify>, kick: Arc<Notify>) {
        let mut failures: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let wait = match self.deliver_once(&peer, &mut failures).await {
                Ok(Next::More) => continue,
                Ok(Next::Gone) => {
                    {
                        let mut wakers = self.wakers.lock().expect("lock");
                        if wakers.get(&peer).is_some_and(|n| Arc::ptr_eq(n, &notify)) {
                            wakers.remove(&peer);
                            self.kicks.lock().expect("lock").remove(&peer);
                        }
                    }
                    if let Some(c) = &self.config.cluster {
                        self.set_leading(&peer, false);
                        let _ = self.store.release_lease(&peer, &c.instance).await;
                    }
                    self.metrics.forget_peer(&peer);
                    self.policy.reset(&peer);
                    return;
                }
                Ok(Next::Idle) => self.idle_wait(&peer, 0).await,
                Ok(Next::Offering) => self.idle_wait(&peer, self.config.offer_delay_ms).await,
                Ok(Next::Standby) => LEASE_CHECK,
                Ok(Next::Backoff(delay)) => {
                    // New items must not cut a backoff short: sleep it out,
                    // unless an operator retries dead letters or the peer
                    // says it is back.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.kick.notified() => {}
                        _ = kick.notified() => {}
                        _ = self.back_off(&peer, delay) => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "delivery loop error");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sleep out a backoff; with several processes, keep the lease meanwhile,
    /// so that no other process delivers to the failing peer at once.
    async fn back_off(&self, peer: &str, delay: Duration) {
        let Some(c) = &self.config.cluster else {
            return tokio::time::sleep(delay).await;
        };
        let until = tokio::time::Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(LEASE_CHECK)).await;
            self.renew_lease(peer, &c.instance).await;
        }
    }

    async fn renew_lease(&self, peer: &str, instance: &str) {
        if let Err(e) = self.store.hold_lease(peer, instance, LEASE_MS).await {
            tracing::warn!(%peer, error = %e, "renewing the delivery lease failed");
        }
    }

    /// A request to `peer`, renewing the lease while it is in flight (it may
    /// take longer than a lease lasts): nobody else sends the same items.
    pub(crate) async fn leased<T>(
        &self,
        peer: &str,
        request: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(c) = &self.config.cluster else {
            return request.await;
        };
        tokio::pin!(request);
        loop {
            tokio::select! {
                done = &mut request => return done,
                _ = tokio::time::sleep(LEASE_CHECK) => self.renew_lease(peer, &c.instance).await,
            }
        }
    }

    /// How long to sleep when nothing is due: until the next item falls due
    /// (and `delay_ms` more, for a lazy peer's offers).
    async fn idle_wait(&self, peer: &str, delay_ms: i64) -> Duration {
        let wait = match self.store.next_due(peer).await {
            Ok(Some(at)) => {
                Duration::from_millis((at + delay_ms - now_ms()).clamp(10, 60_000) as u64)
            }
            _ => Duration::from_secs(60),
        };
        if self.config.cluster.is_some() {
            // The lease must be renewed before it runs out.
            wait.min(LEASE_CHECK)
        } else {
            wait
        }
    }

    /// One delivery attempt: plan, send, record.
    async fn deliver_once(
        &self,
        peer: &str,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let Some(info) = self.store.peer(peer).await? else {
            return Ok(Next::Gone);
        };
        if let Some(c) = &self.config.cluster {
            // One process delivers to a peer at a time: one backoff, one
            // pipeline, one health record (PROTOCOL.md 8.1).
            let held = self.store.hold_lease(peer, &c.instance, LEASE_MS).await?;
            self.set_leading(peer, held);
            if !held {
                return Ok(Next::Standby);
            }
        }
        if !info.status.receives_forwards() {
            return Ok(Next::Idle);
        }
        let Some(inbox) = info.inbox.clone().filter(|i| !i.is_empty()) else {
            return Ok(Next::Idle);
        };
        let now = now_ms();
        let lazy = self.offers_to(&info);
        self.metrics.set_lazy(peer, lazy);
        if lazy {
            // An offer goes when its oldest item is past the offer delay (an
            // eager path may still bring the younger ones), and takes along
            // the items past half of it: fewer, fuller offers.
            let delay = self.config.offer_delay_ms;
            let limit = crate::lazy::MAX_IHAVE_ITEMS as i64;
            let due = self.store.due_items(peer, now - delay / 2, limit).await?;
            let oldest = due.iter().map(|i| i.next_attempt).min();
            if oldest.is_none_or(|t| t > now - delay) {
                return Ok(Next::Offering);
            }
            return self.offer_once(&info, &inbox, due, now, failures).await;
        }
        let due = self
            .store
            .due_items(peer, now, (crate::limits::MAX_ITEMS * PIPELINE) as i64)
            .await?;
        if due.is_empty() {
            return Ok(Next::Idle);
        }
        let plan = plan_batches(due, PIPELINE);
        self.store.delete_items(&plan.hidden).await?;
        self.give_up_too_big(&plan.too_big, now).await?;
        if plan.batches.is_empty() {
            let dropped = plan.hidden.is_empty() && plan.too_big.is_empty();
            return Ok(if dropped { Next::Idle } else { Next::More });
        }
        let sent = self.leased(peer, self.send(&inbox, &plan.batches)).await;
        self.metrics.forwarded("sent", sent.new, sent.duplicate);
        self.judge_link(&info, sent.new, sent.duplicate).await;
        self.record_sent(&info, &plan.batches, sent, now, failures)
            .await
    }

    /// Items too large for any inbox request are dead letters at once.
    pub(crate) async fn give_up_too_big(
        &self,
        ids: &[i64],
        now: i64,
    ) -> Result<(), meshrelay_store::Error> {
        self.store
            .defer_items(
                ids,
                now,
                "payload larger than an inbox request may be",
                true,
            )
            .await
    }
}

/// What one delivery attempt does with the items that are due.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// Up to `pipeline` requests, each within the inbox limits, in queue order.
    pub batches: Vec<Vec<OutboxItem>>,
    /// Items whose payload was hidden since it was queued: never forwarded.
    pub hidden: Vec<i64>,
    /// Items too large for any inbox request: dead at once.
    pub too_big: Vec<i64>,
}

/// Cut the due items (oldest first) into at most `pipeline` inbox requests;
/// what does not fit waits for the next attempt.
pub fn plan_batches(due: Vec<OutboxItem>, pipeline: usize) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut body = InboxBody::default();
    let mut batch = Vec::new();
    for item in due {
        let Some(len) = item.json.as_ref().map(String::len) else {
            plan.hidden.push(item.item_id);
            continue;
        };
        if !InboxBody::fits_alone(len) {
            plan.too_big.push(item.item_id);
            continue;
        }
        if !body.has_room(len) {
            plan.batches.push(std::mem::take(&mut batch));
            body = InboxBody::default();
            if plan.batches.len() == pipeline {
                return plan;
            }
        }
        body.push(item.json.as_deref().unwrap_or_default(), item.hops, false);
        batch.push(item);
    }
    if !batch.is_empty() {
        plan.batches.push(batch);
    }
    plan
}

#[cfg(test)]
mod tests {
    use meshrelay_store::OutboxState;

    use super::*;
    use crate::limits::{MAX_BODY_BYTES, MAX_ITEMS};

    fn item(id: i64, json: Option<String>) -> OutboxItem {
        OutboxItem {
            item_id: id,
            peer: "p".into(),
            payload_id: format!("{id}"),
            hops: 1,
            enqueued_at: 0,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            state: OutboxState::Pending,
            json,
        }
    }

    #[test]
    fn batches_keep_to_the_inbox_limits_and_the_pipeline() {
        let small = || Some(r#"{"x":1}"#.to_string());
        let due: Vec<_> = (0..450).map(|i| item(i, small())).collect();
        let plan = plan_batches(due, 4);
        assert_eq!(plan.batches.len(), 4);
        assert!(plan.batches.iter().all(|b| b.len() == MAX_ITEMS));
        assert_eq!(plan.batches[1][0].item_id, 100, "queue order is kept");

        let third = Some(format!("\"{}\"", "x".repeat(MAX_BODY_BYTES / 3)));
        let due = vec![
            item(1, third.clone()),
            item(2, third.clone()),
            item(3, third),
        ];
        let plan = plan_batches(due, 4);
        let sizes: Vec<usize> = plan.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1], "a body never passes 1 MiB");
    }

    #[test]
    fn hidden_and_oversized_items_are_set_apart() {
        let huge = Some("x".repeat(MAX_BODY_BYTES));
        let due = vec![item(1, None), item(2, huge), item(3, Some("{}".into()))];
        let plan = plan_batches(due, 4);
        assert_eq!((plan.hidden, plan.too_big), (vec![1], vec![2]));
        assert_eq!(plan.batches.len(), 1);
        assert_eq!(plan.batches[0][0].item_id, 3);
    }

    #[test]
    fn nothing_due_plans_nothing() {
        assert_eq!(plan_batches(Vec::new(), 4), BatchPlan::default());
    }
}
