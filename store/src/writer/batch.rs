//! One batch of the writer, one transaction: which submissions may be stored
//! (planned before the transaction opens), then the named steps that write
//! them. Each step is written once and compiled for both backends.

use std::collections::{HashMap, HashSet};

use meshrelay_protocol::Payload;
use sqlx::Transaction;

use super::community::{root_of, Cache, Governed};
use super::shared::{lock_names, Shared};
use super::steps::Steps;
use super::{Job, WriterConfig};
use crate::{with_pool, BeginWrite, Result, Store, WriteOutcome};

/// The submissions of a batch that may be stored: the first submission of
/// each id (in batch order), and the authors among them.
#[derive(Debug, PartialEq, Eq)]
struct Plan<'b> {
    first: Vec<usize>,
    authors: HashSet<&'b str>,
}

fn plan<'b>(payloads: impl Iterator<Item = &'b Payload>) -> Plan<'b> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut first = Vec::new();
    let mut authors = HashSet::new();
    for (i, p) in payloads.enumerate() {
        if seen.insert(p.id.as_str()) {
            first.push(i);
            authors.insert(p.author.as_str());
        }
    }
    Plan { first, authors }
}

/// Commit one batch; one outcome per job, in order.
pub(super) async fn commit(
    store: &Store,
    batch: &[Job],
    cache: &mut Cache,
    config: &WriterConfig,
) -> Result<Vec<WriteOutcome>> {
    let Plan { first, authors } = plan(batch.iter().map(|j| &*j.payload));
    let roots: HashSet<&str> = first
        .iter()
        .filter_map(|&i| root_of(&batch[i].payload))
        .collect();
    let locks = lock_names(authors.iter().copied(), roots.into_iter());
    // Every submission not stored below is a duplicate: of an earlier one in
    // this batch, or of a row already held; its first storage time is filled
    // in after the commit.
    let mut outcomes = vec![WriteOutcome::Duplicate { received_at: None }; batch.len()];
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await?;
        // Other processes' writers: a delete and its target, and the
        // governance of one community, are never judged in parallel.
        Shared::lock_names(&mut tx, &locks).await?;
        let blocked = Steps::blocked_among(&mut tx, &authors).await?;
        let ids: Vec<&str> = first.iter().map(|&i| batch[i].payload.id.as_str()).collect();
        // A purged hidden payload is refused as a duplicate (PROTOCOL.md 2.3).
        let tombstoned = Steps::received_at_in(&mut tx, "tombstones", &ids).await?;
        let candidates: Vec<&Job> = first
            .iter()
            .filter_map(|&i| {
                let p = &batch[i].payload;
                if blocked.contains(&p.author) {
                    outcomes[i] = WriteOutcome::Blocked;
                    None
                } else if tombstoned.contains_key(&p.id) {
                    None
                } else {
                    Some(&batch[i])
                }
            })
            .collect();
        // PROTOCOL.md 9.4: after the duplicate check, each community payload
        // is authorized at its place, or refused.
        let (mut governed, forbidden) = admit(&mut tx, &candidates, cache).await?;
        let candidates: Vec<&Job> = candidates
            .into_iter()
            .filter(|j| !forbidden.contains_key(j.payload.id.as_str()))
            .collect();
        // In id order: two processes inserting the same ids take the unique
        // index's row locks in the same order.
        let mut by_id = candidates.clone();
        by_id.sort_unstable_by(|a, b| a.payload.id.cmp(&b.payload.id));
        let inserted = Steps::insert_payloads(&mut tx, &by_id).await?;
        let stored: Vec<&Payload> = candidates
            .iter()
            .map(|j| &*j.payload)
            .filter(|p| inserted.contains_key(&p.id))
            .collect();
        Steps::insert_tags(&mut tx, &tag_rows(&stored, &inserted)).await?;
        let mut deletions = deletion_rows(&stored);
        deletions.sort_unstable();
        Steps::record_deletions(&mut tx, &deletions).await?;
        // Hide what a delete names, in both orders: new payloads named by an
        // earlier delete, and earlier payloads named by a new delete.
        let mut named: Vec<&str> = inserted.keys().map(String::as_str).collect();
        named.extend(deletions.iter().map(|(target, _, _)| *target));
        let now = crate::clock::now_ms();
        let mut hidden = Steps::hide_deleted(&mut tx, &named, now).await?;
        if !governed.is_empty() {
            hidden.extend(hold_back(&mut tx, &governed, &stored).await?);
        }
        let mut forwards: Vec<(&str, &str, i64)> = candidates
            .iter()
            .filter(|j| inserted.contains_key(&j.payload.id) && !hidden.contains(&j.payload.id))
            .flat_map(|j| {
                j.forward
                    .iter()
                    .map(move |(peer, hops)| (peer.as_str(), j.payload.id.as_str(), *hops))
            })
            .collect();
        forwards.sort_unstable();
        Steps::queue_forwards(&mut tx, &forwards, now).await?;
        // PROTOCOL.md 4.3: blobs a peer's payload names are fetched from that
        // peer; queued with the payload, so a crash cannot lose the fetch.
        let mut fetches = if config.mirror_blobs {
            blob_fetch_rows(candidates.iter().filter(|j| {
                inserted.contains_key(&j.payload.id) && !hidden.contains(&j.payload.id)
            }))
        } else {
            Vec::new()
        };
        fetches.sort_unstable();
        Steps::queue_blob_fetches(&mut tx, &fetches, now).await?;
        // When each duplicate was first stored: by this batch, before it, or
        // (for a purged one) as its tombstone says.
        let mut first_stored: HashMap<String, Option<i64>> = candidates
            .iter()
            .filter(|j| inserted.contains_key(&j.payload.id))
            .map(|j| (j.payload.id.clone(), Some(j.received_at)))
            .collect();
        first_stored.extend(tombstoned);
        let held: Vec<&str> = batch
            .iter()
            .map(|j| j.payload.id.as_str())
            .filter(|id| !first_stored.contains_key(*id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        first_stored.extend(Steps::received_at_in(&mut tx, "payloads", &held).await?);
        for root in governed.changed_roots() {
            let version = Shared::governance_version(&mut tx, &root).await?;
            governed.set_version(&root, version);
        }
        if let Some(announce) = &config.announce {
            let mut shown: Vec<i64> = inserted
                .iter()
                .filter(|(id, _)| !hidden.contains(*id))
                .map(|(_, rid)| *rid)
                .collect();
            shown.sort_unstable();
            let messages = crate::cluster::Stored::messages(&announce.instance, &shown, !forwards.is_empty());
            if !shown.is_empty() {
                Shared::notify(&mut tx, &announce.channel, &messages).await?;
            }
        }
        tx.commit().await?;
        governed.keep(cache);
        for &i in &first {
            let id = &batch[i].payload.id;
            if inserted.contains_key(id) {
                outcomes[i] = WriteOutcome::Stored { hidden: hidden.contains(id) };
            }
        }
        for (i, job) in batch.iter().enumerate() {
            if let Some(why) = forbidden.get(job.payload.id.as_str()) {
                outcomes[i] = WriteOutcome::Forbidden(why.clone());
                continue;
            }
            if let WriteOutcome::Duplicate { received_at } = &mut outcomes[i] {
                *received_at = first_stored.get(&job.payload.id).copied().flatten();
            }
        }
        // A repeat within the batch of a blocked author's payload is refused
        // as the first was, not answered as a duplicate of what was refused.
        for (i, job) in batch.iter().enumerate() {
            if blocked.contains(&job.payload.author) {
                outcomes[i] = WriteOutcome::Blocked;
            }
        }
        Ok(outcomes)
    })
}

