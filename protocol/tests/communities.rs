//! Every case of `../shared/vectors/communities.json` (PROTOCOL.md 9) against
//! the pure evaluation, through a minimal node model that does exactly what
//! 9.4 asks of a node and nothing else: check (fields, id, signature),
//! duplicate, authorize at the payload's place, store; show what the
//! evaluation shows, minus what a delete by the same author hides (2.3).
//! Each scenario runs in its publish order (every outcome checked), in each
//! of its written arrival orders and in shuffled ones (refused payloads sent
//! again, round after round, as sync would): every order must end showing
//! the same payloads and answering the same state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use meshrelay_protocol::community::{place_of, rank_name, Evaluation};
use meshrelay_protocol::{Limits, Payload};
use serde_json::{json, Value};

fn vectors() -> Value {
    let dir = std::env::var("MESHRELAY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    let path = dir.join("communities.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The node's clock: after every payload of the vectors, before 2100.
fn now(v: &Value) -> u64 {
    v["T0"].as_u64().unwrap() + 5_000
}

/// Governance payloads `refused_without_recompute` refused, over the tests.
static SHORTCUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Default)]
struct Node {
    held: Vec<Payload>,
    now: u64,
}

impl Node {
    fn new(now: u64) -> Self {
        Self {
            held: Vec::new(),
            now,
        }
    }

    fn evaluation(&self, root: &str, extra: Option<&Payload>) -> Evaluation {
        let of_root = |p: &&Payload| {
            place_of(&p.channel)
                .ok()
                .flatten()
                .is_some_and(|pl| pl.root == root)
        };
        Evaluation::new(root, self.held.iter().filter(of_root).chain(extra))
    }

