//! The node's periodic work on cron schedules (UTC, with a seconds field).
//!
//! - A job never overlaps itself: its loop awaits each run, and a run on demand
//!   is refused while another run of that job is in progress on this node.
//!   On PostgreSQL each run (scheduled or on demand) also holds the job's
//!   advisory lock, so no run overlaps one in another process of the node:
//!   a tick that finds the job running elsewhere is skipped.
//! - No drift: the next fire time comes from the schedule, never from when the
//!   last run ended; ticks missed while a run overran are skipped, not queued.
//! - Once per cluster: each scheduled tick is claimed in the database (the
//!   `job_runs` row of `(job, scheduled_for)` is unique), so of several nodes
//!   sharing a PostgreSQL database exactly one runs it. On SQLite it is local.
//! - A run that errors or panics is recorded with its error; the job simply
//!   runs again at its next tick. Nothing a job does takes the node down.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use meshrelay_store::{JobRun, Store};
use tokio_util::sync::CancellationToken;

/// A job's body: does its work and says what it did in a short summary.
pub type JobFn = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<String>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setting {setting}: {value:?} is not a cron expression with a seconds field (sec min hour day month weekday): {reason}")]
    BadSchedule {
        setting: String,
        value: String,
        reason: String,
    },
    #[error("no job named {0:?}")]
    UnknownJob(String),
    #[error("job {0:?} is already running")]
    AlreadyRunning(String),
    #[error("a job named {0:?} is registered twice")]
    Duplicate(String),
    #[error("recording the run failed")]
    Store(#[from] meshrelay_store::Error),
}

