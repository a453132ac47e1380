//! The JSON routes under `/admin/v1` (PROTOCOL.md 7). Routes and their OpenAPI
//! entries are registered together, so `/admin/v1/openapi.json` is what is served.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_protocol::ErrorCode;
use meshrelay_store::{OutboxState, Peer, PeerStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::actions::{self, PeerAction};
use crate::stats::{self, Stats};
use crate::{unix_now, Actor, AdminContext, AdminError, AdminResult};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshrelay admin API",
        description = "The operators' API of a meshrelay node (PROTOCOL.md 7), on the admin \
                       listener. Every route wants `Authorization: Bearer <admin token>`; \
                       errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct AdminDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route under `/admin/v1`, behind the token check.
pub fn router(ctx: AdminContext) -> axum::Router {
    let (router, api) = OpenApiRouter::with_openapi(AdminDoc::openapi())
        .routes(routes!(get_stats))
        .routes(routes!(list_peers, add_peer))
        .routes(routes!(change_peer))
        .routes(routes!(remove_peer))
        .routes(routes!(blocked_authors))
        .routes(routes!(block_author, unblock_author))
        .routes(routes!(hide_payload))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_deliveries))
        .routes(routes!(list_jobs))
        .routes(routes!(run_job))
        .routes(routes!(audit_log))
        .split_for_parts();
    router
        .route(
            "/admin/v1/openapi.json",
            axum::routing::get(move || {
                let api = api.clone();
                async move { Json(api) }
            }),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            require_token,
        ))
        .with_state(ctx)
}

/// The admin router's fallback answers only under `/admin/v1`; the dashboard
/// has its own routes.
async fn not_found() -> AdminError {
    AdminError::not_found("no such admin route")
}

/// 401 `auth_failed` unless the request carries the admin token. Applies to
/// every path under `/admin/v1`, unknown ones included.
async fn require_token(State(ctx): State<AdminContext>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/admin/v1") {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match token {
        Some(t) if ctx.token_matches(t) => next.run(req).await,
        Some(_) => AdminError::new(ErrorCode::AuthFailed, "wrong admin token").into_response(),
        None => AdminError::new(
            ErrorCode::AuthFailed,
            "this route wants Authorization: Bearer <admin token>",
        )
        .into_response(),
    }
}

