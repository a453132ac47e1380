//! One attempt's requests and what came of them: the batches sent at once,
//! delivered items leaving the outbox, the rest waiting out a backoff (or a
//! peer's `Retry-After`) or becoming dead letters, and the peer's health.

use std::time::Duration;

use meshrelay_protocol::clock::now_secs;
use meshrelay_store::{OutboxItem, PeerStatus};

use crate::delivery::{Next, UNREACHABLE_AFTER};
use crate::peer_client::{InboxAnswer, InboxBody};
use crate::Federation;

impl Federation {
    /// Send the batches at once (one request each): the failures' batch
    /// indexes and why (the peer's text cut to `MAX_ERROR_TEXT`), and what
    /// the peer's answers said of the rest.
    pub(crate) async fn send(&self, inbox: &str, batches: &[Vec<OutboxItem>]) -> Sent {
        let results = futures_util::future::join_all(batches.iter().map(|batch| {
            let mut body = InboxBody::default();
            for item in batch {
                body.push(item.json.as_deref().unwrap_or("null"), item.hops, false);
            }
            // Each peer's loop holds at most PIPELINE requests: a slow peer
            // ties up its own loop only, never another peer's deliveries.
            self.client.inbox(inbox, body)
        }))
        .await;
        let mut sent = Sent::default();
        let mut other_failure = false;
        let mut wait = Duration::ZERO;
        sent.failed = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, result)| match result {
                Ok(answer) if answer.status == 202 => {
                    self.metrics.bytes("inbox", answer.wire_bytes);
                    if let Ok(a) = serde_json::from_slice::<InboxAnswer>(&answer.body) {
                        sent.new += a.accepted;
                        sent.duplicate += a.duplicates;
                    }
                    None
                }
                Ok(answer) => {
                    if answer.status == 429 {
                        wait =
                            wait.max(Duration::from_secs(answer.retry_after.unwrap_or(1).max(1)));
                    } else {
                        other_failure = true;
                    }
                    Some((
                        i,
                        format!(
                            "HTTP {}: {}",
                            answer.status,
                            answer.excerpt(crate::MAX_ERROR_TEXT)
                        ),
                    ))
                }
                Err(e) => {
                    other_failure = true;
                    Some((i, cut(&e.to_string(), crate::MAX_ERROR_TEXT)))
                }
            })
            .collect();
        if !sent.failed.is_empty() && !other_failure {
            sent.throttled = Some(wait);
        }
        sent
    }

    /// Write what came of sending `batches`. A peer that only said "slow
    /// down" (429) is no failure: its items wait its `Retry-After` (at most
    /// `retry_max_secs`) and go again, its health and the backoff untouched;
    /// those past `max_delivery_age_secs` become dead letters as always.
    pub(crate) async fn record_sent(
        &self,
        info: &meshrelay_store::Peer,
        batches: &[Vec<OutboxItem>],
        sent: Sent,
        now: i64,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let Some(wait) = sent.throttled else {
            return self.record(info, batches, sent.failed, now, failures).await;
        };
        let wait = wait.min(Duration::from_secs(self.config.retry_max_secs.max(1)));
        let throttled: Vec<usize> = sent.failed.iter().map(|(i, _)| *i).collect();
        let (refused, delivered): (Vec<_>, Vec<_>) = batches
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.iter().map(move |item| (i, item)))
            .partition(|(i, _)| throttled.contains(i));
        let delivered: Vec<i64> = delivered.iter().map(|(_, item)| item.item_id).collect();
        self.store.delete_items(&delivered).await?;
        self.delivered
            .fetch_add(delivered.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !delivered.is_empty() {
            self.delivered_ok(info, failures).await?;
        }
        let max_age_ms = self.config.max_delivery_age_secs as i64 * 1000;
        let (dead, retry): (Vec<i64>, Vec<i64>) = {
            let (d, r): (Vec<_>, Vec<_>) = refused
                .iter()
                .partition(|(_, item)| now - item.enqueued_at >= max_age_ms);
            let ids =
                |v: Vec<&(usize, &OutboxItem)>| v.iter().map(|(_, item)| item.item_id).collect();
            (ids(d), ids(r))
        };
        let why = &sent.failed[0].1;
        self.store.defer_items(&dead, now, why, true).await?;
        self.store
            .defer_items(&retry, now + wait.as_millis() as i64, why, false)
            .await?;
        self.metrics.throttled.inc();
        tracing::debug!(peer = %info.node, retry_in = ?wait, "peer asked to slow down");
        Ok(Next::Backoff(wait))
    }

    /// An attempt delivered something: the peer's health says so (written
    /// when it changes, or every 10 s), an `unreachable` peer is active
    /// again, and the failure count starts over.
    async fn delivered_ok(
        &self,
        info: &meshrelay_store::Peer,
        failures: &mut u32,
    ) -> Result<(), meshrelay_store::Error> {
        let peer = info.node.as_str();
        // Not per batch: on SQLite each write waits for the payload writer's lock.
        if info.delivery_failures > 0 || info.last_delivery.is_none_or(|t| now_secs() - t >= 10) {
            self.store.record_delivery(peer, true, now_secs()).await?;
        }
        // A swap, not a set: an operator's block made meanwhile stays.
        if info.status == PeerStatus::Unreachable
            && self
                .store
                .swap_peer_status(peer, PeerStatus::Unreachable, PeerStatus::Active)
                .await?
        {
            tracing::info!(%peer, "peer reachable again");
        }
        *failures = 0;
        Ok(())
    }

    /// Write what came of an attempt: delivered items leave the outbox, the
    /// rest wait out a backoff or, past `max_delivery_age_secs`, become dead.
    pub(crate) async fn record(
        &self,
        info: &meshrelay_store::Peer,
        batches: &[Vec<OutboxItem>],
        failed: Vec<(usize, String)>,
        now: i64,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let peer = info.node.as_str();
        let failed_batches: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        let delivered: Vec<i64> = batches
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed_batches.contains(i))
            .flat_map(|(_, b)| b.iter().map(|item| item.item_id))
            .collect();
        self.store.delete_items(&delivered).await?;
        self.delivered
            .fetch_add(delivered.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let Some((_, why)) = failed.last() else {
            self.delivered_ok(info, failures).await?;
            return Ok(Next::More);
        };
        *failures += 1;
        let delay = self.backoff(*failures);
        let max_age_ms = self.config.max_delivery_age_secs as i64 * 1000;
        let (dead, retry): (Vec<&OutboxItem>, Vec<&OutboxItem>) = failed_batches
            .iter()
            .flat_map(|&i| batches[i].iter())
            .partition(|i| now - i.enqueued_at >= max_age_ms);
        let ids = |items: Vec<&OutboxItem>| items.iter().map(|i| i.item_id).collect::<Vec<_>>();
        self.store.defer_items(&ids(dead), now, why, true).await?;
        self.store
            .defer_items(&ids(retry), now + delay.as_millis() as i64, why, false)
            .await?;
        self.store.record_delivery(peer, false, now_secs()).await?;
        if *failures >= UNREACHABLE_AFTER
            && info.status == PeerStatus::Active
            && self
                .store
                .swap_peer_status(peer, PeerStatus::Active, PeerStatus::Unreachable)
                .await?
        {
            tracing::warn!(%peer, failures = *failures, "peer unreachable; still probing");
        }
        tracing::info!(%peer, error = %why, retry_in = ?delay, "delivery failed");
        Ok(Next::Backoff(delay))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let (min, max) = (self.config.retry_min_secs, self.config.retry_max_secs);
        backoff(min, max, failures, rand::random::<f64>())
    }
}

