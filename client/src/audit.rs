//! The audit of one author's log across relays (PROTOCOL.md 2.2 and 4.4):
//! a pure function from what each relay serves now, and what the receipts
//! store kept from earlier answers, to findings with their evidence.
//!
//! One finding per fault, judged in this order, each fault covering the
//! `(relay, seq)` it is about so that it is not reported again as a lesser
//! kind:
//! 1. `invalid`: an entry whose id or signature does not verify, or that is
//!    not by the author (and a signed head that does not verify);
//! 2. `rollback`: a signed head lower than one the same relay signed before,
//!    unless every entry above it is hidden by a visible delete of its author;
//!    the seqs above the head on that relay are covered;
//! 3. `withheld`: a payload the relay signed a receipt or head for that it no
//!    longer serves, with no visible delete naming it;
//! 4. `omission`: a seq another relay serves validly (and no visible delete
//!    hides) that this relay does not serve at all, or an entry's `prev` this
//!    relay does not serve;
//! 5. `fork`: two or more validly signed entries with the same seq.
//!
//! A delete is *visible* when any relay serves it validly; a relay that hides
//! a target but withholds the delete itself is reported for the delete. What
//! a community's governance hides (computed by the caller from the
//! governance payloads the relays serve) is excused the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use meshrelay_protocol::receipt::SignedHead;
use meshrelay_protocol::Payload;
use serde::Serialize;
use serde_json::{json, Value};

use crate::receipts::Evidence;
use crate::relay::LogEntry;

/// What one relay serves of the author now.
#[derive(Debug, Clone)]
pub struct RelayLog {
    pub url: String,
    /// The relay's node key (from `/v1/info`).
    pub node: String,
    pub entries: Vec<LogEntry>,
    pub head: HeadSeen,
}

/// The relay's answer to `GET /v1/authors/{key}/head`.
#[derive(Debug, Clone)]
pub enum HeadSeen {
    /// 404: it holds nothing of the author.
    None,
    /// Verified, and signed by the relay's node key.
    Signed(SignedHead),
    /// Answered but not verifiable: why.
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invalid,
    Rollback,
    Withheld,
    Omission,
    Fork,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::Rollback => "rollback",
            Kind::Withheld => "withheld",
            Kind::Omission => "omission",
            Kind::Fork => "fork",
        }
    }
}

/// One fault, with what proves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The relay's URL.
    pub relay: String,
    /// `None` when unknown (an entry that claims no seq).
    pub seq: Option<u64>,
    pub id: Option<String>,
    /// A fork's ids, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    pub evidence: Value,
}

/// Audit `author`'s log as `relays` serve it against what `earlier` kept.
/// `governed` are the ids a community's visible governance hides
/// (PROTOCOL.md 9.4: moderated, by a banned key, not authorized at their
/// place), excused like the targets of a visible delete.
pub fn audit(relays: &[RelayLog], earlier: &Evidence, governed: &HashSet<String>) -> Vec<Finding> {
    let mut a = Auditor::new(relays, governed);
    a.invalid();
    a.rollbacks(earlier);
    a.withheld(earlier);
    a.omissions();
    a.forks();
    let order: HashMap<&str, usize> = relays
        .iter()
        .enumerate()
        .map(|(i, r)| (r.url.as_str(), i))
        .collect();
    let mut findings = a.findings;
    findings.sort_by_key(|f| (order[f.relay.as_str()], f.seq, f.kind));
    findings
}

struct Auditor<'r> {
    relays: &'r [RelayLog],
    /// Per relay: its valid entries by id, and every seq it serves (valid or not).
    valid: Vec<HashMap<&'r str, &'r Payload>>,
    seqs: Vec<BTreeSet<u64>>,
    /// Every valid entry anywhere: seq -> id -> the relays serving it.
    by_seq: BTreeMap<u64, BTreeMap<&'r str, Vec<usize>>>,
    /// Ids a visible delete by the author hides.
    deleted: HashSet<&'r str>,
    /// `(relay, seq)` already reported.
    covered: HashSet<(usize, u64)>,
    /// Per relay: seqs above this are covered by a rollback finding.
    rolled_back_above: Vec<Option<u64>>,
    findings: Vec<Finding>,
}

