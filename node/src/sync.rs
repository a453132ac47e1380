//! The initiator's side of anti-entropy sync (PROTOCOL.md 5.5): reconcile with
//! a peer the payloads matching this node's own preference over a window, fetch
//! what is missing here (checked like any inbound payload), and push through
//! the peer's inbox what it lacks. Used by the `sync` job and `meshrelay sync`.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use indicatif::ProgressBar;
use meshrelay_federation::router::wants;
use meshrelay_federation::service::{MAX_BODY_BYTES, MAX_ITEMS};
use meshrelay_federation::sync::{
    item_set, load_rows, pieces, window, Session, SyncResponse, MAX_FETCH_IDS,
};
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::{Filter, Payload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ingest::{check, count, store_checked, Source};
use crate::metrics::{SyncItemLabels, SyncLabels};
use crate::state::{unix_now, AppState};

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
#[derive(Debug, Default, Clone, Serialize)]
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
    state: &'a AppState,
    target: &'a Target,
    progress: Option<&'a ProgressBar>,
    report: Report,
}

/// Reconcile with `target` over `[since, until]`.
pub async fn sync_peer(
    state: &AppState,
    target: &Target,
    since: u64,
    until: u64,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut run = Run {
        state,
        target,
        progress,
        report: Report {
            peer: target.node.clone(),
            ..Report::default()
        },
    };
    for filter in own_filters(&state.settings.subscribe) {
        let (have, need) = run.reconcile(&filter, since, until).await?;
        run.report.have += have.len() as u64;
        run.report.need += need.len() as u64;
        if let Some(pb) = progress {
            pb.set_length(pb.length().unwrap_or(0) + (have.len() + need.len()) as u64);
            pb.set_message("moving payloads");
        }
        // Fetching and pushing are independent: one reads from the peer and
        // writes here, the other reads here and writes to the peer.
        let (fetched, pushed) = tokio::join!(run.fetch(need), run.push(have));
        let (fetched, pushed) = (fetched?, pushed?);
        run.report.fetched += fetched.items;
        run.report.pushed += pushed.items;
        run.report.rejected += fetched.rejected + pushed.rejected;
        run.report.transfer_bytes += fetched.bytes + pushed.bytes;
        run.report.fetch_seconds += fetched.seconds;
        run.report.push_seconds += pushed.seconds;
    }
    run.report.seconds = started.elapsed().as_secs_f64();
    Ok(run.report)
}

