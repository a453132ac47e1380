//! The writer's part of PROTOCOL.md 9.4: a batch's community payloads are
//! authorized at their place against the governance payloads held (those
//! stored before, and those of the batch admitted before them), and after
//! the batch each touched community's payloads are held back or shown again
//! as the evaluation says.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meshrelay_protocol::community::{is_governance_kind, place_of, Evaluation};
use meshrelay_protocol::Payload;

/// The root of the community a payload's channel belongs to.
pub(super) fn root_of(p: &Payload) -> Option<&str> {
    place_of(&p.channel).ok().flatten().map(|pl| pl.root)
}

/// A community's governance as the writer last committed it, kept between
/// batches so that a post into a busy community is judged without reading
/// and evaluating its governance again. On SQLite only this writer stores
/// payloads, so an entry is current while it is fresh; on PostgreSQL other
/// processes' writers store too, so an entry is used only while the
/// community's governance version (count and newest row, read under the
/// community's lock) is the one it was made from. It is trusted for `TTL`
/// (retention and purges delete rows outside the writer) and the cache holds
/// at most `MAX_PAYLOADS` governance payloads over all communities.
pub(crate) struct Cache {
    entries: HashMap<String, (Instant, Community)>,
}

const TTL: Duration = Duration::from_secs(60);
const MAX_PAYLOADS: usize = 200_000;

impl Cache {
    pub(crate) fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn take(&mut self, root: &str, version: Option<(i64, i64)>) -> Option<Community> {
        let (at, c) = self.entries.remove(root)?;
        (at.elapsed() < TTL && c.version == version).then_some(c)
    }

    fn put(&mut self, root: String, c: Community) {
        if c.governance.len() > MAX_PAYLOADS {
            return;
        }
        let held = |e: &HashMap<String, (Instant, Community)>| -> usize {
            e.values().map(|(_, c)| c.governance.len()).sum()
        };
        while !self.entries.is_empty() && held(&self.entries) + c.governance.len() > MAX_PAYLOADS {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            self.entries.remove(&oldest);
        }
        self.entries.insert(root, (Instant::now(), c));
    }
}

struct Community {
    governance: Vec<Payload>,
    evaluation: Evaluation,
    /// A governance payload of this batch was admitted: every payload of the
    /// community may change.
    changed: bool,
    /// PostgreSQL: the governance version this entry holds (`Shared::governance_version`).
    version: Option<(i64, i64)>,
}

/// The communities one batch touches.
#[derive(Default)]
pub(super) struct Governed {
    communities: BTreeMap<String, Community>,
}

impl Governed {
    pub(super) fn is_empty(&self) -> bool {
        self.communities.is_empty()
    }

    pub(super) fn knows(&self, root: &str) -> bool {
        self.communities.contains_key(root)
    }

    /// Take a community from the cache, when it holds a fresh entry.
    pub(super) fn load_cached(
        &mut self,
        root: &str,
        cache: &mut Cache,
        version: Option<(i64, i64)>,
    ) -> bool {
        match cache.take(root, version) {
            Some(c) => {
                self.communities.insert(root.to_string(), c);
                true
            }
            None => false,
        }
    }

    /// After the batch committed: every community touched goes (back) into
    /// the cache, as committed.
    pub(super) fn keep(self, cache: &mut Cache) {
        for (root, mut c) in self.communities {
            c.changed = false;
            cache.put(root, c);
        }
    }

    /// The governance payloads a community held before this batch.
    pub(super) fn load(&mut self, root: &str, stored: &[String], version: Option<(i64, i64)>) {
        let governance: Vec<Payload> = stored
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let evaluation = Evaluation::new(root, &governance);
        self.communities.insert(
            root.to_string(),
            Community {
                governance,
                evaluation,
                changed: false,
                version,
            },
        );
    }

    /// Authorize a new payload of a loaded community at its place; a
    /// governance payload admitted changes what later ones are judged by.
    pub(super) fn admit(&mut self, root: &str, p: &Payload) -> Result<(), String> {
        let c = self
            .communities
            .get_mut(root)
            .expect("a community is loaded before its payloads are admitted");
        if !is_governance_kind(&p.kind) {
            return c.evaluation.authorize(p);
        }
        if let Some(why) = c.evaluation.refused_without_recompute(p) {
            return Err(why);
        }
        c.governance.push(p.clone());
        let evaluation = Evaluation::new(root, &c.governance);
        match evaluation.authorize(p) {
            Ok(()) => {
                c.evaluation = evaluation;
                c.changed = true;
                Ok(())
            }
            Err(why) => {
                c.governance.pop();
                Err(why)
            }
        }
    }

    /// The communities whose governance this batch changed.
    pub(super) fn changed_roots(&self) -> Vec<String> {
        self.communities
            .iter()
            .filter(|(_, c)| c.changed)
            .map(|(root, _)| root.clone())
            .collect()
    }

    /// The governance version after this batch's inserts.
    pub(super) fn set_version(&mut self, root: &str, version: Option<(i64, i64)>) {
        if let Some(c) = self.communities.get_mut(root) {
            c.version = version;
        }
    }

    /// Each touched community: its evaluation after the batch, and whether
    /// all its payloads must be judged again.
    pub(super) fn each(&self) -> impl Iterator<Item = (&str, &Evaluation, bool)> {
        self.communities
            .iter()
            .map(|(root, c)| (root.as_str(), &c.evaluation, c.changed))
    }
}
