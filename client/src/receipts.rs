//! The receipts store: every receipt and signed head a client verified, and
//! the entries it published, so a later answer can be compared with what a
//! relay promised (PROTOCOL.md 4.4). One JSON object a line, appended and
//! synced, so a crash loses at most the line being written; a line that does
//! not parse (such a torn last line) is skipped on load.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use meshrelay_protocol::receipt::{Receipt, SignedHead};
use meshrelay_protocol::Payload;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A receipt with the entry it is for, as the publisher knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptReceipt {
    pub author: String,
    pub seq: u64,
    /// The relay URL it came from (for people; the receipt's `node` is the proof).
    pub relay: String,
    pub receipt: Receipt,
}

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Receipt(KeptReceipt),
    Head { relay: String, head: SignedHead },
    Published(Payload),
}

/// What the store holds for one author.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub receipts: Vec<KeptReceipt>,
    pub heads: Vec<SignedHead>,
    /// The author's own entries accepted by at least one relay.
    pub published: Vec<Payload>,
    /// The relay URLs each node key's receipts and heads came from: a relay
    /// that answers with another key later is still held to what it signed
    /// under the earlier one.
    pub urls: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Evidence {
    /// Whether evidence signed by `node` binds the relay now at `url` with
    /// key `now_node`: its own key, or a key that signed at that URL before.
    pub fn binds(&self, node: &str, url: &str, now_node: &str) -> bool {
        node == now_node || self.urls.get(node).is_some_and(|u| u.contains(url))
    }
}

impl Evidence {
    /// The author's last published entry: highest seq, ties by lowest id.
    pub fn last_published(&self) -> Option<&Payload> {
        self.published
            .iter()
            .min_by(|a, b| b.seq.cmp(&a.seq).then_with(|| a.id.cmp(&b.id)))
    }
}

/// The receipts store of one file.
#[derive(Debug, Clone)]
pub struct ReceiptStore {
    path: PathBuf,
}

impl ReceiptStore {
    /// The store at `path` (created on first write).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The default store of `author`: `<data dir>/meshrelay/receipts/<author>.jsonl`
    /// (`$XDG_DATA_HOME` or `~/.local/share` on Linux).
    pub fn default_for(author: &str) -> Result<Self> {
        let dir = dirs::data_dir().ok_or_else(|| {
            Error::Usage("no data directory is known for this user; pass --receipts FILE".into())
        })?;
        Ok(Self::at(
            dir.join("meshrelay")
                .join("receipts")
                .join(format!("{author}.jsonl")),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything kept for `author` (nothing when the file does not exist).
    /// Receipts and heads are verified again: the file is only as
    /// trustworthy as its signatures.
    pub fn load(&self, author: &str) -> Result<Evidence> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.io("reading", e)),
        };
        let mut ev = Evidence::default();
        let mut receipts = BTreeMap::new();
        let mut heads = BTreeMap::new();
        let mut published = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(line) = serde_json::from_str::<Line>(line) else {
                continue;
            };
            match line {
                Line::Receipt(r) if r.author == author && r.receipt.verify().is_ok() => {
                    ev.urls
                        .entry(r.receipt.node.clone())
                        .or_default()
                        .insert(r.relay.clone());
                    receipts.insert((r.receipt.node.clone(), r.receipt.id.clone()), r);
                }
                Line::Head { head, relay } if head.author == author && head.verify().is_ok() => {
                    ev.urls.entry(head.node.clone()).or_default().insert(relay);
                    heads.insert(
                        (head.node.clone(), head.at, head.seq, head.id.clone()),
                        head,
                    );
                }
                Line::Published(p) if p.author == author => {
                    published.insert(p.id.clone(), p);
                }
                _ => {}
            }
        }
        ev.receipts = receipts.into_values().collect();
        ev.heads = heads.into_values().collect();
        ev.published = published.into_values().collect();
        Ok(ev)
    }

    pub fn add_receipt(&self, kept: KeptReceipt) -> Result<()> {
        self.append(&[Line::Receipt(kept)])
    }

    pub fn add_head(&self, relay: &str, head: SignedHead) -> Result<()> {
        self.append(&[Line::Head {
            relay: relay.to_string(),
            head,
        }])
    }

    pub fn add_published(&self, payload: Payload) -> Result<()> {
        self.append(&[Line::Published(payload)])
    }

    fn append(&self, lines: &[Line]) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io("creating the directory of", e))?;
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(&serde_json::to_string(l).expect("a receipts line serializes"));
            text.push('\n');
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&self.path)
            .map_err(|e| self.io("opening", e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| self.io("writing", e))
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::Store(format!("{what} {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use meshrelay_protocol::payload::Draft;
    use meshrelay_protocol::NodeKey;

    use super::*;

    fn entry(key: &NodeKey, seq: u64) -> Payload {
        Payload::sign(
            key,
            Draft {
                seq,
                prev: (seq > 1).then(|| "00".repeat(32)),
                created_at: 1_763_800_000,
                kind: "post".into(),
                channel: "general".into(),
                tags: vec![],
                content: format!("{seq}"),
            },
        )
    }

    #[test]
    fn what_is_added_loads_back_per_author_and_torn_or_forged_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReceiptStore::at(dir.path().join("r/x.jsonl"));
        let (alice, bob, node) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let a = alice.public_hex();
        let (p1, p2) = (entry(&alice, 1), entry(&alice, 2));
        let receipt = Receipt::sign(&node, &p2.id, 5).unwrap();
        store.add_published(p1.clone()).unwrap();
        store.add_published(p2.clone()).unwrap();
        store.add_published(entry(&bob, 9)).unwrap();
        store
            .add_receipt(KeptReceipt {
                author: a.clone(),
                seq: 2,
                relay: "http://r".into(),
                receipt: receipt.clone(),
            })
            .unwrap();
        let head = SignedHead::sign(&node, &a, 2, &p2.id, 6).unwrap();
        store.add_head("http://r", head.clone()).unwrap();
        let forged = SignedHead {
            seq: 9,
            ..head.clone()
        };
        store.add_head("http://r", forged).unwrap();
        // A torn last line, as a crash mid-write would leave.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(store.path())
            .unwrap();
        f.write_all(br#"{"receipt":{"auth"#).unwrap();

        let ev = store.load(&a).unwrap();
        assert_eq!(ev.published.len(), 2);
        assert_eq!(ev.last_published().unwrap().id, p2.id);
        assert_eq!(ev.receipts.len(), 1);
        assert_eq!(ev.receipts[0].receipt, receipt);
        assert_eq!(ev.heads, vec![head], "the forged head is not evidence");
        assert!(store.load(&bob.public_hex()).unwrap().receipts.is_empty());
    }

    #[test]
    fn a_missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let ev = ReceiptStore::at(dir.path().join("none")).load("x").unwrap();
        assert!(ev.receipts.is_empty() && ev.heads.is_empty() && ev.published.is_empty());
    }
}
