//! Which peers want a payload: an index over every active peer's preference,
//! so routing a payload looks at the peers its channel can match, not at all
//! peers' filters.

use std::collections::{HashMap, HashSet};

use meshrelay_protocol::filter::ChannelPattern;
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::{Filter, Payload};

/// Index of one filter: which peer, which of its filters.
type Slot = (usize, usize);

#[derive(Default)]
pub struct Router {
    /// Peer keys by slot index, with their filters.
    peers: Vec<(String, Vec<Filter>)>,
    /// Peers with scope `all`.
    all: Vec<usize>,
    /// Filters naming an exact channel.
    exact: HashMap<String, Vec<Slot>>,
    /// Filters naming `prefix/*`, keyed by `prefix/`.
    below: HashMap<String, Vec<Slot>>,
    /// Filters without a channel list: checked for every payload.
    unindexed: Vec<Slot>,
}

impl Router {
    /// Build from (peer key, preference) pairs. Peers with scope `none` are left out.
    pub fn new(prefs: impl IntoIterator<Item = (String, Subscribe)>) -> Self {
        let mut r = Router::default();
        for (peer, pref) in prefs {
            let idx = r.peers.len();
            match pref {
                Subscribe::None => continue,
                Subscribe::All => {
                    r.all.push(idx);
                    r.peers.push((peer, Vec::new()));
                }
                Subscribe::Filtered { filters } => {
                    for (fi, f) in filters.iter().enumerate() {
                        match &f.channels {
                            Some(channels) => {
                                for c in channels {
                                    match ChannelPattern::parse(c) {
                                        Some(ChannelPattern::Exact(c)) => r
                                            .exact
                                            .entry(c.to_string())
                                            .or_default()
                                            .push((idx, fi)),
                                        Some(ChannelPattern::Below(p)) => r
                                            .below
                                            .entry(p.to_string())
                                            .or_default()
                                            .push((idx, fi)),
                                        None => {}
                                    }
                                }
                            }
                            None => r.unindexed.push((idx, fi)),
                        }
                    }
                    r.peers.push((peer, filters));
                }
            }
        }
        r
    }

    /// The peers whose preference matches `p`, except `except` (where it came from).
    pub fn targets(&self, p: &Payload, except: Option<&str>) -> Vec<String> {
        let mut hit: HashSet<usize> = self.all.iter().copied().collect();
        let mut check = |slots: Option<&Vec<Slot>>| {
            for &(peer, fi) in slots.into_iter().flatten() {
                if !hit.contains(&peer) && self.peers[peer].1[fi].matches(p) {
                    hit.insert(peer);
                }
            }
        };
        check(self.exact.get(&p.channel));
        // Every ancestor `a/`, `a/b/`, ... of the channel can hold a `/*` pattern.
        for (i, ch) in p.channel.char_indices() {
            if ch == '/' {
                check(self.below.get(&p.channel[..=i]));
            }
        }
        check(Some(&self.unindexed));
        let mut out: Vec<String> = hit
            .into_iter()
            .map(|i| self.peers[i].0.clone())
            .filter(|k| Some(k.as_str()) != except)
            .collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// True when a node's own preference accepts `p` (the inbox's `not_subscribed` check).
pub fn wants(pref: &Subscribe, p: &Payload) -> bool {
    match pref {
        Subscribe::All => true,
        Subscribe::None => false,
        Subscribe::Filtered { filters } => filters.iter().any(|f| f.matches(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshrelay_protocol::payload::Draft;
    use meshrelay_protocol::NodeKey;

    fn post(channel: &str, kind: &str) -> Payload {
        Payload::sign(
            &NodeKey::generate(),
            Draft {
                seq: 1,
                prev: None,
                created_at: 1,
                kind: kind.into(),
                channel: channel.into(),
                tags: vec![],
                content: String::new(),
            },
        )
    }

    fn filtered(json: &str) -> Subscribe {
        Subscribe::from_setting(json).unwrap()
    }

    #[test]
    fn routes_by_exact_channel_prefix_scope_and_unindexed_filters() {
        let r = Router::new([
            ("all".to_string(), Subscribe::All),
            ("none".to_string(), Subscribe::None),
            (
                "plural".to_string(),
                filtered(r#"[{"channels":["plural/*"]}]"#),
            ),
            (
                "exact".to_string(),
                filtered(r#"[{"channels":["general"],"kinds":["post"]}]"#),
            ),
            ("kinds".to_string(), filtered(r#"[{"kinds":["reaction"]}]"#)),
        ]);
        assert_eq!(
            r.targets(&post("plural/a/b", "post"), None),
            vec!["all", "plural"]
        );
        assert_eq!(r.targets(&post("plural", "post"), None), vec!["all"]);
        assert_eq!(
            r.targets(&post("general", "post"), None),
            vec!["all", "exact"]
        );
        assert_eq!(
            r.targets(&post("general", "reaction"), None),
            vec!["all", "kinds"]
        );
        assert_eq!(
            r.targets(&post("plural/x", "post"), Some("all")),
            vec!["plural"],
            "never back to the sender"
        );
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn a_node_wants_what_its_preference_matches() {
        let p = post("plural/a", "post");
        assert!(wants(&Subscribe::All, &p));
        assert!(!wants(&Subscribe::None, &p));
        assert!(wants(&filtered(r#"[{"channels":["plural/*"]}]"#), &p));
        assert!(!wants(&filtered(r#"[{"channels":["other"]}]"#), &p));
    }
}
