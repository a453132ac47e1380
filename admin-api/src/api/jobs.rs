//! `/admin/v1/jobs`: the scheduled jobs with their last and next runs, and
//! running one now.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use meshrelay_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{api_actor, ErrorBody};
use crate::actions;
use crate::{AdminContext, AdminError, AdminResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub name: String,
    /// The cron expression (with seconds), UTC.
    pub schedule: String,
    /// Unix seconds when the last recorded run started.
    pub last_run: Option<i64>,
    /// `ok`, `error`, `panicked` or `running`.
    pub last_outcome: Option<String>,
    /// Its summary, or its error.
    pub last_message: Option<String>,
    /// Unix seconds of the next scheduled run.
    pub next_run: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

pub async fn job_views(ctx: &AdminContext) -> AdminResult<Vec<JobView>> {
    let jobs = ctx.scheduler.jobs().await.map_err(|e| match e {
        meshrelay_scheduler::Error::Store(e) => AdminError::from(e),
        e => AdminError::new(ErrorCode::Internal, e.to_string()),
    })?;
    Ok(jobs
        .into_iter()
        .map(|j| JobView {
            name: j.name,
            schedule: j.schedule,
            last_run: j.last_run.as_ref().map(|r| r.started_at / 1000),
            last_outcome: j.last_run.as_ref().map(|r| r.outcome.clone()),
            last_message: j
                .last_run
                .as_ref()
                .and_then(|r| r.summary.clone().or(r.error.clone())),
            next_run: j.next_run.map(|t| t.timestamp()),
        })
        .collect())
}

/// Every scheduled job: schedule, last run and outcome, next run.
#[utoipa::path(get, path = "/admin/v1/jobs", responses((status = 200, body = JobList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_jobs(State(ctx): State<AdminContext>) -> AdminResult<Json<JobList>> {
    Ok(Json(JobList {
        jobs: job_views(&ctx).await?,
    }))
}

/// The 202 answer of `POST /admin/v1/jobs/{name}/run`. The OpenAPI document
/// has always called it a plain object, so it is not a schema of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStarted {
    pub job: String,
    /// Always `started`: the run goes on in the background.
    pub status: String,
}

/// Run a job now (it runs in the background).
#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{name}/run",
    params(("name" = String, Path)),
    responses((status = 202, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "running now", body = ErrorBody))
)]
pub(super) async fn run_job(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> AdminResult<(StatusCode, Json<JobStarted>)> {
    actions::run_job(&ctx, &api_actor(addr), &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(JobStarted {
            job: name,
            status: "started".to_string(),
        }),
    ))
}
