//! The initiator's side of anti-entropy sync (PROTOCOL.md 5.5): reconcile with
//! a peer the payloads matching this node's own preference over a window, fetch
//! what is missing here (checked like any inbound payload, stored through the
//! node's `Ingest`), and push through the peer's inbox what it lacks. Run by
//! the `sync` job, and on an operator's request through the admin API.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::{Filter, Payload};
use serde::{Deserialize, Serialize};

use super::{item_set, load_rows, pieces, window, Session, SyncRequest, MAX_FETCH_IDS};
use crate::ingest::{Checked, Ingest, Source};
use crate::metrics::{SyncItemLabels, SyncLabels};
use crate::peer_client::{FetchAnswer, InboxAnswer, InboxBody};
use crate::router::wants;
use crate::Federation;

/// Peers the sync job reconciles with at once.
const SYNC_PEERS_AT_ONCE: usize = 4;
/// Bytes of payloads read from the store at once while pushing.
const PUSH_READ_BYTES: usize = 4 * 1024 * 1024;

/// Where a sync tells how far it got (the operator's `meshrelay sync` shows
/// a progress bar from it).
pub trait Progress: Send + Sync {
    /// `n` more ids are known to move.
    fn grow(&self, n: u64);
    /// `n` ids were moved (or given up on).
    fn advance(&self, n: u64);
    /// What the sync is doing now.
    fn phase(&self, what: &str);
}

/// The peer a sync runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The peer's node key (hex).
    pub node: String,
    /// Its base URL, without a trailing `/`.
    pub url: String,
    pub inbox: String,
    /// Its last known preference: only what it wants is pushed.
    pub subscribe: Subscribe,
}

/// What one sync with one peer did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    pub peer: String,
    /// Negentropy sessions run (one per filter and window piece).
    pub sessions: u64,
    /// Windows split because one side held too many payloads.
    pub splits: u64,
    /// Sync round trips.
    pub rounds: u64,
    /// Ids this node had and the peer lacked.
    pub have: u64,
    /// Ids the peer had and this node lacked.
    pub need: u64,
    /// Payloads fetched and newly stored here.
    pub fetched: u64,
    /// Payloads the peer accepted from our pushes.
    pub pushed: u64,
    /// Fetched payloads that failed their checks, or pushed ones the peer refused.
    pub rejected: u64,
    /// Bytes of sync requests and answers, as sent (JSON with hex messages).
    pub sync_bytes: u64,
    /// Bytes of the negentropy messages themselves, both ways (half the hex).
    pub msg_bytes: u64,
    /// Bytes of fetch and inbox requests and answers.
    pub transfer_bytes: u64,
    pub seconds: f64,
    /// Of `seconds`: loading this node's own item sets.
    pub load_seconds: f64,
    /// Of `seconds`: fetching and storing what was missing here. Fetching and
    /// pushing run at the same time, so these two overlap.
    pub fetch_seconds: f64,
    /// Of `seconds`: pushing what the peer lacked.
    pub push_seconds: f64,
}

/// One filter per session: `{}` for scope `all`, none for scope `none`.
pub fn own_filters(pref: &Subscribe) -> Vec<Filter> {
    match pref {
        Subscribe::All => vec![Filter::default()],
        Subscribe::None => Vec::new(),
        Subscribe::Filtered { filters } => filters.clone(),
    }
}

/// What fetching or pushing moved.
#[derive(Debug, Default)]
struct Moved {
    /// Payloads newly stored here (fetch) or accepted by the peer (push).
    items: u64,
    /// Fetched payloads that failed their checks, or pushes the peer refused.
    rejected: u64,
    /// Bytes of requests and answers.
    bytes: u64,
    seconds: f64,
}

struct Run<'a> {
    fed: &'a Federation,
    ingest: &'a dyn Ingest,
    target: &'a Target,
    progress: Option<&'a dyn Progress>,
    report: Report,
}

impl Federation {
    /// Reconcile with `target` over `[since, until]`, storing what is fetched
    /// through `ingest`.
    pub async fn sync_peer(
        &self,
        ingest: &dyn Ingest,
        target: &Target,
        (since, until): (u64, u64),
        progress: Option<&dyn Progress>,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let mut run = Run {
            fed: self,
            ingest,
            target,
            progress,
            report: Report {
                peer: target.node.clone(),
                ..Report::default()
            },
        };
        for filter in own_filters(&self.config.own_subscribe) {
            run.one_filter(&filter, since, until).await?;
        }
        run.report.seconds = started.elapsed().as_secs_f64();
        Ok(run.report)
    }
}

