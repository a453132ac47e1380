//! One batch of the writer, one transaction: which submissions may be stored
//! (planned before the transaction opens), then the named steps that write
//! them. Each step is written once and compiled for both backends.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use meshrelay_protocol::Payload;
use sqlx::{QueryBuilder, Transaction};

use super::community::{root_of, Cache, Governed};
use super::Job;
use crate::{with_pool, BeginWrite, Result, Store, WriteOutcome};

/// Rows per multi-row INSERT, kept well under both backends' bind limits.
const ROWS_PER_INSERT: usize = 500;

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
    mirror_blobs: bool,
) -> Result<Vec<WriteOutcome>> {
    let Plan { first, authors } = plan(batch.iter().map(|j| &*j.payload));
    // Every submission not stored below is a duplicate: of an earlier one in
    // this batch, or of a row already held; its first storage time is filled
    // in after the commit.
    let mut outcomes = vec![WriteOutcome::Duplicate { received_at: None }; batch.len()];
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await?;
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
        let (governed, forbidden) = admit(&mut tx, &candidates, cache).await?;
        let candidates: Vec<&Job> = candidates
            .into_iter()
            .filter(|j| !forbidden.contains_key(j.payload.id.as_str()))
            .collect();
        let inserted = Steps::insert_payloads(&mut tx, &candidates).await?;
        let stored: Vec<&Payload> = candidates
            .iter()
            .map(|j| &*j.payload)
            .filter(|p| inserted.contains_key(&p.id))
            .collect();
        Steps::insert_tags(&mut tx, &tag_rows(&stored, &inserted)).await?;
        let deletions = deletion_rows(&stored);
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
        let forwards: Vec<(&str, &str, i64)> = candidates
            .iter()
            .filter(|j| inserted.contains_key(&j.payload.id) && !hidden.contains(&j.payload.id))
            .flat_map(|j| {
                j.forward
                    .iter()
                    .map(move |(peer, hops)| (peer.as_str(), j.payload.id.as_str(), *hops))
            })
            .collect();
        Steps::queue_forwards(&mut tx, &forwards, now).await?;
        // PROTOCOL.md 4.3: blobs a peer's payload names are fetched from that
        // peer; queued with the payload, so a crash cannot lose the fetch.
        let fetches = if mirror_blobs {
            blob_fetch_rows(candidates.iter().filter(|j| {
                inserted.contains_key(&j.payload.id) && !hidden.contains(&j.payload.id)
            }))
        } else {
            Vec::new()
        };
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
async fn admit<'j, DB: Steps>(
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
        if !governed.knows(root) && !governed.load_cached(root, cache) {
            let stored = DB::governance_of(tx, root).await?;
            governed.load(root, &stored);
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

/// The steps of a batch's transaction, one implementation per backend from
/// one body (`impl_steps!`).
trait Steps: sqlx::Database + Sized {
    /// The authors among these that the operator blocked.
    fn blocked_among<'a>(
        tx: &'a mut Transaction<'static, Self>,
        authors: &'a HashSet<&str>,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send + 'a;

    /// The ids among these that `table` (`payloads` or `tombstones`) holds,
    /// with when each was first stored (`None` for a tombstone older than
    /// that record).
    fn received_at_in<'a>(
        tx: &'a mut Transaction<'static, Self>,
        table: &'static str,
        ids: &'a [&str],
    ) -> impl Future<Output = Result<HashMap<String, Option<i64>>>> + Send + 'a;

    /// The JSON of every governance payload held of a community (shown or not).
    fn governance_of<'a>(
        tx: &'a mut Transaction<'static, Self>,
        root: &'a str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + 'a;

    /// `(id, author, created_at, kind, channel, held_back)` of every payload
    /// of a community.
    #[allow(clippy::type_complexity)]
    fn community_rows<'a>(
        tx: &'a mut Transaction<'static, Self>,
        root: &'a str,
    ) -> impl Future<Output = Result<Vec<(String, String, i64, String, String, bool)>>> + Send + 'a;

    fn set_held_back<'a>(
        tx: &'a mut Transaction<'static, Self>,
        ids: &'a [String],
        held_back: bool,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Insert the payloads not held yet; returns the new ones' `id -> rid`.
    fn insert_payloads<'a>(
        tx: &'a mut Transaction<'static, Self>,
        jobs: &'a [&Job],
    ) -> impl Future<Output = Result<HashMap<String, i64>>> + Send + 'a;

    fn insert_tags<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(i64, &str, &str)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    fn record_deletions<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str, &str)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Hide those of `ids` that a delete by their own author names; returns them.
    fn hide_deleted<'a>(
        tx: &'a mut Transaction<'static, Self>,
        ids: &'a [&str],
        now_ms: i64,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send + 'a;

    /// Queue `(sha256, peer)` blob fetches, due now; those queued already stay.
    fn queue_blob_fetches<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str)],
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Queue `(peer, payload id, hops)` in the outbox, due now.
    fn queue_forwards<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str, i64)],
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

