//! Anti-entropy sync (PROTOCOL.md 5.5): negentropy version 1 over the
//! `(created_at, id)` items of the payloads matching one filter in a window.
//!
//! The responder is stateless between rounds, as negentropy allows: each round
//! rebuilds its view of the set, so views are cached for a short while, keyed
//! by the request and by the store's generation (a new payload makes a new view).
//! The initiator's side, which fetches and pushes what differs, is `initiator`.

use std::sync::Arc;
use std::time::Duration;

use meshrelay_protocol::Filter;
use meshrelay_store::Store;
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use serde::{Deserialize, Serialize};

pub use crate::limits::{FRAME_LIMIT, MAX_FETCH_ANSWER_BYTES, MAX_FETCH_IDS};

mod initiator;
pub use initiator::{own_filters, Progress, Report, Target};

/// `POST /v1/federation/sync` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub filter: serde_json::Value,
    pub since: u64,
    pub until: u64,
    /// Hex negentropy message.
    pub msg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    pub msg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub ids: Vec<String>,
}

/// Why a sync round could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("more than {0} payloads in this window; split it")]
    TooManyItems(usize),
    #[error("bad sync request: {0}")]
    BadRequest(String),
    /// The session passed `sync_max_rounds` within `sync_max_secs`.
    #[error("this session passed {0} rounds; start a new one later")]
    TooManyRounds(u32),
    #[error("storage failed")]
    Store(#[from] meshrelay_store::Error),
}

/// A sealed, sorted item set ready for negentropy.
pub type ItemSet = Arc<NegentropyStorageVector>;

/// One item of a sync set: `(created_at, raw id)`.
pub type Row = (u64, [u8; 32]);

/// The items of `filter` over `[since, until]`, sorted as negentropy sorts
/// them; None past `cap`.
pub async fn load_rows(
    store: &Store,
    filter: &Filter,
    since: u64,
    until: u64,
    cap: usize,
) -> Result<Option<Vec<Row>>, SyncError> {
    let to_i64 = |t: u64| t.min(i64::MAX as u64) as i64;
    let Some(rows) = store
        .sync_items(filter, to_i64(since), to_i64(until), cap)
        .await?
    else {
        return Ok(None);
    };
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|(t, id)| (t.max(0) as u64, id))
        .collect();
    rows.sort_unstable();
    Ok(Some(rows))
}

/// A sealed negentropy set of `rows`.
pub fn item_set(rows: &[Row]) -> Result<NegentropyStorageVector, SyncError> {
    let mut set = NegentropyStorageVector::with_capacity(rows.len());
    for (created_at, id) in rows {
        set.insert(*created_at, Id::from_byte_array(*id))
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
    }
    set.seal()
        .map_err(|e| SyncError::BadRequest(e.to_string()))?;
    Ok(set)
}

/// Load the items of `filter` over `[since, until]` as a sealed set; None past `cap`.
pub async fn load_items(
    store: &Store,
    filter: &Filter,
    since: u64,
    until: u64,
    cap: usize,
) -> Result<Option<NegentropyStorageVector>, SyncError> {
    match load_rows(store, filter, since, until, cap).await? {
        None => Ok(None),
        Some(rows) => item_set(&rows).map(Some),
    }
}

/// Sets up to this size are reconciled in one session.
pub const PIECE_SPLIT_MIN: usize = 262_144;
/// Larger sets are cut into pieces of at least this many items.
pub const PIECE_ITEMS: usize = 140_000;

