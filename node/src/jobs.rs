//! The node's scheduled jobs: `poll` (peers' preferences, PROTOCOL.md 5.3),
//! `sync` (anti-entropy with each active peer, 5.5),
//! `prune` (retention, purging deleted payloads), `optimize` (planner
//! statistics) and `blob_gc` (unreferenced blobs, PROTOCOL.md 4.3).

use std::sync::Arc;

use anyhow::bail;
use futures_util::FutureExt;
use meshrelay_protocol::clock;
use meshrelay_scheduler::Scheduler;

use crate::ingest::PeerIngest;
use crate::state::AppState;

/// Build the scheduler with this node's jobs, refusing unknown names in
/// `disabled_jobs`. The jobs hold the node's state (`sync` stores what it
/// fetches the way the inbox does); the writer does not depend on them
/// letting go of it, since it is closed explicitly.
pub fn build_scheduler(state: &AppState) -> anyhow::Result<Scheduler> {
    let (settings, store, federation) = (&state.settings, &state.store, &state.federation);
    let mut scheduler = Scheduler::new(
        store.clone(),
        state.cluster.instance.clone(),
        i64::from(settings.jobs.job_history),
    );

    let prune = prune_job(store.clone(), &settings.jobs);
    let store_o = store.clone();
    let optimize: meshrelay_scheduler::JobFn = Arc::new(move || {
        let store = store_o.clone();
        async move {
            store.optimize().await?;
            Ok("planner statistics refreshed".to_string())
        }
        .boxed()
    });
    let fed = federation.clone();
    let poll: meshrelay_scheduler::JobFn = Arc::new(move || {
        let fed = fed.clone();
        async move { fed.poll_all().await }.boxed()
    });
    let ingest = Arc::new(PeerIngest(state.clone()));
    let sync: meshrelay_scheduler::JobFn = Arc::new(move || {
        let ingest = ingest.clone();
        async move { ingest.0.federation.sync_all(ingest.as_ref()).await }.boxed()
    });
    scheduler.add("poll", "poll_schedule", &settings.jobs.poll_schedule, poll)?;
    scheduler.add("sync", "sync_schedule", &settings.jobs.sync_schedule, sync)?;
    scheduler.add(
        "prune",
        "prune_schedule",
        &settings.jobs.prune_schedule,
        prune,
    )?;
    scheduler.add(
        "optimize",
        "optimize_schedule",
        &settings.jobs.optimize_schedule,
        optimize,
    )?;

    scheduler.add(
        "blob_gc",
        "blob_gc_schedule",
        &settings.blobs.gc_schedule,
        crate::blobs::gc::job(store.clone(), state.blobs.clone()),
    )?;

    let known = scheduler.job_names();
    for name in &settings.jobs.disabled_jobs {
        if !known.contains(name) {
            bail!(
                "setting disabled_jobs: unknown job {name:?} (jobs: {})",
                known.join(", ")
            );
        }
    }
    Ok(scheduler)
}

/// Dead letters are kept this long after they were given up, for an operator
/// to see and retry, then dropped by `prune`.
const DEAD_LETTER_DAYS: u32 = 30;

/// The `prune` job: retention, and purging hidden payloads past their grace.
fn prune_job(
    store: meshrelay_store::Store,
    jobs: &crate::settings::Jobs,
) -> meshrelay_scheduler::JobFn {
    let (retention, grace) = (jobs.retention_days, jobs.deleted_grace_days);
    Arc::new(move || {
        let store = store.clone();
        async move {
            let days = |d: u32| i64::from(d) * 86_400;
            let created_before = retention.map(|d| clock::now_secs() - days(d));
            let hidden_before_ms = clock::now_ms() - days(grace) * 1000;
            // Tombstones outlive the payload they stand for by the grace past
            // retention (PROTOCOL.md 2.3); without retention, forever.
            let tombstones_before = retention.map(|d| clock::now_secs() - days(d) - days(grace));
            let pruned = store
                .prune(created_before, hidden_before_ms, tombstones_before)
                .await?;
            let dead = store
                .prune_dead_letters(clock::now_ms() - days(DEAD_LETTER_DAYS) * 1000)
                .await?;
            let off = if retention.is_none() {
                " (retention off)"
            } else {
                ""
            };
            Ok(format!(
                "expired {} payloads{off}, purged {} hidden ones (kept as tombstones), dropped {} old tombstones and {dead} dead letters",
                pruned.expired, pruned.purged_hidden, pruned.tombstones_dropped
            ))
        }
        .boxed()
    })
}
