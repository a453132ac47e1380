//! The audit (client::audit) on logs built in memory: one finding of the
//! right kind for each fault, none for honest relays, and, for random logs
//! and random drop sets, exactly the dropped seqs reported.

use meshrelay_client::audit::{HeadSeen, Kind, RelayLog};
use meshrelay_client::receipts::{Evidence, KeptReceipt};
use meshrelay_client::relay::LogEntry;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::receipt::{Receipt, SignedHead};
use meshrelay_protocol::{NodeKey, Payload};
use proptest::prelude::*;

fn entry(key: &NodeKey, seq: u64, prev: Option<&str>, content: &str) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: prev.map(String::from),
            created_at: 1_763_800_000 + seq,
            kind: "post".into(),
            channel: "general".into(),
            tags: vec![],
            content: content.into(),
        },
    )
}

/// A chained log of `n` entries.
fn chain(key: &NodeKey, n: u64) -> Vec<Payload> {
    let mut log: Vec<Payload> = Vec::new();
    for seq in 1..=n {
        let prev = log.last().map(|p| p.id.clone());
        log.push(entry(key, seq, prev.as_deref(), &format!("entry {seq}")));
    }
    log
}

struct Relay {
    key: NodeKey,
    url: String,
}

impl Relay {
    fn new(n: u8) -> Self {
        Self {
            key: NodeKey::generate(),
            url: format!("http://127.0.0.{n}:7700"),
        }
    }

    fn head_of(&self, author: &str, p: &Payload, at: u64) -> SignedHead {
        SignedHead::sign(&self.key, author, p.seq, &p.id, at).unwrap()
    }

    /// This relay serving `entries`, with a signed head of the highest.
    fn serving(&self, author: &str, entries: &[Payload]) -> RelayLog {
        let head = entries
            .iter()
            .max_by(|a, b| a.seq.cmp(&b.seq).then_with(|| b.id.cmp(&a.id)))
            .map_or(HeadSeen::None, |p| {
                HeadSeen::Signed(self.head_of(author, p, 2_000))
            });
        RelayLog {
            url: self.url.clone(),
            node: self.key.public_hex(),
            entries: entries.iter().cloned().map(LogEntry::Valid).collect(),
            head,
        }
    }
}

/// The audit with nothing excused by community governance.
fn audit(relays: &[RelayLog], earlier: &Evidence) -> Vec<meshrelay_client::Finding> {
    meshrelay_client::audit::audit(relays, earlier, &Default::default())
}

fn missing_entries(relays: &[RelayLog]) -> Vec<Vec<Payload>> {
    meshrelay_client::audit::missing_entries(relays, &Default::default())
}

fn kinds(f: &[meshrelay_client::Finding]) -> Vec<(Kind, String, Option<u64>)> {
    f.iter().map(|f| (f.kind, f.relay.clone(), f.seq)).collect()
}