impl Run<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url)
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
        self.state
            .federation
            .outbound
            .post_signed(url, body, unix_now() as i64)
            .await
            .with_context(|| format!("POST {url}"))
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
        let cap = self.state.settings.sync_max_items;
        while let Some((s, u)) = windows.pop() {
            let (ls, lu) = window(filter, s, u);
            let rows = if ls > lu {
                Some(Vec::new())
            } else {
                let t = Instant::now();
                let rows = load_rows(&self.state.store, filter, ls, lu, cap).await?;
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
                if !self
                    .session(&filter_json, ps, pu, own, &mut have, &mut need)
                    .await?
                {
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
        let url = self.url("/v1/federation/sync");
        let labels = SyncLabels {
            peer: self.target.node.clone(),
            role: "initiated",
        };
        self.report.sessions += 1;
        loop {
            let body = serde_json::to_vec(&serde_json::json!({
                "filter": filter, "since": since, "until": until, "msg": hex::encode(&msg),
            }))
            .expect("serializes");
            let sent = body.len();
            self.report.msg_bytes += msg.len() as u64;
            let (status, answer) = self.post(&url, body).await?;
            self.report.sync_bytes += (sent + answer.len()) as u64;
            self.state
                .metrics
                .sync_bytes
                .get_or_create(&labels)
                .inc_by((sent + answer.len()) as u64);
            match status {
                200 => {}
                413 => return Ok(false),
                _ => bail!(
                    "sync refused: HTTP {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            }
            self.report.rounds += 1;
            self.state.metrics.sync_rounds.get_or_create(&labels).inc();
            if let Some(pb) = self.progress {
                pb.set_message(format!("reconciling: round {}", self.report.rounds));
            }
            let answer: SyncResponse =
                serde_json::from_slice(&answer).context("sync answer is not {\"msg\"}")?;
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
        self.state
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
        #[derive(Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            payloads: Vec<&'a RawValue>,
        }
        let began = Instant::now();
        let mut moved = Moved::default();
        let url = self.url("/v1/federation/fetch");
        let mut queue: Vec<String> = need;
        while !queue.is_empty() {
            let take = queue.len().min(MAX_FETCH_IDS);
            let batch: Vec<String> = queue.drain(..take).collect();
            let body = serde_json::to_vec(&serde_json::json!({ "ids": batch })).expect("json");
            let sent = body.len();
            let (status, answer) = self.post(&url, body).await?;
            moved.bytes += (sent + answer.len()) as u64;
            if status != 200 {
                bail!(
                    "fetch refused: HTTP {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            let text = std::str::from_utf8(&answer).context("fetch answer is not UTF-8")?;
            let parsed: Answer = serde_json::from_str(text).context("fetch answer")?;
            let mut wanted: HashSet<&str> = batch.iter().map(String::as_str).collect();
            let started = Instant::now();
            let mut got = Vec::new();
            for raw in parsed.payloads {
                match check(self.state, raw.get()) {
                    Ok(p) if wanted.remove(p.id.as_str()) => {
                        if wants(&self.state.settings.subscribe, &p) {
                            got.push(p);
                        } else {
                            moved.rejected += 1;
                        }
                    }
                    Ok(_) => moved.rejected += 1, // not asked for: ignored
                    Err(e) => {
                        count(self.state, "peer", &Err(e), started);
                        moved.rejected += 1;
                    }
                }
            }
            let returned = batch.len() - wanted.len();
            let results = futures_util::future::join_all(got.into_iter().map(|p| {
                let source = Source::Peer {
                    node: &self.target.node,
                    hops: 1,
                    sync: true,
                };
                store_checked(self.state, p, source)
            }))
            .await;
            let mut stored = 0;
            for r in results {
                count(self.state, "peer", &r, started);
                match r {
                    Ok(a) if !a.duplicate => stored += 1,
                    Ok(_) => {}
                    Err(_) => moved.rejected += 1,
                }
            }
            moved.items += stored;
            self.moved("fetched", stored);
            if let Some(pb) = self.progress {
                pb.inc(take as u64);
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

    /// Push through the peer's inbox what it lacks and wants, as `sync` items.
    async fn push(&self, have: Vec<String>) -> anyhow::Result<Moved> {
        #[derive(Deserialize)]
        struct Answer {
            accepted: u64,
            #[serde(default)]
            rejected: Vec<serde_json::Value>,
        }
        let began = Instant::now();
        let mut moved = Moved::default();
        for chunk in have.chunks(MAX_FETCH_IDS) {
            let found = self.state.store.payloads_by_ids(chunk).await?;
            let mut bodies: Vec<(String, usize)> = Vec::new();
            let (mut body, mut n) = (String::new(), 0);
            for (_, json) in found {
                let wanted = serde_json::from_str::<Payload>(&json)
                    .map(|p| wants(&self.target.subscribe, &p))
                    .unwrap_or(false);
                if !wanted || json.len() + 64 > MAX_BODY_BYTES {
                    continue;
                }
                if n == MAX_ITEMS || body.len() + json.len() + 64 > MAX_BODY_BYTES {
                    bodies.push((std::mem::take(&mut body), n));
                    n = 0;
                }
                body.push_str(if n == 0 { r#"{"items":["# } else { "," });
                body.push_str(r#"{"payload":"#);
                body.push_str(&json);
                body.push_str(r#","hops":1,"sync":true}"#);
                n += 1;
            }
            if n > 0 {
                bodies.push((body, n));
            }
            for (mut body, n) in bodies {
                body.push_str("]}");
                let sent = body.len();
                let (status, answer) = self.post(&self.target.inbox, body.into_bytes()).await?;
                moved.bytes += (sent + answer.len()) as u64;
                if status != 202 {
                    bail!(
                        "push refused: HTTP {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                let a: Answer = serde_json::from_slice(&answer).context("inbox answer")?;
                moved.items += a.accepted;
                moved.rejected += a.rejected.len() as u64;
                self.moved("pushed", a.accepted);
                if let Some(pb) = self.progress {
                    pb.inc(n as u64);
                }
            }
        }
        moved.seconds = began.elapsed().as_secs_f64();
        Ok(moved)
    }
}

/// The sync window ending now: the last `sync_window_days`.
pub fn default_window(state: &AppState) -> (u64, u64) {
    let now = unix_now();
    (
        now.saturating_sub(u64::from(state.settings.sync_window_days) * 86_400),
        now,
    )
}

/// The active peers as sync targets.
pub async fn active_targets(state: &AppState) -> anyhow::Result<Vec<Target>> {
    Ok(state
        .store
        .peers()
        .await?
        .into_iter()
        .filter(|p| p.status == "active")
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

/// A peer given by URL (for `meshrelay sync --peer`): fetch and check its document.
pub async fn target_by_url(state: &AppState, url: &str) -> anyhow::Result<Target> {
    let url = url.trim_end_matches('/');
    let doc = state
        .federation
        .outbound
        .fetch_node_doc(url, unix_now())
        .await
        .map_err(|e| anyhow!("fetching {url}'s node document: {e}"))?;
    if let Some(known) = state.store.peer(&doc.doc.node).await? {
        if known.status != "active" && known.status != "unreachable" {
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

/// The `sync` job: every active peer over the configured window.
pub async fn sync_all(state: &AppState) -> anyhow::Result<String> {
    let (since, until) = default_window(state);
    let targets = active_targets(state).await?;
    let (mut fetched, mut pushed, mut failed) = (0, 0, 0);
    for target in &targets {
        match sync_peer(state, target, since, until, None).await {
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