macro_rules! impl_steps {
    ($db:ty) => {
        impl Steps for $db {
            async fn blocked_among(
                tx: &mut Transaction<'static, Self>,
                authors: &HashSet<&str>,
            ) -> Result<HashSet<String>> {
                let mut qb = QueryBuilder::new("SELECT author FROM blocked_authors WHERE author IN (");
                let mut sep = qb.separated(", ");
                for a in authors {
                    sep.push_bind(a.to_string());
                }
                qb.push(")");
                let rows = qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?;
                Ok(rows.into_iter().collect())
            }

            async fn received_at_in(
                tx: &mut Transaction<'static, Self>,
                table: &'static str,
                ids: &[&str],
            ) -> Result<HashMap<String, Option<i64>>> {
                let mut found = HashMap::new();
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(format!("SELECT id, received_at FROM {table} WHERE id IN ("));
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.to_string());
                    }
                    qb.push(")");
                    found.extend(
                        qb.build_query_as::<(String, Option<i64>)>().fetch_all(&mut **tx).await?,
                    );
                }
                Ok(found)
            }

            async fn governance_of(
                tx: &mut Transaction<'static, Self>,
                root: &str,
            ) -> Result<Vec<String>> {
                let mut qb = QueryBuilder::new("SELECT json FROM payloads WHERE community = ");
                qb.push_bind(root.to_string()).push(" AND kind IN (");
                let mut sep = qb.separated(", ");
                for k in meshrelay_protocol::community::GOVERNANCE_KINDS {
                    sep.push_bind(k.to_string());
                }
                qb.push(")");
                Ok(qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?)
            }

            async fn community_rows(
                tx: &mut Transaction<'static, Self>,
                root: &str,
            ) -> Result<Vec<(String, String, i64, String, String, bool)>> {
                let mut qb = QueryBuilder::new(
                    "SELECT id, author, created_at, kind, channel, held_back FROM payloads WHERE community = ",
                );
                qb.push_bind(root.to_string());
                Ok(qb.build_query_as().fetch_all(&mut **tx).await?)
            }

            async fn set_held_back(
                tx: &mut Transaction<'static, Self>,
                ids: &[String],
                held_back: bool,
            ) -> Result<()> {
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("UPDATE payloads SET held_back = ");
                    qb.push_bind(held_back).push(" WHERE id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn insert_payloads(
                tx: &mut Transaction<'static, Self>,
                jobs: &[&Job],
            ) -> Result<HashMap<String, i64>> {
                let mut inserted = HashMap::new();
                for chunk in jobs.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO payloads (id, author, seq, created_at, kind, channel, json, received_at, source, community) ",
                    );
                    qb.push_values(chunk, |mut b, j| {
                        let p = &j.payload;
                        b.push_bind(p.id.clone())
                            .push_bind(p.author.clone())
                            .push_bind(p.seq as i64)
                            .push_bind(p.created_at as i64)
                            .push_bind(p.kind.clone())
                            .push_bind(p.channel.clone())
                            .push_bind(j.json.to_string())
                            .push_bind(j.received_at)
                            .push_bind(j.source.clone())
                            .push_bind(root_of(p).map(String::from));
                    });
                    qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id, rid");
                    inserted.extend(qb.build_query_as::<(String, i64)>().fetch_all(&mut **tx).await?);
                }
                Ok(inserted)
            }

            async fn insert_tags(
                tx: &mut Transaction<'static, Self>,
                rows: &[(i64, &str, &str)],
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT * 3) {
                    let mut qb = QueryBuilder::new("INSERT INTO payload_tags (rid, name, value) ");
                    qb.push_values(chunk, |mut b, (rid, name, value)| {
                        b.push_bind(*rid)
                            .push_bind(name.to_string())
                            .push_bind(value.as_bytes().to_vec());
                    });
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn record_deletions(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str, &str)],
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("INSERT INTO deletions (target, author, delete_id) ");
                    qb.push_values(chunk, |mut b, (target, author, delete_id)| {
                        b.push_bind(target.to_string())
                            .push_bind(author.to_string())
                            .push_bind(delete_id.to_string());
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn hide_deleted(
                tx: &mut Transaction<'static, Self>,
                ids: &[&str],
                now_ms: i64,
            ) -> Result<HashSet<String>> {
                let mut hidden = HashSet::new();
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("UPDATE payloads SET hidden = TRUE, hidden_at = ");
                    qb.push_bind(now_ms).push(" WHERE NOT hidden AND id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.to_string());
                    }
                    // Deletes naming governance payloads are ignored (PROTOCOL.md 9.3).
                    qb.push(") AND NOT (payloads.community IS NOT NULL AND payloads.kind IN ('role', 'policy', 'invite', 'join', 'moderate'))");
                    qb.push(" AND EXISTS (SELECT 1 FROM deletions d WHERE d.target = payloads.id AND d.author = payloads.author) RETURNING id");
                    hidden.extend(qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?);
                }
                Ok(hidden)
            }

            async fn queue_blob_fetches(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str)],
                now_ms: i64,
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO blob_fetches (sha256, peer, attempts, next_at, created_at) ",
                    );
                    qb.push_values(chunk, |mut b, (sha, peer)| {
                        b.push_bind(sha.to_string())
                            .push_bind(peer.to_string())
                            .push_bind(0_i64)
                            .push_bind(now_ms)
                            .push_bind(now_ms);
                    });
                    qb.push(" ON CONFLICT (sha256, peer) DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn queue_forwards(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str, i64)],
                now_ms: i64,
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO outbox (peer, payload_id, hops, enqueued_at, next_attempt) ",
                    );
                    qb.push_values(chunk, |mut b, (peer, id, hops)| {
                        b.push_bind(peer.to_string())
                            .push_bind(id.to_string())
                            .push_bind(*hops)
                            .push_bind(now_ms)
                            .push_bind(now_ms);
                    });
                    qb.push(" ON CONFLICT (peer, payload_id) DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }
        }
    };
}

impl_steps!(sqlx::Sqlite);
impl_steps!(sqlx::Postgres);

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