impl<'r> Auditor<'r> {
    fn new(relays: &'r [RelayLog], governed: &'r HashSet<String>) -> Self {
        let mut valid = vec![HashMap::new(); relays.len()];
        let mut seqs = vec![BTreeSet::new(); relays.len()];
        let mut by_seq: BTreeMap<u64, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
        let mut deleted: HashSet<&str> = governed.iter().map(String::as_str).collect();
        for (r, relay) in relays.iter().enumerate() {
            for e in &relay.entries {
                if let Some(s) = e.seq() {
                    seqs[r].insert(s);
                }
                if let LogEntry::Valid(p) = e {
                    valid[r].insert(p.id.as_str(), p);
                    let on = by_seq
                        .entry(p.seq)
                        .or_default()
                        .entry(p.id.as_str())
                        .or_default();
                    if !on.contains(&r) {
                        on.push(r);
                    }
                    if p.kind == "delete" {
                        deleted.extend(p.delete_targets());
                    }
                }
            }
        }
        Self {
            relays,
            valid,
            seqs,
            by_seq,
            deleted,
            covered: HashSet::new(),
            rolled_back_above: vec![None; relays.len()],
            findings: Vec::new(),
        }
    }

    fn is_covered(&self, r: usize, seq: u64) -> bool {
        self.covered.contains(&(r, seq)) || self.rolled_back_above[r].is_some_and(|h| seq > h)
    }

    fn report(
        &mut self,
        kind: Kind,
        r: usize,
        seq: Option<u64>,
        id: Option<&str>,
        evidence: Value,
    ) {
        if let Some(s) = seq {
            self.covered.insert((r, s));
        }
        self.findings.push(Finding {
            kind,
            relay: self.relays[r].url.clone(),
            seq,
            id: id.map(String::from),
            ids: None,
            evidence,
        });
    }

