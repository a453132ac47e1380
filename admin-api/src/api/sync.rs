//! `POST /admin/v1/sync`: an operator's anti-entropy sync, run by the node
//! itself (so what it fetches reaches live subscribers and the node's caches),
//! answered as a stream of JSON lines: progress while it runs, a report or an
//! error per peer, and a last line with the totals.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_federation::sync::{Progress, Report, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{api_actor, json_body, ErrorBody};
use crate::{actions, AdminContext, AdminResult};

/// What to reconcile: one peer by URL (known or not), or every sync target;
/// from `since` (Unix seconds) to now, or over `sync_window_days`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SyncRequest {
    pub peer: Option<String>,
    pub since: Option<u64>,
}

/// One line of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncLine {
    /// The sync with `peer` began.
    Start {
        peer: String,
        url: String,
    },
    /// How far it got: `done` of `total` ids known to move, and what it does.
    Progress {
        peer: String,
        done: u64,
        total: u64,
        phase: String,
    },
    Report(Report),
    Error {
        peer: String,
        url: String,
        message: String,
    },
    /// The last line.
    Done {
        peers: usize,
        failed: usize,
    },
}

/// Run anti-entropy sync now and stream what it does (JSON lines).
#[utoipa::path(
    post,
    path = "/admin/v1/sync",
    request_body = SyncRequest,
    responses(
        (status = 200, description = "JSON lines: start, progress, report or error per peer, then done", content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(super) async fn run_sync(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> AdminResult<Response> {
    let req = json_body(body)?;
    let fed = ctx.federation.clone();
    let targets = match &req.peer {
        Some(url) => vec![fed
            .sync_target_by_url(url)
            .await
            .map_err(|e| crate::AdminError::bad_request(format!("{e:#}")))?],
        None => fed
            .sync_targets()
            .await
            .map_err(|e| crate::AdminError::bad_request(format!("{e:#}")))?,
    };
    let (default_since, until) = fed.default_sync_window();
    let window = (req.since.unwrap_or(default_since), until);
    let target = req.peer.clone().unwrap_or_else(|| "peers".to_string());
    actions::record_sync(&ctx, &api_actor(addr), &target).await?;
    let (tx, rx) = mpsc::channel::<SyncLine>(64);
    // The sync goes on if the operator's client hangs up: it stores payloads.
    tokio::spawn(run(ctx, targets, window, tx));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut text = serde_json::to_vec(&line).expect("a sync line serializes");
        text.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(text)), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn run(
    ctx: AdminContext,
    targets: Vec<Target>,
    window: (u64, u64),
    tx: mpsc::Sender<SyncLine>,
) {
    let mut failed = 0;
    for target in &targets {
        let (peer, url) = (target.node.clone(), target.url.clone());
        let _ = tx
            .send(SyncLine::Start {
                peer: peer.clone(),
                url: url.clone(),
            })
            .await;
        let progress = Lines::new(peer.clone(), tx.clone());
        let result = ctx
            .federation
            .sync_peer(ctx.ingest.as_ref(), target, window, Some(&progress))
            .await;
        let line = match result {
            Ok(report) => SyncLine::Report(report),
            Err(e) => {
                failed += 1;
                SyncLine::Error {
                    peer,
                    url,
                    message: format!("{e:#}"),
                }
            }
        };
        let _ = tx.send(line).await;
    }
    let _ = tx
        .send(SyncLine::Done {
            peers: targets.len(),
            failed,
        })
        .await;
}

/// Progress as lines, at most one per 1% or phase change (a slow reader
/// drops progress lines, never reports).
struct Lines {
    peer: String,
    tx: mpsc::Sender<SyncLine>,
    counts: std::sync::Mutex<(u64, u64, u64)>,
}

impl Lines {
    fn new(peer: String, tx: mpsc::Sender<SyncLine>) -> Self {
        Self {
            peer,
            tx,
            counts: std::sync::Mutex::new((0, 0, 0)),
        }
    }

    fn send(&self, phase: &str, force: bool) {
        let mut c = self.counts.lock().expect("lock");
        let (done, total, last) = *c;
        if !force && total > 0 && (done - last) * 100 < total {
            return;
        }
        c.2 = done;
        let _ = self.tx.try_send(SyncLine::Progress {
            peer: self.peer.clone(),
            done,
            total,
            phase: phase.to_string(),
        });
    }
}

impl Progress for Lines {
    fn grow(&self, n: u64) {
        self.counts.lock().expect("lock").1 += n;
    }
    fn advance(&self, n: u64) {
        self.counts.lock().expect("lock").0 += n;
        self.send("moving payloads", false);
    }
    fn phase(&self, what: &str) {
        self.send(what, true);
    }
}