impl Run<'_> {
    /// Reconcile one filter of our preference, then move what differs.
    async fn one_filter(&mut self, filter: &Filter, since: u64, until: u64) -> anyhow::Result<()> {
        let (have, need) = self.reconcile(filter, since, until).await?;
        self.report.have += have.len() as u64;
        self.report.need += need.len() as u64;
        if let Some(p) = self.progress {
            p.grow((have.len() + need.len()) as u64);
            p.phase("moving payloads");
        }
        // Fetching and pushing are independent: one reads from the peer and
        // writes here, the other reads here and writes to the peer.
        let (fetched, pushed) = tokio::join!(self.fetch(need), self.push(have));
        let (fetched, pushed) = (fetched?, pushed?);
        self.report.fetched += fetched.items;
        self.report.pushed += pushed.items;
        self.report.rejected += fetched.rejected + pushed.rejected;
        self.report.transfer_bytes += fetched.bytes + pushed.bytes;
        self.report.fetch_seconds += fetched.seconds;
        self.report.push_seconds += pushed.seconds;
        Ok(())
    }

    /// Run sessions over `[since, until]`, splitting the window whenever one
    /// side holds more than it reconciles at once. Returns (have, need).
    async fn reconcile(
        &mut self,
        filter: &Filter,
        since: u64,
        until: u64,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let mut windows = vec![(since, until)];
        let filter_json = serde_json::to_value(filter).expect("serializes");
        let cap = self.fed.config.sync.max_items;
        while let Some((s, u)) = windows.pop() {
            let (ls, lu) = window(filter, s, u);
            let rows = if ls > lu {
                Some(Vec::new())
            } else {
                let t = Instant::now();
                let rows = load_rows(&self.fed.store, filter, ls, lu, cap).await?;
                self.report.load_seconds += t.elapsed().as_secs_f64();
                rows
            };
            let Some(rows) = rows else {
                // Over our own cap: split without asking.
                windows.extend(self.halves(s, u, cap)?);
                continue;
            };
            // A large set is reconciled in time pieces (see `pieces`); a
            // piece the peer refuses as too large is split and loaded again.
            for (ps, pu, range) in pieces(&rows, s, u) {
                let own = item_set(&rows[range])?;
                let limit = std::time::Duration::from_secs(self.fed.config.sync.max_secs);
                let session = self.session(&filter_json, ps, pu, own, &mut have, &mut need);
                let finished = tokio::time::timeout(limit, session).await.map_err(|_| {
                    anyhow!(
                        "a sync session passed sync_max_secs ({} s)",
                        limit.as_secs()
                    )
                })??;
                if !finished {
                    windows.extend(self.halves(ps, pu, cap)?);
                }
            }
        }
        Ok((have, need))
    }

    /// `[s, u]` cut in two, the earlier half last (it is popped first).
    fn halves(&mut self, s: u64, u: u64, cap: usize) -> anyhow::Result<[(u64, u64); 2]> {
        if s >= u {
            bail!("more than {cap} payloads share created_at {s}; cannot split further");
        }
        let mid = s + (u - s) / 2;
        self.report.splits += 1;
        Ok([(mid + 1, u), (s, mid)])
    }

    /// One negentropy session. Ok(false) when the peer answered 413 (split).
    async fn session(
        &mut self,
        filter: &serde_json::Value,
        since: u64,
        until: u64,
        own: negentropy::NegentropyStorageVector,
        have: &mut Vec<String>,
        need: &mut Vec<String>,
    ) -> anyhow::Result<bool> {
        let (mut session, mut msg) = Session::start(own)?;
        let labels = SyncLabels {
            peer: self.target.node.clone(),
            role: "initiated",
        };
        self.report.sessions += 1;
        let max_rounds = self.fed.config.sync.max_rounds;
        for round in 0.. {
            if round == max_rounds {
                bail!("a sync session passed sync_max_rounds ({max_rounds}) without ending");
            }
            let req = SyncRequest {
                filter: filter.clone(),
                since,
                until,
                msg: hex::encode(&msg),
            };
            self.report.msg_bytes += msg.len() as u64;
            let answer = self
                .fed
                .client
                .sync_round(&self.target.url, &req)
                .await
                .with_context(|| format!("sync with {}", self.target.url))?;
            let (answer, bytes) = match answer {
                Ok(ok) => ok,
                Err(refused) if refused.status == 413 => return Ok(false),
                Err(refused) => bail!(
                    "sync refused: HTTP {}: {}",
                    refused.status,
                    refused.excerpt(crate::MAX_ERROR_TEXT)
                ),
            };
            self.report.sync_bytes += bytes as u64;
            self.fed
                .metrics
                .sync_bytes
                .get_or_create(&labels)
                .inc_by(bytes as u64);
            self.report.rounds += 1;
            self.fed.metrics.sync_rounds.get_or_create(&labels).inc();
            if let Some(p) = self.progress {
                p.phase(&format!("reconciling: round {}", self.report.rounds));
            }
            let answer = hex::decode(&answer.msg).context("sync answer msg is not hex")?;
            self.report.msg_bytes += answer.len() as u64;
            match session.step(&answer)? {
                Some(next) => msg = next,
                None => break,
            }
        }
        have.append(&mut session.have);
        need.append(&mut session.need);
        Ok(true)
    }

    fn moved(&self, direction: &'static str, n: u64) {
        self.fed
            .metrics
            .sync_items
            .get_or_create(&SyncItemLabels {
                peer: self.target.node.clone(),
                direction,
            })
            .inc_by(n);
    }

    /// Fetch what the peer has and we lack, at most 500 ids a request; ids that
    /// did not fit in an answer are asked for again.
    async fn fetch(&self, need: Vec<String>) -> anyhow::Result<Moved> {
        let began = Instant::now();
        let mut moved = Moved::default();
        let mut queue: Vec<String> = need;
        while !queue.is_empty() {
            let take = queue.len().min(MAX_FETCH_IDS);
            let batch: Vec<String> = queue.drain(..take).collect();
            let answer = self
                .fed
                .client
                .fetch(&self.target.url, &batch)
                .await
                .with_context(|| format!("fetch from {}", self.target.url))?;
            moved.bytes += answer.body.len() as u64;
            if answer.status != 200 {
                bail!(
                    "fetch refused: HTTP {}: {}",
                    answer.status,
                    answer.excerpt(crate::MAX_ERROR_TEXT)
                );
            }
            let text = std::str::from_utf8(&answer.body).context("fetch answer is not UTF-8")?;
            let parsed: FetchAnswer = serde_json::from_str(text).context("fetch answer")?;
            let mut wanted: HashSet<&str> = batch.iter().map(String::as_str).collect();
            let mut got = Vec::new();
            for raw in parsed.payloads {
                match self.ingest.check(raw.get()) {
                    Ok(c) if wanted.remove(c.payload.id.as_str()) => {
                        if wants(&self.fed.config.own_subscribe, &c.payload) {
                            got.push(c);
                        } else {
                            moved.rejected += 1;
                        }
                    }
                    // Not asked for, or failing its checks: not stored.
                    Ok(_) | Err(_) => moved.rejected += 1,
                }
            }
            let returned = batch.len() - wanted.len();
            let (stored, refused) = self.store_fetched(got).await;
            moved.items += stored;
            moved.rejected += refused;
            self.moved("fetched", stored);
            if let Some(p) = self.progress {
                p.advance(take as u64);
            }
            // The answer was full: ask again for the rest. Nothing returned at
            // all: the peer no longer shows them (hidden or pruned); give up.
            if returned > 0 && !wanted.is_empty() {
                queue.extend(wanted.into_iter().map(str::to_string));
            }
        }
        moved.seconds = began.elapsed().as_secs_f64();
        Ok(moved)
    }

    /// Store fetched payloads together (they share the writer's batches);
    /// returns (newly stored, refused).
    async fn store_fetched(&self, got: Vec<Checked>) -> (u64, u64) {
        let source = Source::Peer {
            node: &self.target.node,
            hops: 1,
            sync: true,
        };
        let results =
            futures_util::future::join_all(got.into_iter().map(|p| self.ingest.store(p, source)))
                .await;
        let (mut stored, mut refused) = (0, 0);
        for r in results {
            match r {
                Ok(a) if !a.duplicate => stored += 1,
                Ok(_) => {}
                Err(_) => refused += 1,
            }
        }
        (stored, refused)
    }

    /// Push through the peer's inbox what it lacks and wants, as `sync` items,
    /// reading a few MiB of payloads at a time and sending them before the next.
    async fn push(&self, have: Vec<String>) -> anyhow::Result<Moved> {
        let began = Instant::now();
        let mut moved = Moved::default();
        for chunk in have.chunks(MAX_FETCH_IDS) {
            let mut left: Vec<String> = chunk.to_vec();
            while !left.is_empty() {
                let (rows, more) = self
                    .fed
                    .store
                    .payloads_by_ids(&left, PUSH_READ_BYTES)
                    .await?;
                let read: HashSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
                left.retain(|id| !read.contains(id.as_str()));
                for body in self.push_bodies(&rows) {
                    self.push_one(body, &mut moved).await?;
                }
                if !more {
                    break;
                }
            }
        }
        moved.seconds = began.elapsed().as_secs_f64();
        Ok(moved)
    }

    /// Deliver one inbox body to the peer and count what it accepted.
    async fn push_one(&self, body: InboxBody, moved: &mut Moved) -> anyhow::Result<()> {
        let n = body.len() as u64;
        let answer = self
            .fed
            .client
            .inbox(&self.target.inbox, body)
            .await
            .with_context(|| format!("push to {}", self.target.inbox))?;
        moved.bytes += answer.body.len() as u64;
        if answer.status != 202 {
            bail!(
                "push refused: HTTP {}: {}",
                answer.status,
                answer.excerpt(crate::MAX_ERROR_TEXT)
            );
        }
        let a: InboxAnswer = serde_json::from_slice(&answer.body).context("inbox answer")?;
        moved.items += a.accepted;
        moved.rejected += a.rejected.len() as u64;
        self.moved("pushed", a.accepted);
        if let Some(p) = self.progress {
            p.advance(n);
        }
        Ok(())
    }

    /// The inbox bodies carrying those of `rows` that the peer wants.
    fn push_bodies(&self, rows: &[(String, String)]) -> Vec<InboxBody> {
        let mut bodies = vec![InboxBody::default()];
        for (_, json) in rows {
            let wanted = serde_json::from_str::<Payload>(json)
                .map(|p| wants(&self.target.subscribe, &p))
                .unwrap_or(false);
            if !wanted || !InboxBody::fits_alone(json.len()) {
                continue;
            }
            if !bodies.last().is_some_and(|b| b.has_room(json.len())) {
                bodies.push(InboxBody::default());
            }
            bodies.last_mut().expect("never empty").push(json, 1, true);
        }
        bodies.retain(|b| !b.is_empty());
        bodies
    }
}