/// Cut a large window into time pieces, each reconciled as its own session.
///
/// Negentropy (the crate, as the reference) splits a range into 16 buckets
/// until a range holds fewer than 32 items, then sends those ids in full, and
/// the other side answers with its own. A differing item therefore costs
/// about the ids of its last range, both ways: with a million items that range
/// holds 15 (a million / 16^4), about 1 KB. A piece of 140,000–280,000 items
/// ends in ranges of 2–4, which roughly halves what scattered differences cost
/// (measured by `meshrelay-bench sync`, see docs/performance.md).
///
/// `rows` are sorted and lie in `[since, until]`; the pieces cover
/// `[since, until]` without overlap, cut at whole seconds, with the row range
/// each holds.
pub fn pieces(rows: &[Row], since: u64, until: u64) -> Vec<(u64, u64, std::ops::Range<usize>)> {
    if rows.len() < PIECE_SPLIT_MIN {
        return vec![(since, until, 0..rows.len())];
    }
    let k = rows.len() / PIECE_ITEMS;
    let mut out = Vec::with_capacity(k);
    let (mut start, mut from) = (since, 0usize);
    for i in 1..k {
        let cut = rows[i * rows.len() / k].0;
        if cut <= start || cut > until {
            continue; // one second holds a whole piece: cut later
        }
        let to = rows.partition_point(|r| r.0 < cut);
        if to == from {
            continue;
        }
        out.push((start, cut - 1, from..to));
        (start, from) = (cut, to);
    }
    out.push((start, until, from..rows.len()));
    out
}

/// The filter of a sync session: a section 3 filter without `limit`; its own
/// `since`/`until`, if any, narrow the session's window.
pub fn parse_filter(v: &serde_json::Value) -> Result<Filter, SyncError> {
    let f = Filter::from_value(v.clone()).map_err(|e| SyncError::BadRequest(e.message))?;
    if f.limit.is_some() {
        return Err(SyncError::BadRequest(
            "a sync filter has no limit".to_string(),
        ));
    }
    Ok(f)
}

/// The window a filter and a session's bounds select together.
pub fn window(filter: &Filter, since: u64, until: u64) -> (u64, u64) {
    (
        since.max(filter.since.unwrap_or(0)),
        until.min(filter.until.unwrap_or(u64::MAX)),
    )
}

/// One session as a responder sees it: the peer, the filter, the window.
type SessionKey = (String, String, u64, u64);

/// The responder's side: views cached per (peer, request window, generation),
/// and rounds counted per session, so one initiator cannot keep a session
/// going forever (`sync_max_rounds` within `sync_max_secs`).
pub struct Responder {
    cache: moka::sync::Cache<(String, String, u64, u64, i64), ItemSet>,
    rounds: moka::sync::Cache<SessionKey, Arc<std::sync::atomic::AtomicU32>>,
    pub max_items: usize,
    max_rounds: u32,
}

impl Responder {
    pub fn new(max_items: usize, max_rounds: u32, max_secs: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(4)
                .time_to_live(Duration::from_secs(60))
                .build(),
            rounds: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(max_secs.max(1)))
                .build(),
            max_items,
            max_rounds,
        }
    }

    /// Count one round of `key`'s session; refused past `max_rounds`.
    fn count_round(&self, key: SessionKey) -> Result<(), SyncError> {
        let n = self.rounds.get_with(key, Default::default);
        let done = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if done >= self.max_rounds {
            return Err(SyncError::TooManyRounds(self.max_rounds));
        }
        Ok(())
    }

    /// Answer one round of a session from `peer`.
    pub async fn answer(
        &self,
        store: &Store,
        peer: &str,
        req: &SyncRequest,
    ) -> Result<Vec<u8>, SyncError> {
        let msg = hex::decode(&req.msg)
            .map_err(|_| SyncError::BadRequest("msg is not hex".to_string()))?;
        if msg.len() > FRAME_LIMIT {
            return Err(SyncError::BadRequest(format!(
                "msg is larger than {FRAME_LIMIT} bytes"
            )));
        }
        if req.since > req.until {
            return Err(SyncError::BadRequest("since is after until".to_string()));
        }
        let filter = parse_filter(&req.filter)?;
        let (since, until) = window(&filter, req.since, req.until);
        let filter_json = serde_json::to_string(&filter).expect("serializes");
        self.count_round((peer.to_string(), filter_json.clone(), since, until))?;
        let generation = store.payloads_generation().await?;
        let key = (peer.to_string(), filter_json, since, until, generation);
        let set = match self.cache.get(&key) {
            Some(set) => set,
            None => {
                let set = load_items(store, &filter, since, until, self.max_items)
                    .await?
                    .ok_or(SyncError::TooManyItems(self.max_items))?;
                let set = Arc::new(set);
                self.cache.insert(key, set.clone());
                set
            }
        };
        let mut neg = Negentropy::borrowed(set.as_ref(), FRAME_LIMIT as u64)
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
        neg.reconcile(&msg)
            .map_err(|e| SyncError::BadRequest(format!("negentropy: {e}")))
    }
}