    fn urls(&self, on: &[usize]) -> Vec<&'r str> {
        on.iter().map(|&i| self.relays[i].url.as_str()).collect()
    }

    fn invalid(&mut self) {
        for (r, relay) in self.relays.iter().enumerate() {
            for e in &relay.entries {
                if let LogEntry::Invalid {
                    seq,
                    id,
                    reason,
                    raw,
                } = e
                {
                    let evidence = json!({"reason": reason, "entry": raw});
                    self.report(Kind::Invalid, r, *seq, id.as_deref(), evidence);
                }
            }
            if let HeadSeen::Invalid(reason) = &relay.head {
                self.report(
                    Kind::Invalid,
                    r,
                    None,
                    None,
                    json!({"reason": reason, "head": true}),
                );
            }
        }
    }

    fn rollbacks(&mut self, earlier: &Evidence) {
        for (r, relay) in self.relays.iter().enumerate() {
            let HeadSeen::Signed(now) = &relay.head else {
                continue;
            };
            let Some(before) = earlier
                .heads
                .iter()
                .filter(|h| earlier.binds(&h.node, &relay.url, &relay.node) && h.seq > now.seq)
                .max_by_key(|h| (h.seq, h.at))
            else {
                continue;
            };
            let above = self
                .by_seq
                .range(now.seq + 1..)
                .flat_map(|(_, ids)| ids.keys().copied())
                .chain([before.id.as_str()]);
            if above.into_iter().all(|id| self.deleted.contains(id)) {
                continue;
            }
            let evidence = json!({"earlier": before, "now": now});
            self.report(Kind::Rollback, r, Some(now.seq), Some(&now.id), evidence);
            self.rolled_back_above[r] = Some(now.seq);
        }
    }

    fn withheld(&mut self, earlier: &Evidence) {
        for (r, relay) in self.relays.iter().enumerate() {
            let promised = earlier
                .receipts
                .iter()
                .filter(|k| earlier.binds(&k.receipt.node, &relay.url, &relay.node))
                .map(|k| (k.seq, k.receipt.id.as_str(), json!({"receipt": k.receipt})))
                .chain(
                    earlier
                        .heads
                        .iter()
                        .filter(|h| earlier.binds(&h.node, &relay.url, &relay.node))
                        .map(|h| (h.seq, h.id.as_str(), json!({"head": h}))),
                );
            let mut missing = Vec::new();
            for (seq, id, evidence) in promised {
                if !self.valid[r].contains_key(id) && !self.deleted.contains(id) {
                    missing.push((seq, id, evidence));
                }
            }
            for (seq, id, evidence) in missing {
                if !self.is_covered(r, seq) {
                    self.report(Kind::Withheld, r, Some(seq), Some(id), evidence);
                }
            }
        }
    }

    fn omissions(&mut self) {
        let mut missing = Vec::new();
        for (&seq, ids) in &self.by_seq {
            let Some((&id, on)) = ids.iter().find(|(id, _)| !self.deleted.contains(**id)) else {
                continue;
            };
            for r in 0..self.relays.len() {
                if !self.seqs[r].contains(&seq) {
                    missing.push((r, seq, id, json!({"served_by": self.urls(on)})));
                }
            }
        }
        // A `prev` the relay does not serve: its own seq is served elsewhere
        // by another id (a fork), or nowhere.
        for r in 0..self.relays.len() {
            for p in self.valid[r].values() {
                let Some(prev) = p.prev.as_deref() else {
                    continue;
                };
                if !self.valid[r].contains_key(prev) && !self.deleted.contains(prev) && p.seq > 1 {
                    missing.push((r, p.seq - 1, prev, json!({"named_by": p.id})));
                }
            }
        }
        missing.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (r, seq, id, evidence) in missing {
            if !self.is_covered(r, seq) {
                self.report(Kind::Omission, r, Some(seq), Some(id), evidence);
            }
        }
    }

    fn forks(&mut self) {
        let mut found = Vec::new();
        for (&seq, ids) in &self.by_seq {
            if ids.len() < 2 {
                continue;
            }
            let all: Vec<&str> = ids.keys().copied().collect();
            // The relay that serves two of them, or else the first serving a
            // later one: where the second entry was seen.
            let r = (0..self.relays.len())
                .find(|r| ids.values().filter(|on| on.contains(r)).count() >= 2)
                .or_else(|| ids.values().skip(1).flatten().min().copied())
                .unwrap_or(0);
            let served_by: BTreeMap<&str, Vec<&str>> =
                ids.iter().map(|(id, on)| (*id, self.urls(on))).collect();
            found.push((r, seq, all, json!({"served_by": served_by})));
        }
        for (r, seq, all, evidence) in found {
            self.findings.push(Finding {
                kind: Kind::Fork,
                relay: self.relays[r].url.clone(),
                seq: Some(seq),
                id: Some(all[0].to_string()),
                ids: Some(all.into_iter().map(String::from).collect()),
                evidence,
            });
        }
    }
}

/// For `--repair`: per relay, the valid entries another relay serves that it
/// does not (by id, hidden ones excepted), in seq order.
pub fn missing_entries(relays: &[RelayLog], governed: &HashSet<String>) -> Vec<Vec<Payload>> {
    let a = Auditor::new(relays, governed);
    let mut all: BTreeMap<(u64, &str), &Payload> = BTreeMap::new();
    for v in &a.valid {
        for p in v.values() {
            all.insert((p.seq, p.id.as_str()), p);
        }
    }
    (0..relays.len())
        .map(|r| {
            all.values()
                .filter(|p| {
                    !a.valid[r].contains_key(p.id.as_str()) && !a.deleted.contains(p.id.as_str())
                })
                .map(|p| (*p).clone())
                .collect()
        })
        .collect()
}