/// Parse a cron expression, naming the setting it came from when it is bad.
pub fn parse_schedule(setting: &str, value: &str) -> Result<cron::Schedule, Error> {
    cron::Schedule::from_str(value).map_err(|e| Error::BadSchedule {
        setting: setting.to_string(),
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// The first fire time strictly after `now`. Pure, so the timing rules are
/// testable with any clock.
pub fn next_fire(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
}

struct JobEntry {
    name: String,
    /// The expression as configured, for the admin API.
    expression: String,
    schedule: cron::Schedule,
    body: JobFn,
    /// Set while a run of this job is in progress on this node.
    running: AtomicBool,
}

/// What the admin API shows of a job.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub name: String,
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<JobRun>,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(String),
    Error(String),
    Panicked(String),
    /// Another node of the cluster claimed this tick.
    ClaimedElsewhere,
    /// Another process of the node is running this job: the tick is skipped.
    RunningElsewhere,
}

pub struct Scheduler {
    store: Store,
    /// Names this process in the run history.
    instance: String,
    /// Runs kept per job.
    keep_runs: i64,
    jobs: BTreeMap<String, Arc<JobEntry>>,
}

impl Scheduler {
    pub fn new(store: Store, instance: impl Into<String>, keep_runs: i64) -> Self {
        Self {
            store,
            instance: instance.into(),
            keep_runs,
            jobs: BTreeMap::new(),
        }
    }

    /// Register a job on the schedule given by `setting` = `expression`.
    pub fn add(
        &mut self,
        name: &str,
        setting: &str,
        expression: &str,
        body: JobFn,
    ) -> Result<(), Error> {
        let schedule = parse_schedule(setting, expression)?;
        if self.jobs.contains_key(name) {
            return Err(Error::Duplicate(name.to_string()));
        }
        self.jobs.insert(
            name.to_string(),
            Arc::new(JobEntry {
                name: name.to_string(),
                expression: expression.to_string(),
                schedule,
                body,
                running: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    pub fn job_names(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    /// Start one loop per job; they stop when `shutdown` is cancelled (a run in
    /// progress finishes first). The returned handle completes when all stopped.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.start_except(&[], shutdown)
    }

    /// Like `start`, leaving the named jobs unscheduled (still runnable on demand).
    pub fn start_except(
        self: &Arc<Self>,
        disabled: &[String],
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let loops: Vec<_> = self
            .jobs
            .values()
            .filter(|job| !disabled.contains(&job.name))
            .map(|job| {
                let this = self.clone();
                let job = job.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { this.job_loop(job, shutdown).await })
            })
            .collect();
        tokio::spawn(async move {
            for l in loops {
                let _ = l.await;
            }
        })
    }

    async fn job_loop(&self, job: Arc<JobEntry>, shutdown: CancellationToken) {
        loop {
            let now = Utc::now();
            let Some(next) = next_fire(&job.schedule, now) else {
                tracing::warn!(job = %job.name, "schedule has no future fire time; job stops");
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if job.running.swap(true, Ordering::AcqRel) {
                tracing::info!(job = %job.name, tick = %next, "still running from before; tick skipped");
                continue;
            }
            let outcome = match self.store.try_job_lock(&job.name).await {
                Ok(Some(lock)) => {
                    let outcome = self.execute(&job, Some(next.timestamp())).await;
                    lock.release().await;
                    outcome
                }
                Ok(None) => {
                    tracing::info!(job = %job.name, tick = %next, "running in another process; tick skipped");
                    Ok(Outcome::RunningElsewhere)
                }
                Err(e) => Err(Error::Store(e)),
            };
            job.running.store(false, Ordering::Release);
            if let Err(e) = outcome {
                tracing::error!(job = %job.name, error = ?e, "recording a job run failed");
            }
        }
    }

    /// Run a job now, outside its schedule; refused while it is running here.
    pub async fn run_now(&self, name: &str) -> Result<Outcome, Error> {
        let job = self
            .jobs
            .get(name)
            .ok_or_else(|| Error::UnknownJob(name.to_string()))?;
        if job.running.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning(name.to_string()));
        }
        let outcome = match self.lock(job).await {
            Ok(lock) => {
                let outcome = self.execute(job, None).await;
                lock.release().await;
                outcome
            }
            Err(e) => Err(e),
        };
        job.running.store(false, Ordering::Release);
        outcome
    }

    /// The job's cluster-wide lock for a run on demand; refused while another
    /// process runs it.
    async fn lock(&self, job: &JobEntry) -> Result<meshrelay_store::cluster::JobLock, Error> {
        match self.store.try_job_lock(&job.name).await {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(Error::AlreadyRunning(job.name.clone())),
            Err(e) => Err(Error::Store(e)),
        }
    }

    /// Like `run_now`, without waiting for the run to finish (for "202 Accepted").
    pub async fn trigger(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        let job = self
            .jobs
            .get(name)
            .ok_or_else(|| Error::UnknownJob(name.to_string()))?
            .clone();
        if job.running.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning(name.to_string()));
        }
        let lock = match self.lock(&job).await {
            Ok(lock) => lock,
            Err(e) => {
                job.running.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.execute(&job, None).await {
                tracing::error!(job = %job.name, error = ?e, "recording a job run failed");
            }
            lock.release().await;
            job.running.store(false, Ordering::Release);
        });
        Ok(())
    }

    /// Claim, run (in a task of its own, so a panic is caught), record, trim.
    async fn execute(&self, job: &JobEntry, tick: Option<i64>) -> Result<Outcome, Error> {
        let started = Utc::now().timestamp_millis();
        let Some(run_id) = self
            .store
            .claim_run(&job.name, tick, &self.instance, started)
            .await?
        else {
            return Ok(Outcome::ClaimedElsewhere);
        };
        let outcome = match tokio::spawn((job.body)()).await {
            Ok(Ok(summary)) => Outcome::Ok(summary),
            Ok(Err(e)) => Outcome::Error(format!("{e:#}")),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_string());
                Outcome::Panicked(msg)
            }
            Err(_) => Outcome::Error("the run was cancelled".into()),
        };
        let finished = Utc::now().timestamp_millis();
        let (label, summary, error) = match &outcome {
            Outcome::Ok(s) => ("ok", Some(s.as_str()), None),
            Outcome::Error(e) => ("error", None, Some(e.as_str())),
            Outcome::Panicked(e) => ("panicked", None, Some(e.as_str())),
            Outcome::ClaimedElsewhere | Outcome::RunningElsewhere => unreachable!("claimed above"),
        };
        match &outcome {
            Outcome::Ok(s) => tracing::info!(job = %job.name, summary = %s, "job run finished"),
            _ => tracing::warn!(job = %job.name, outcome = label, error = ?error, "job run failed"),
        }
        self.store
            .finish_run(run_id, finished, label, summary, error)
            .await?;
        self.store.trim_runs(&job.name, self.keep_runs).await?;
        Ok(outcome)
    }

    /// Every job with its schedule, next fire time and last recorded run.
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, Error> {
        let now = Utc::now();
        let mut out = Vec::new();
        for job in self.jobs.values() {
            out.push(JobInfo {
                name: job.name.clone(),
                schedule: job.expression.clone(),
                next_run: next_fire(&job.schedule, now),
                last_run: self
                    .store
                    .recent_runs(&job.name, 1)
                    .await?
                    .into_iter()
                    .next(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 29, h, m, s).unwrap()
            + chrono::Duration::milliseconds(ms.into())
    }

    #[test]
    fn the_next_tick_follows_the_schedule_not_the_end_of_the_last_run() {
        let every_second = parse_schedule("s", "* * * * * *").unwrap();
        // A run that ended 300 ms after its tick: the next tick is the next whole second.
        assert_eq!(
            next_fire(&every_second, at(10, 0, 0, 300)),
            Some(at(10, 0, 1, 0))
        );
        // A run that overran two ticks: they are skipped, not queued.
        assert_eq!(
            next_fire(&every_second, at(10, 0, 2, 500)),
            Some(at(10, 0, 3, 0))
        );
        // Exactly on a tick: the next one, never the same one twice.
        assert_eq!(
            next_fire(&every_second, at(10, 0, 3, 0)),
            Some(at(10, 0, 4, 0))
        );
    }

    #[test]
    fn a_long_sequence_of_ticks_does_not_drift() {
        let every_15_min = parse_schedule("poll_schedule", "0 */15 * * * *").unwrap();
        let mut t = at(0, 0, 0, 0);
        for i in 1..=200 {
            // each run takes 7.3 s of simulated time
            let next = next_fire(&every_15_min, t).unwrap();
            assert_eq!(next, at(0, 0, 0, 0) + chrono::Duration::minutes(15 * i));
            t = next + chrono::Duration::milliseconds(7300);
        }
    }

    #[test]
    fn schedules_are_utc_and_ignore_daylight_saving() {
        // 2026-03-29 is a DST change in Europe; in UTC 03:30 is 24 h after the day before.
        let daily = parse_schedule("prune_schedule", "0 30 3 * * *").unwrap();
        let first = next_fire(&daily, at(0, 0, 0, 0)).unwrap();
        let second = next_fire(&daily, first).unwrap();
        assert_eq!(first, at(3, 30, 0, 0));
        assert_eq!(second - first, chrono::Duration::hours(24));
    }

    #[test]
    fn a_bad_expression_names_the_setting_and_value() {
        let err = parse_schedule("sync_schedule", "every hour")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sync_schedule") && err.contains("every hour"),
            "{err}"
        );
        assert!(parse_schedule("x", "0 0 25 * * *").is_err(), "hour 25");
    }
}