/// `retry_min * 2^(failures-1)`, at most `retry_max`, with jitter taking it
/// down to half, never below `retry_min` (`unit` is a random draw in [0, 1)).
fn backoff(retry_min: u64, retry_max: u64, failures: u32, unit: f64) -> Duration {
    let min = retry_min.max(1) as f64;
    let max = (retry_max as f64).max(min);
    let base = (min * 2f64.powi(failures.saturating_sub(1).min(30) as i32)).min(max);
    let low = (base / 2.0).max(min);
    Duration::from_secs_f64(low + (base - low) * unit)
}

/// What one round of inbox requests came to.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// The batches that failed, and why.
    pub failed: Vec<(usize, String)>,
    /// Some when every failure was the peer's 429: the longest `Retry-After`
    /// among them (1 s when it gave none).
    pub throttled: Option<Duration>,
    /// Items the peer's answers counted as stored, and as already held.
    pub new: u64,
    pub duplicate: u64,
}

/// `text` cut to at most `max` characters.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_maximum_and_never_goes_below_the_minimum() {
        for unit in [0.0, 0.5, 0.999] {
            let d = |failures| backoff(1, 3600, failures, unit).as_secs_f64();
            assert!(
                d(1) >= 1.0 && d(1) <= 1.0,
                "first retry is retry_min: {}",
                d(1)
            );
            assert!(d(2) >= 1.0 && d(2) <= 2.0);
            assert!(d(5) >= 8.0 && d(5) <= 16.0);
            assert!(d(40) >= 1800.0 && d(40) <= 3600.0);
            assert!(backoff(10, 20, 1, unit).as_secs_f64() >= 10.0);
        }
    }
}
