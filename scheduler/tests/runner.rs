//! The runner against a real (SQLite) store: recording, retrying, no overlap,
//! and ticks on the real clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use meshrelay_scheduler::{Error, JobFn, Outcome, Scheduler};
use meshrelay_store::Store;
use tokio_util::sync::CancellationToken;

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

fn job(f: impl Fn() -> anyhow::Result<String> + Send + Sync + 'static) -> JobFn {
    let f = Arc::new(f);
    Arc::new(move || {
        let f = f.clone();
        async move { f() }.boxed()
    })
}

#[tokio::test]
async fn a_failing_job_is_recorded_and_runs_again_next_time() {
    let (store, _dir) = store().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut s = Scheduler::new(store.clone(), "test", 10);
    s.add(
        "flaky",
        "flaky_schedule",
        "0 0 0 1 1 *",
        job(move || match c.fetch_add(1, Ordering::SeqCst) {
            0 => anyhow::bail!("database was away"),
            1 => panic!("something impossible"),
            n => Ok(format!("call {n} worked")),
        }),
    )
    .unwrap();
    let s = Arc::new(s);
    assert_eq!(
        s.run_now("flaky").await.unwrap(),
        Outcome::Error("database was away".into())
    );
    assert_eq!(
        s.run_now("flaky").await.unwrap(),
        Outcome::Panicked("something impossible".into())
    );
    assert_eq!(
        s.run_now("flaky").await.unwrap(),
        Outcome::Ok("call 2 worked".into())
    );
    let runs = store.recent_runs("flaky", 10).await.unwrap();
    let outcomes: Vec<_> = runs.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["ok", "panicked", "error"]);
    assert_eq!(runs[2].error.as_deref(), Some("database was away"));
    assert!(runs
        .iter()
        .all(|r| r.finished_at.is_some() && r.scheduled_for.is_none()));

    let info = s.jobs().await.unwrap();
    assert_eq!(info[0].schedule, "0 0 0 1 1 *");
    assert_eq!(info[0].last_run.as_ref().unwrap().outcome, "ok");
    assert!(info[0].next_run.is_some());
    assert!(matches!(s.run_now("nope").await, Err(Error::UnknownJob(_))));
}

#[tokio::test]
async fn a_job_never_overlaps_itself() {
    let (store, _dir) = store().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let body: JobFn = Arc::new(move || {
        let g = g.clone();
        async move {
            let _permit = g.acquire().await?;
            Ok("released".to_string())
        }
        .boxed()
    });
    let mut s = Scheduler::new(store.clone(), "test", 10);
    s.add("slow", "slow_schedule", "0 0 0 1 1 *", body).unwrap();
    let s = Arc::new(s);
    s.trigger("slow").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        s.run_now("slow").await,
        Err(Error::AlreadyRunning(_))
    ));
    assert!(matches!(
        s.trigger("slow").await,
        Err(Error::AlreadyRunning(_))
    ));
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(1);
    assert_eq!(
        s.run_now("slow").await.unwrap(),
        Outcome::Ok("released".into())
    );
    assert_eq!(store.recent_runs("slow", 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn scheduled_runs_fire_once_per_tick_until_shutdown() {
    let (store, _dir) = store().await;
    let mut s = Scheduler::new(store.clone(), "test", 100);
    s.add(
        "tick",
        "tick_schedule",
        "* * * * * *",
        job(|| Ok("tock".into())),
    )
    .unwrap();
    let s = Arc::new(s);
    let stop = CancellationToken::new();
    let handle = s.start(stop.clone());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    let runs = store.recent_runs("tick", 100).await.unwrap();
    assert!(
        (3..=4).contains(&runs.len()),
        "{} runs in 3.5 s",
        runs.len()
    );
    let mut ticks: Vec<i64> = runs.iter().map(|r| r.scheduled_for.unwrap()).collect();
    ticks.sort();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive seconds: {ticks:?}"
    );
    assert!(runs.iter().all(|r| r.outcome == "ok"));
}

#[test]
fn registering_a_bad_schedule_names_the_setting() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, _dir) = rt.block_on(store());
    let mut s = Scheduler::new(store, "test", 10);
    let err = s
        .add(
            "prune",
            "prune_schedule",
            "*/5 * * * *",
            job(|| Ok(String::new())),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prune_schedule") && err.contains("*/5 * * * *"),
        "{err}"
    );
}