impl Federation {
    /// The sync window ending now: the last `sync_window_days`.
    pub fn default_sync_window(&self) -> (u64, u64) {
        let now = meshrelay_protocol::clock::now_wire_secs();
        let days = u64::from(self.config.sync.window_days);
        (now.saturating_sub(days * 86_400), now)
    }

    /// The peers the scheduled sync reconciles with, as targets.
    pub async fn sync_targets(&self) -> anyhow::Result<Vec<Target>> {
        Ok(self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status.is_sync_target())
            .filter_map(|p| {
                let subscribe = p
                    .subscribe
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<Subscribe>(s).ok())?;
                Some(Target {
                    inbox: p.inbox.clone().filter(|i| !i.is_empty())?,
                    node: p.node,
                    url: p.url,
                    subscribe,
                })
            })
            .collect())
    }

    /// A peer given by URL (an operator's `meshrelay sync --peer`): fetch and
    /// check its document; a known peer must be one sync may run with.
    pub async fn sync_target_by_url(&self, url: &str) -> anyhow::Result<Target> {
        let url = url.trim_end_matches('/');
        let doc = self
            .document(url)
            .await
            .map_err(|e| anyhow!("fetching {url}'s node document: {e}"))?;
        if let Some(known) = self.store.peer(&doc.doc.node).await? {
            // An operator may sync by hand with a peer it cannot deliver to.
            if !known.status.accepts_inbox() {
                bail!(
                    "{url} is a {} peer here; sync needs an active one",
                    known.status
                );
            }
        }
        Ok(Target {
            node: doc.doc.node,
            url: url.to_string(),
            inbox: doc.doc.inbox,
            subscribe: doc.doc.subscribe,
        })
    }

    /// The `sync` job: every sync target (active or unreachable) over the
    /// configured window, a few peers at a time, each on its own: one slow or
    /// hostile peer costs only its own session (bounded by sync_max_rounds
    /// and sync_max_secs), not the others' turns.
    pub async fn sync_all(&self, ingest: &dyn Ingest) -> anyhow::Result<String> {
        use futures_util::StreamExt;
        let window = self.default_sync_window();
        let targets = self.sync_targets().await?;
        let results: Vec<(Target, anyhow::Result<Report>)> =
            futures_util::stream::iter(targets.clone())
                .map(|t| async move {
                    let report = self.sync_peer(ingest, &t, window, None).await;
                    (t, report)
                })
                .buffer_unordered(SYNC_PEERS_AT_ONCE)
                .collect()
                .await;
        let (mut fetched, mut pushed, mut failed) = (0, 0, 0);
        for (target, result) in results {
            match result {
                Ok(r) => {
                    tracing::info!(peer = %r.peer, rounds = r.rounds, have = r.have, need = r.need,
                        fetched = r.fetched, pushed = r.pushed, rejected = r.rejected,
                        sync_bytes = r.sync_bytes, seconds = r.seconds, "synced with peer");
                    fetched += r.fetched;
                    pushed += r.pushed;
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(peer = %target.node, url = %target.url, error = format!("{e:#}"), "sync failed");
                }
            }
        }
        let summary = format!(
            "synced with {} of {} peers: fetched {fetched}, pushed {pushed}",
            targets.len() - failed,
            targets.len()
        );
        if failed > 0 && failed == targets.len() {
            bail!("{summary}; all failed");
        }
        Ok(summary)
    }
}