    /// Publish one payload: its outcome as the vectors name it.
    fn publish(&mut self, raw: &Value) -> String {
        let limits = Limits::default();
        let p = match Payload::from_json(&raw.to_string(), &limits, self.now) {
            Ok(p) => p,
            Err(e) => return e.code.as_str().to_string(),
        };
        if self.held.iter().any(|h| h.id == p.id) {
            return "duplicate".into();
        }
        if let Some(place) = place_of(&p.channel).unwrap() {
            let full = self.evaluation(place.root, Some(&p)).authorize(&p);
            // The writer's shortcut may only refuse what a recompute refuses.
            if let Some(why) = self
                .evaluation(place.root, None)
                .refused_without_recompute(&p)
            {
                assert!(
                    full.is_err(),
                    "refused without a recompute, authorized with one: {} ({why})",
                    p.id
                );
                SHORTCUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if full.is_err() {
                return "forbidden".into();
            }
        }
        self.held.push(p);
        "accepted".into()
    }

    /// The ids this node shows.
    fn visible(&self) -> HashSet<String> {
        let mut evaluations: HashMap<&str, Evaluation> = HashMap::new();
        let deleted: HashSet<(&str, &str)> = self
            .held
            .iter()
            .flat_map(|d| d.delete_targets().map(move |t| (t, d.author.as_str())))
            .collect();
        let mut shown = HashSet::new();
        for p in &self.held {
            let governance = meshrelay_protocol::community::is_governance_kind(&p.kind);
            if !governance && deleted.contains(&(p.id.as_str(), p.author.as_str())) {
                continue;
            }
            if let Some(place) = place_of(&p.channel).unwrap() {
                let ev = evaluations
                    .entry(place.root)
                    .or_insert_with(|| self.evaluation(place.root, None));
                if !ev.shown(p) {
                    continue;
                }
            }
            shown.insert(p.id.clone());
        }
        shown
    }
}

fn ids(v: &Value) -> HashSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

/// Publish in `order` (indexes into the scenario's payloads), then the
/// refused ones again until a round accepts nothing new, then the probes.
fn arrive(s: &Value, order: &[usize], now: u64) -> Node {
    let payloads = s["payloads"].as_array().unwrap();
    let mut node = Node::new(now);
    let mut refused: Vec<usize> = order.to_vec();
    loop {
        let before = refused.len();
        refused.retain(|&i| node.publish(&payloads[i]["payload"]) != "accepted");
        if refused.len() == before || refused.is_empty() {
            break;
        }
    }
    for probe in s["probes"].as_array().unwrap() {
        node.publish(&probe["payload"]);
    }
    node
}

fn check_state(name: &str, s: &Value, node: &Node, now: u64) {
    let e = &s["expected"];
    let root = s["community"].as_str().unwrap();
    let ev = node.evaluation(root, None);
    let roles: BTreeMap<String, String> = ev
        .roles()
        .into_iter()
        .map(|(k, r)| (k, rank_name(r).to_string()))
        .collect();
    assert_eq!(json!(roles), e["roles"], "{name}: roles");
    let policy = ev.policy();
    assert_eq!(
        json!({"write": policy.write, "channels": policy.channels}),
        e["policy"],
        "{name}: policy"
    );
    let invites: BTreeMap<&str, u32> = ev
        .invites()
        .iter()
        .map(|i| (i.id.as_str(), i.uses_left))
        .collect();
    assert_eq!(json!(invites), e["invites"], "{name}: invites");
    assert_eq!(
        ev.answer(now),
        e["community"],
        "{name}: GET /v1/communities"
    );
    assert_eq!(node.visible(), ids(&e["visible"]), "{name}: visible");
}

#[test]
fn every_scenario_in_its_publish_order_gets_each_outcome_and_the_state() {
    let v = vectors();
    let now = now(&v);
    let scenarios = v["scenarios"].as_array().unwrap();
    assert!(!scenarios.is_empty());
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        let mut node = Node::new(now);
        let publish = |node: &mut Node, steps: &Value| {
            for step in steps.as_array().unwrap() {
                let got = node.publish(&step["payload"]);
                assert_eq!(
                    got,
                    step["expect"].as_str().unwrap(),
                    "{name}: {}",
                    step["label"]
                );
            }
        };
        publish(&mut node, &s["payloads"]);
        // `stored` is what the payloads left stored, before the probes;
        // `hidden` is every stored payload not shown at the end, probes too.
        let stored: HashSet<String> = node.held.iter().map(|p| p.id.clone()).collect();
        assert_eq!(stored, ids(&s["expected"]["stored"]), "{name}: stored");
        publish(&mut node, &s["probes"]);
        let held: HashSet<String> = node.held.iter().map(|p| p.id.clone()).collect();
        let hidden: HashSet<String> = held.difference(&node.visible()).cloned().collect();
        assert_eq!(hidden, ids(&s["expected"]["hidden"]), "{name}: hidden");
        check_state(name, s, &node, now);
    }
    // The vectors refuse governance by keys without rank: the shortcut met
    // some of them (and agreed with the recompute on each, above).
    assert!(SHORTCUTS.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[test]
fn every_scenario_shows_the_same_in_every_arrival_order() {
    let v = vectors();
    let now = now(&v);
    for s in v["scenarios"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let n = s["payloads"].as_array().unwrap().len();
        let mut orders: Vec<Vec<usize>> = s["arrival_orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as usize)
                    .collect()
            })
            .collect();
        orders.push((0..n).rev().collect());
        // Shuffles from a fixed seed (a small LCG: no dependency for this).
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ n as u64;
        for _ in 0..20 {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                order.swap(i, (seed >> 33) as usize % (i + 1));
            }
            orders.push(order);
        }
        for order in orders {
            let node = arrive(s, &order, now);
            check_state(&format!("{name} in order {order:?}"), s, &node, now);
        }
    }
}

#[test]
fn every_field_rule_case_gets_its_outcome() {
    let v = vectors();
    let cases = v["invalid"]["payloads"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let label = case["label"].as_str().unwrap();
        let got =
            match Payload::from_json(&case["payload"].to_string(), &Limits::default(), now(&v)) {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.code.as_str().to_string(),
            };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{label}");
        // And as the first payload a node sees: what is valid is authorized
        // (the cases are the community owner's own).
        if got == "accepted" {
            assert_eq!(
                Node::new(now(&v)).publish(&case["payload"]),
                "accepted",
                "{label}"
            );
        }
    }
}