/// Authorize each new community payload among `candidates` at its place
/// (PROTOCOL.md 9.4), in batch order: the communities touched, and why each
/// refused payload was refused.
async fn admit<'j, DB: Steps + Shared>(
    tx: &mut Transaction<'static, DB>,
    candidates: &[&'j Job],
    cache: &mut Cache,
) -> Result<(Governed, HashMap<&'j str, String>)> {
    let mut governed = Governed::default();
    let mut forbidden = HashMap::new();
    let in_communities: Vec<(&str, &Payload)> = candidates
        .iter()
        .filter_map(|j| root_of(&j.payload).map(|r| (r, &*j.payload)))
        .collect();
    if in_communities.is_empty() {
        return Ok((governed, forbidden));
    }
    let ids: Vec<&str> = in_communities.iter().map(|(_, p)| p.id.as_str()).collect();
    // Already held: a duplicate, not judged again.
    let held = DB::received_at_in(tx, "payloads", &ids).await?;
    for (root, p) in in_communities {
        if held.contains_key(&p.id) {
            continue;
        }
        if !governed.knows(root) {
            // Another process may have stored governance since the cache
            // entry was made: on PostgreSQL it is used only when current.
            let version = DB::governance_version(tx, root).await?;
            if !governed.load_cached(root, cache, version) {
                let stored = DB::governance_of(tx, root).await?;
                governed.load(root, &stored, version);
            }
        }
        if let Err(why) = governed.admit(root, p) {
            forbidden.insert(p.id.as_str(), why);
        }
    }
    Ok((governed, forbidden))
}

