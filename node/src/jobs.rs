//! The node's scheduled jobs: `poll` (peers' preferences, PROTOCOL.md 5.3),
//! `sync` (anti-entropy with each active peer, 5.5),
//! `prune` (retention, purging deleted payloads) and `optimize` (planner
//! statistics).

use std::sync::Arc;

use anyhow::bail;
use futures_util::FutureExt;
use meshrelay_scheduler::Scheduler;
use meshrelay_store::Store;

use crate::settings::Settings;

/// The node's state for jobs that need all of it (`sync` stores what it
/// fetches the way the inbox does). Filled once the state exists and emptied
/// when the node drains, so the jobs do not keep the writer alive.
pub type JobState = Arc<std::sync::Mutex<Option<crate::state::AppState>>>;

/// Build the scheduler with this node's jobs, refusing unknown names in
/// `disabled_jobs`.
pub fn build_scheduler(
    settings: &Settings,
    store: &Store,
    federation: &Arc<meshrelay_federation::Federation>,
    job_state: &JobState,
) -> anyhow::Result<Scheduler> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let instance = format!("{host}:{}", std::process::id());
    let mut scheduler = Scheduler::new(store.clone(), instance, i64::from(settings.job_history));

    let (store_p, retention, grace) = (
        store.clone(),
        settings.retention_days,
        settings.deleted_grace_days,
    );
    let prune: meshrelay_scheduler::JobFn = Arc::new(move || {
        let store = store_p.clone();
        async move {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let created_before = retention.map(|d| now.as_secs() as i64 - i64::from(d) * 86_400);
            let hidden_before_ms = now.as_millis() as i64 - i64::from(grace) * 86_400_000;
            let pruned = store.prune(created_before, hidden_before_ms).await?;
            Ok(format!(
                "expired {} payloads{}, purged {} deleted ones",
                pruned.expired,
                if retention.is_none() {
                    " (retention off)"
                } else {
                    ""
                },
                pruned.purged_hidden
            ))
        }
        .boxed()
    });
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
    let cell = job_state.clone();
    let sync: meshrelay_scheduler::JobFn = Arc::new(move || {
        let state = cell.lock().expect("lock").clone();
        async move {
            match state {
                Some(state) => crate::sync::sync_all(&state).await,
                None => Ok("the node is stopping; skipped".to_string()),
            }
        }
        .boxed()
    });
    scheduler.add("poll", "poll_schedule", &settings.poll_schedule, poll)?;
    scheduler.add("sync", "sync_schedule", &settings.sync_schedule, sync)?;
    scheduler.add("prune", "prune_schedule", &settings.prune_schedule, prune)?;
    scheduler.add(
        "optimize",
        "optimize_schedule",
        &settings.optimize_schedule,
        optimize,
    )?;

    let known = scheduler.job_names();
    for name in &settings.disabled_jobs {
        if !known.contains(name) {
            bail!(
                "setting disabled_jobs: unknown job {name:?} (jobs: {})",
                known.join(", ")
            );
        }
    }
    Ok(scheduler)
}