#[test]
fn honest_relays_have_no_findings_and_a_visible_delete_explains_a_gap() {
    let key = NodeKey::generate();
    let author = key.public_hex();
    let mut log = chain(&key, 4);
    let (a, b) = (Relay::new(1), Relay::new(2));
    assert!(audit(
        &[a.serving(&author, &log), b.serving(&author, &log)],
        &Evidence::default()
    )
    .is_empty());
    // The author deletes entry 2: both relays hide it and serve the delete.
    let mut del = entry(&key, 5, Some(&log[3].id), "");
    del.kind = "delete".into();
    del.tags = vec![vec!["e".into(), log[1].id.clone()]];
    let del = Payload::sign(
        &key,
        Draft {
            seq: 5,
            prev: Some(log[3].id.clone()),
            created_at: del.created_at,
            kind: del.kind,
            channel: del.channel,
            tags: del.tags,
            content: String::new(),
        },
    );
    let receipt = KeptReceipt {
        author: author.clone(),
        seq: 2,
        relay: a.url.clone(),
        receipt: Receipt::sign(&a.key, &log[1].id, 10).unwrap(),
    };
    let earlier = Evidence {
        receipts: vec![receipt],
        ..Evidence::default()
    };
    log.push(del);
    log.remove(1);
    let f = audit(
        &[a.serving(&author, &log), b.serving(&author, &log)],
        &earlier,
    );
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn each_fault_is_one_finding_of_its_kind() {
    let key = NodeKey::generate();
    let author = key.public_hex();
    let log = chain(&key, 5);
    let (a, h) = (Relay::new(1), Relay::new(2));
    let honest = a.serving(&author, &log);

    // Omission: seq 3 missing.
    let mut short = log.clone();
    short.remove(2);
    let f = audit(
        &[honest.clone(), h.serving(&author, &short)],
        &Evidence::default(),
    );
    assert_eq!(kinds(&f), vec![(Kind::Omission, h.url.clone(), Some(3))]);
    assert_eq!(f[0].id.as_deref(), Some(log[2].id.as_str()));

    // Fork: a second validly signed seq 3 beside the first.
    let fork = entry(&key, 3, Some(&log[1].id), "another 3");
    let mut forked = log.clone();
    forked.push(fork.clone());
    let f = audit(
        &[honest.clone(), h.serving(&author, &forked)],
        &Evidence::default(),
    );
    assert_eq!(kinds(&f), vec![(Kind::Fork, h.url.clone(), Some(3))]);
    let mut both = vec![log[2].id.clone(), fork.id.clone()];
    both.sort();
    assert_eq!(f[0].ids.as_ref(), Some(&both));

    // Invalid: entry 4 with its content altered (id no longer matches).
    let mut forged = h.serving(&author, &log);
    let mut raw = serde_json::to_value(&log[3]).unwrap();
    raw["content"] = "altered".into();
    forged.entries[3] = LogEntry::Invalid {
        seq: Some(4),
        id: Some(log[3].id.clone()),
        reason: "id does not match".into(),
        raw,
    };
    let f = audit(&[honest.clone(), forged], &Evidence::default());
    assert_eq!(kinds(&f), vec![(Kind::Invalid, h.url.clone(), Some(4))]);

    // Rollback: h signed head 5 earlier, now signs head 3 and serves 1..3.
    let earlier = Evidence {
        heads: vec![h.head_of(&author, &log[4], 1_000)],
        ..Evidence::default()
    };
    let f = audit(&[honest.clone(), h.serving(&author, &log[..3])], &earlier);
    assert_eq!(kinds(&f), vec![(Kind::Rollback, h.url.clone(), Some(3))]);

    // Withheld: h gave a receipt for entry 4 and no longer serves it, while
    // nobody else does either (no omission to explain it).
    let mut without_4 = log.clone();
    without_4.remove(3);
    let earlier = Evidence {
        receipts: vec![KeptReceipt {
            author: author.clone(),
            seq: 4,
            relay: h.url.clone(),
            receipt: Receipt::sign(&h.key, &log[3].id, 10).unwrap(),
        }],
        ..Evidence::default()
    };
    let f = audit(&[honest, h.serving(&author, &without_4)], &earlier);
    assert_eq!(kinds(&f), vec![(Kind::Withheld, h.url.clone(), Some(4))]);
}

#[test]
fn a_relay_answering_with_a_new_key_is_held_to_what_it_signed_at_its_url() {
    let key = NodeKey::generate();
    let author = key.public_hex();
    let log = chain(&key, 4);
    let (a, h) = (Relay::new(1), Relay::new(2));
    let mut without_4 = log.clone();
    without_4.remove(3);
    let earlier = Evidence {
        receipts: vec![KeptReceipt {
            author: author.clone(),
            seq: 4,
            relay: h.url.clone(),
            receipt: Receipt::sign(&h.key, &log[3].id, 10).unwrap(),
        }],
        urls: [(h.key.public_hex(), [h.url.clone()].into_iter().collect())]
            .into_iter()
            .collect(),
        ..Evidence::default()
    };
    // The relay at h's URL now says it is another node.
    let mut renamed = h.serving(&author, &without_4);
    renamed.node = NodeKey::generate().public_hex();
    let f = audit(&[a.serving(&author, &log), renamed], &earlier);
    assert_eq!(kinds(&f), vec![(Kind::Withheld, h.url.clone(), Some(4))]);
}

#[test]
fn what_community_governance_hides_is_not_withheld() {
    let key = NodeKey::generate();
    let author = key.public_hex();
    let log = chain(&key, 3);
    let (a, b) = (Relay::new(1), Relay::new(2));
    // Both relays hold entry 2 back (moderated, say); a receipt for it exists.
    let mut shown = log.clone();
    shown.remove(1);
    let earlier = Evidence {
        receipts: vec![KeptReceipt {
            author: author.clone(),
            seq: 2,
            relay: a.url.clone(),
            receipt: Receipt::sign(&a.key, &log[1].id, 10).unwrap(),
        }],
        ..Evidence::default()
    };
    let views = [a.serving(&author, &shown), b.serving(&author, &shown)];
    assert_eq!(
        kinds(&audit(&views, &earlier)),
        vec![
            (Kind::Withheld, a.url.clone(), Some(2)),
            (Kind::Omission, b.url.clone(), Some(2))
        ],
        "without the governance: withheld by a, a missing prev on b"
    );
    let governed = [log[1].id.clone()].into_iter().collect();
    assert!(meshrelay_client::audit::audit(&views, &earlier, &governed).is_empty());
}

#[test]
fn repair_offers_each_relay_what_another_serves() {
    let key = NodeKey::generate();
    let author = key.public_hex();
    let log = chain(&key, 4);
    let (a, b) = (Relay::new(1), Relay::new(2));
    let views = [a.serving(&author, &log[..2]), b.serving(&author, &log[1..])];
    let missing = missing_entries(&views);
    let ids = |v: &[Payload]| v.iter().map(|p| p.seq).collect::<Vec<_>>();
    assert_eq!((ids(&missing[0]), ids(&missing[1])), (vec![3, 4], vec![1]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any log, three relays each dropping a random set (every seq kept by
    /// at least one): the audit reports exactly the dropped seqs, as
    /// omissions of the relay that dropped them, and nothing else.
    #[test]
    fn audit_reports_exactly_the_dropped_seqs(
        n in 1u64..24,
        drops in proptest::collection::vec(proptest::collection::btree_set(1u64..24, 0..12), 3),
    ) {
        let key = NodeKey::generate();
        let author = key.public_hex();
        let log = chain(&key, n);
        let relays: Vec<Relay> = (1..=3).map(Relay::new).collect();
        let mut dropped: Vec<std::collections::BTreeSet<u64>> =
            drops.iter().map(|d| d.iter().copied().filter(|s| *s <= n).collect()).collect();
        // Relay 0 keeps whatever all three would drop.
        let everywhere: Vec<u64> = dropped[0].iter().copied()
            .filter(|s| dropped[1].contains(s) && dropped[2].contains(s)).collect();
        for s in everywhere {
            dropped[0].remove(&s);
        }
        let views: Vec<RelayLog> = relays.iter().zip(&dropped).map(|(r, d)| {
            let kept: Vec<Payload> = log.iter().filter(|p| !d.contains(&p.seq)).cloned().collect();
            r.serving(&author, &kept)
        }).collect();
        let f = audit(&views, &Evidence::default());
        let mut expected: Vec<(Kind, String, Option<u64>)> = Vec::new();
        for (r, d) in relays.iter().zip(&dropped) {
            expected.extend(d.iter().map(|s| (Kind::Omission, r.url.clone(), Some(*s))));
        }
        prop_assert_eq!(kinds(&f), expected);
    }
}