/// Hold back, or show again, the payloads of the communities a batch touched
/// (PROTOCOL.md 9.4): every payload of a community whose governance changed,
/// the new ones of the others. Returns the new payloads held back.
async fn hold_back<DB: Steps>(
    tx: &mut Transaction<'static, DB>,
    governed: &Governed,
    stored: &[&Payload],
) -> Result<HashSet<String>> {
    let mut hold: Vec<String> = Vec::new();
    let mut show: Vec<String> = Vec::new();
    for (root, evaluation, changed) in governed.each() {
        if changed {
            for (id, author, created_at, kind, channel, held_back) in
                DB::community_rows(tx, root).await?
            {
                let entry = meshrelay_protocol::community::Entry {
                    id: &id,
                    author: &author,
                    created_at: created_at as u64,
                    kind: &kind,
                    channel: &channel,
                };
                match (evaluation.shown(entry), held_back) {
                    (false, false) => hold.push(id),
                    (true, true) => show.push(id),
                    _ => {}
                }
            }
        } else {
            hold.extend(
                stored
                    .iter()
                    .filter(|p| root_of(p) == Some(root) && !evaluation.shown(**p))
                    .map(|p| p.id.clone()),
            );
        }
    }
    DB::set_held_back(tx, &hold, true).await?;
    DB::set_held_back(tx, &show, false).await?;
    let new: HashSet<&str> = stored.iter().map(|p| p.id.as_str()).collect();
    Ok(hold
        .into_iter()
        .filter(|id| new.contains(id.as_str()))
        .collect())
}

/// `(rid, name, value)` of every tag with a value, for the tag index.
fn tag_rows<'p>(
    stored: &[&'p Payload],
    rids: &HashMap<String, i64>,
) -> Vec<(i64, &'p str, &'p str)> {
    stored
        .iter()
        .flat_map(|p| {
            let rid = rids[&p.id];
            p.tags.iter().filter_map(move |t| match t.as_slice() {
                [name, value, ..] => Some((rid, name.as_str(), value.as_str())),
                _ => None,
            })
        })
        .collect()
}

/// Blobs one payload may have fetched for it: a peer cannot make one payload
/// queue thousands of fetches.
pub(crate) const MAX_BLOB_FETCHES_PER_PAYLOAD: usize = 16;

/// `(sha256, peer)` of the blobs named by `["b", <sha256>]` tags of payloads
/// that came from a peer, at most `MAX_BLOB_FETCHES_PER_PAYLOAD` each.
fn blob_fetch_rows<'j>(jobs: impl Iterator<Item = &'j &'j Job>) -> Vec<(&'j str, &'j str)> {
    let mut rows = Vec::new();
    for job in jobs {
        let Some(peer) = job.source.as_deref() else {
            continue;
        };
        let mut names: Vec<&str> = job
            .payload
            .tags
            .iter()
            .filter_map(|t| match t.as_slice() {
                [name, value, ..] if name == "b" && meshrelay_protocol::hexfmt::is_hex32(value) => {
                    Some(value.as_str())
                }
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(MAX_BLOB_FETCHES_PER_PAYLOAD);
        rows.extend(names.into_iter().map(|sha| (sha, peer)));
    }
    rows
}

/// `(target, author, delete id)` of every `e` tag of the deletes among `stored`.
fn deletion_rows<'p>(stored: &[&'p Payload]) -> Vec<(&'p str, &'p str, &'p str)> {
    stored
        .iter()
        .flat_map(|p| {
            p.delete_targets()
                .map(move |t| (t, p.author.as_str(), p.id.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use meshrelay_protocol::payload::Draft;
    use meshrelay_protocol::NodeKey;

    use super::*;

    fn payload(key: &NodeKey, seq: u64) -> Payload {
        let draft = Draft {
            seq,
            prev: (seq > 1).then(|| "00".repeat(32)),
            created_at: 1_700_000_000 + seq,
            kind: "post".into(),
            channel: "general".into(),
            tags: vec![],
            content: format!("entry {seq}"),
        };
        Payload::sign(key, draft)
    }

    #[test]
    fn only_the_first_submission_of_an_id_is_a_candidate() {
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let (p1, p2, q1) = (payload(&a, 1), payload(&a, 2), payload(&b, 1));
        let batch = [p1.clone(), q1.clone(), p1.clone(), p2.clone(), q1.clone()];
        let plan = plan(batch.iter());
        assert_eq!(plan.first, vec![0, 1, 3]);
        assert_eq!(
            plan.authors,
            [p1.author.as_str(), q1.author.as_str()]
                .into_iter()
                .collect()
        );
    }
}