fn api_actor(addr: SocketAddr) -> Actor {
    Actor {
        from: addr.ip().to_string(),
        via: "api",
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> AdminResult<T> {
    body.map(|Json(t)| t)
        .map_err(|e| AdminError::bad_request(e.body_text()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `{"code", "message"}`
    #[schema(value_type = Object)]
    pub error: Value,
}

/// Counts, rates, connections, outbox depth per peer, dead letters, database size.
#[utoipa::path(get, path = "/admin/v1/stats", responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
async fn get_stats(State(ctx): State<AdminContext>) -> AdminResult<Json<Stats>> {
    Ok(Json(stats::gather(&ctx).await?))
}

/// How a peer is doing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `failing` (its last poll or delivery failed) or `blocked`.
    pub state: String,
    pub poll_failures: i64,
    pub delivery_failures: i64,
    /// Unix seconds of the last successful poll.
    pub last_poll_ok: Option<i64>,
    /// Unix seconds of the last recorded delivery attempt.
    pub last_delivery: Option<i64>,
    /// Outbox items waiting for it, and given up on.
    pub pending: i64,
    pub dead: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeerView {
    pub node: String,
    pub url: String,
    /// `pending`, `active`, `blocked`, `unreachable` or `key_changed`.
    pub status: String,
    /// Its last known subscription preference, null before the first poll.
    #[schema(value_type = Object)]
    pub subscribe: Value,
    pub inbox: Option<String>,
    /// Unix seconds.
    pub added_at: i64,
    /// Unix seconds of the last poll attempt.
    pub last_poll: Option<i64>,
    pub health: Health,
}

impl PeerView {
    pub fn new(p: Peer, depth: Option<&meshrelay_store::OutboxDepth>) -> Self {
        let state = if p.status == PeerStatus::Blocked {
            "blocked"
        } else if p.poll_failures > 0 || p.delivery_failures > 0 {
            "failing"
        } else {
            "ok"
        };
        Self {
            subscribe: p
                .subscribe
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null),
            health: Health {
                state: state.to_string(),
                poll_failures: p.poll_failures,
                delivery_failures: p.delivery_failures,
                last_poll_ok: p.last_poll_ok,
                last_delivery: p.last_delivery,
                pending: depth.map_or(0, |d| d.pending),
                dead: depth.map_or(0, |d| d.dead),
            },
            node: p.node,
            url: p.url,
            status: p.status.to_string(),
            inbox: p.inbox,
            added_at: p.added_at,
            last_poll: p.last_poll,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeerList {
    pub peers: Vec<PeerView>,
}

pub async fn peer_views(ctx: &AdminContext) -> AdminResult<Vec<PeerView>> {
    let depth = ctx.store.outbox_depth_by_peer().await?;
    Ok(ctx
        .store
        .peers()
        .await?
        .into_iter()
        .map(|p| {
            let d = depth.get(&p.node);
            PeerView::new(p, d)
        })
        .collect())
}

/// Every known peer with its status and delivery health.
#[utoipa::path(get, path = "/admin/v1/peers", responses((status = 200, body = PeerList), (status = 401, body = ErrorBody)))]
async fn list_peers(State(ctx): State<AdminContext>) -> AdminResult<Json<PeerList>> {
    Ok(Json(PeerList {
        peers: peer_views(&ctx).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddPeer {
    pub url: String,
}

async fn one_peer(ctx: &AdminContext, peer: Peer) -> AdminResult<PeerView> {
    let depth = ctx.store.outbox_depth_by_peer().await?;
    let d = depth.get(&peer.node);
    Ok(PeerView::new(peer, d))
}

/// Add a peer by URL: fetch its node document, pin its key, announce this node.
#[utoipa::path(
    post,
    path = "/admin/v1/peers",
    request_body = AddPeer,
    responses(
        (status = 201, body = PeerView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "blocked", body = ErrorBody),
        (status = 409, description = "key_changed: the URL is known under another key", body = ErrorBody),
        (status = 422, description = "the node document could not be fetched or checked", body = ErrorBody)
    )
)]
async fn add_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<AddPeer>, JsonRejection>,
) -> AdminResult<(StatusCode, Json<PeerView>)> {
    let req = json_body(body)?;
    let peer = actions::add_peer(&ctx, &api_actor(addr), &req.url).await?;
    Ok((StatusCode::CREATED, Json(one_peer(&ctx, peer).await?)))
}

/// Approve a pending peer (or re-pin one whose key changed), block, unblock,
/// or poll its node document now.
#[utoipa::path(
    post,
    path = "/admin/v1/peers/{node}/{action}",
    params(("node" = String, Path), ("action" = String, Path, description = "approve, block, unblock or poll")),
    responses((status = 200, body = PeerView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn change_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((node, action)): Path<(String, String)>,
) -> AdminResult<Json<PeerView>> {
    let action = PeerAction::parse(&action).ok_or_else(|| {
        AdminError::not_found("no such peer action: use approve, block, unblock or poll")
    })?;
    let peer = actions::peer_action(&ctx, &api_actor(addr), &node, action).await?;
    Ok(Json(one_peer(&ctx, peer).await?))
}

/// Forget a peer and its queue.
#[utoipa::path(
    delete,
    path = "/admin/v1/peers/{node}",
    params(("node" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn remove_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(node): Path<String>,
) -> AdminResult<StatusCode> {
    actions::remove_peer(&ctx, &api_actor(addr), &node).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedAuthor {
    pub author: String,
    /// Unix seconds.
    pub blocked_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedAuthors {
    pub authors: Vec<BlockedAuthor>,
}

/// Authors whose payloads are refused and hidden.
#[utoipa::path(get, path = "/admin/v1/authors/blocked", responses((status = 200, body = BlockedAuthors), (status = 401, body = ErrorBody)))]
async fn blocked_authors(State(ctx): State<AdminContext>) -> AdminResult<Json<BlockedAuthors>> {
    Ok(Json(BlockedAuthors {
        authors: ctx
            .store
            .blocked_authors()
            .await?
            .into_iter()
            .map(|(author, blocked_at)| BlockedAuthor { author, blocked_at })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorBlock {
    pub author: String,
    pub blocked: bool,
    /// False when nothing changed (it was already blocked).
    pub changed: bool,
}

/// Block an author: its new payloads are refused `blocked`, its stored ones hidden.
#[utoipa::path(
    post,
    path = "/admin/v1/authors/{key}/block",
    params(("key" = String, Path)),
    responses((status = 200, body = AuthorBlock), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
async fn block_author(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> AdminResult<Json<AuthorBlock>> {
    let changed = actions::block_author(&ctx, &api_actor(addr), &key, true).await?;
    Ok(Json(AuthorBlock {
        author: key,
        blocked: true,
        changed,
    }))
}

/// Unblock an author: its stored payloads show again.
#[utoipa::path(
    delete,
    path = "/admin/v1/authors/{key}/block",
    params(("key" = String, Path)),
    responses((status = 200, body = AuthorBlock), (status = 401, body = ErrorBody), (status = 404, description = "not blocked", body = ErrorBody))
)]
async fn unblock_author(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> AdminResult<Json<AuthorBlock>> {
    actions::block_author(&ctx, &api_actor(addr), &key, false).await?;
    Ok(Json(AuthorBlock {
        author: key,
        blocked: false,
        changed: true,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HiddenPayload {
    pub id: String,
    pub hidden: bool,
    /// False when it was hidden already.
    pub changed: bool,
}

/// Hide one payload for good (it is purged after the grace period).
#[utoipa::path(
    delete,
    path = "/admin/v1/payloads/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = HiddenPayload), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn hide_payload(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> AdminResult<Json<HiddenPayload>> {
    let changed = actions::hide_payload(&ctx, &api_actor(addr), &id).await?;
    Ok(Json(HiddenPayload {
        id,
        hidden: true,
        changed,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// `pending` (default) or `dead`.
    pub state: Option<String>,
    /// At most this many, oldest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub peer: String,
    pub payload: String,
    pub hops: i64,
    /// Unix milliseconds.
    pub enqueued_at: i64,
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

/// The outbox: items waiting for delivery, or given up on.
#[utoipa::path(
    get,
    path = "/admin/v1/deliveries",
    params(DeliveryQuery),
    responses((status = 200, body = Deliveries), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
async fn list_deliveries(
    State(ctx): State<AdminContext>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> AdminResult<Json<Deliveries>> {
    let Query(q) = query.map_err(|e| AdminError::bad_request(e.body_text()))?;
    let state: OutboxState = q
        .state
        .as_deref()
        .unwrap_or("pending")
        .parse()
        .map_err(|_| AdminError::bad_request("state is pending or dead"))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::bad_request("limit is 1 to 1000"));
    }
    let items = ctx.store.outbox_items(state, limit).await?;
    Ok(Json(Deliveries {
        deliveries: items
            .into_iter()
            .map(|i| Delivery {
                id: i.item_id,
                peer: i.peer,
                payload: i.payload_id,
                hops: i.hops,
                enqueued_at: i.enqueued_at,
                attempts: i.attempts,
                next_attempt: i.next_attempt,
                last_error: i.last_error,
                state: i.state.to_string(),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RetryRequest {
    /// Dead letters to retry; all of them when absent.
    pub ids: Option<Vec<i64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub retried: u64,
}

/// Put dead letters back in the queue: all of them, or `{"ids": [...]}`.
#[utoipa::path(
    post,
    path = "/admin/v1/deliveries/retry",
    request_body(content = Option<RetryRequest>, description = "optional"),
    responses((status = 200, body = Retried), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
async fn retry_deliveries(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> AdminResult<Json<Retried>> {
    let req: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest { ids: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::bad_request(format!("retry body: {e}")))?
    };
    let retried = actions::retry_deliveries(&ctx, &api_actor(addr), req.ids.as_deref()).await?;
    Ok(Json(Retried { retried }))
}

#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
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
async fn list_jobs(State(ctx): State<AdminContext>) -> AdminResult<Json<JobList>> {
    Ok(Json(JobList {
        jobs: job_views(&ctx).await?,
    }))
}

/// Run a job now (it runs in the background).
#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{name}/run",
    params(("name" = String, Path)),
    responses((status = 202, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "running now", body = ErrorBody))
)]
async fn run_job(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> AdminResult<(StatusCode, Json<Value>)> {
    actions::run_job(&ctx, &api_actor(addr), &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"job": name, "status": "started"})),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Only entries older than this entry id (to page back).
    pub before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The verb: add, approve, block, unblock, poll, remove, hide, retry, run,
    /// login, login_failed, logout.
    pub action: String,
    /// `peer:<node>`, `author:<key>`, `payload:<id>`, `deliveries:...`,
    /// `job:<name>` or `dashboard`.
    pub target: String,
    /// The client address the change came from.
    pub from: String,
    /// `api` or `dashboard`.
    pub via: String,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditView>,
}

pub async fn audit_views(
    ctx: &AdminContext,
    before: Option<i64>,
    limit: i64,
) -> AdminResult<Vec<AuditView>> {
    Ok(ctx
        .store
        .audit(before, limit)
        .await?
        .into_iter()
        .map(|e| AuditView {
            id: e.entry_id,
            at: e.at,
            action: e.action,
            target: e.target,
            from: e.from_addr,
            via: e.via,
            detail: e.detail,
        })
        .collect())
}

/// Who changed what, when and from where; newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
async fn audit_log(
    State(ctx): State<AdminContext>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> AdminResult<Json<AuditLog>> {
    let Query(q) = query.map_err(|e| AdminError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::bad_request("limit is 1 to 1000"));
    }
    Ok(Json(AuditLog {
        entries: audit_views(&ctx, q.before, limit).await?,
    }))
}

/// Seconds since the Unix epoch, for templates.
pub(crate) fn now() -> i64 {
    unix_now()
}