/// The initiator's side of one session over a loaded set.
pub struct Session {
    neg: Negentropy<'static, NegentropyStorageVector>,
    /// Ids this node has and the peer lacks, hex.
    pub have: Vec<String>,
    /// Ids the peer has and this node lacks, hex.
    pub need: Vec<String>,
}

impl Session {
    /// Start a session; returns it and the first message.
    pub fn start(set: NegentropyStorageVector) -> Result<(Self, Vec<u8>), SyncError> {
        let mut neg = Negentropy::owned(set, FRAME_LIMIT as u64)
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
        let first = neg
            .initiate()
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
        Ok((
            Self {
                neg,
                have: Vec::new(),
                need: Vec::new(),
            },
            first,
        ))
    }

    /// Take the responder's answer; Some(next message) or None when done.
    pub fn step(&mut self, answer: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = self
            .neg
            .reconcile_with_ids(answer, &mut have, &mut need)
            .map_err(|e| SyncError::BadRequest(format!("negentropy: {e}")))?;
        self.have
            .extend(have.iter().map(|id| hex::encode(id.as_bytes())));
        self.need
            .extend(need.iter().map(|id| hex::encode(id.as_bytes())));
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(u64, u8)]) -> NegentropyStorageVector {
        let mut s = NegentropyStorageVector::new();
        for (t, b) in items {
            let mut id = [0u8; 32];
            id[0] = *b;
            id[31] = (*t % 251) as u8;
            s.insert(*t, Id::from_byte_array(id)).unwrap();
        }
        s.seal().unwrap();
        s
    }

    #[test]
    fn pieces_cover_the_window_at_whole_seconds_without_overlap() {
        // 600,000 rows, five a second: four pieces of about 150,000.
        let rows: Vec<Row> = (0..600_000u64)
            .map(|i| (1_000 + i / 5, [(i % 251) as u8; 32]))
            .collect();
        let mut sorted = rows.clone();
        sorted.sort_unstable();
        let p = pieces(&sorted, 500, 500_000);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].0, 500);
        assert_eq!(p[3].1, 500_000);
        for w in p.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0, "adjacent, no gap, no overlap");
            assert_eq!(w[0].2.end, w[1].2.start);
        }
        assert_eq!(p[3].2.end, sorted.len());
        for (s, u, r) in &p {
            assert!(r.len() >= PIECE_ITEMS, "{r:?}");
            assert!(sorted[r.clone()].iter().all(|(t, _)| s <= t && t <= u));
        }
        // Small sets stay whole; a single second cannot be cut.
        assert_eq!(pieces(&sorted[..1000], 0, 9).len(), 1);
        let same: Vec<Row> = (0..300_000u32)
            .map(|i| {
                (7, {
                    let mut id = [0u8; 32];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    id
                })
            })
            .collect();
        assert_eq!(pieces(&same, 0, 100), vec![(0, 100, 0..300_000)]);
    }

    #[test]
    fn a_session_finds_both_sides_differences() {
        let common: Vec<(u64, u8)> = (0..5_000u64).map(|t| (1000 + t, 7)).collect();
        let mut mine = common.clone();
        mine.push((1500, 1));
        let mut theirs = common;
        theirs.push((2500, 2));
        theirs.push((2501, 3));
        let responder = set(&theirs);
        let (mut session, mut msg) = Session::start(set(&mine)).unwrap();
        let mut rounds = 0;
        loop {
            assert!(msg.len() <= FRAME_LIMIT);
            rounds += 1;
            let mut r = Negentropy::borrowed(&responder, FRAME_LIMIT as u64).unwrap();
            let answer = r.reconcile(&msg).unwrap();
            match session.step(&answer).unwrap() {
                Some(next) => msg = next,
                None => break,
            }
        }
        assert_eq!(session.have.len(), 1);
        assert_eq!(session.need.len(), 2);
        assert!(session.have[0].starts_with("01"));
        assert!(rounds < 10, "{rounds} rounds");
    }
}
