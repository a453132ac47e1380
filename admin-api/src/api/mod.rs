//! The JSON routes under `/admin/v1` (PROTOCOL.md 7): the router, the OpenAPI
//! document, the token check, and what every resource's handlers share. Routes
//! and their OpenAPI entries are registered together, so `/admin/v1/openapi.json`
//! is what is served.
//!
//! Each resource has its own module, with its handlers and the bodies they answer
//! with; those bodies derive `Deserialize` too, because `meshrelay admin` reads
//! the answers into the same types (re-exported as `crate::types`). Doc comments
//! on handlers, bodies and their fields are the document's descriptions: editing
//! one changes `openapi.json`.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{unix_now, Actor, AdminContext, AdminError, AdminResult};

mod audit;
mod authors;
mod blobs;
pub(crate) mod communities;
mod deliveries;
mod jobs;
mod payloads;
mod peers;
mod stats;
pub mod sync;

pub use audit::{audit_views, AuditLog, AuditQuery, AuditView};
pub use authors::{AuthorBlock, BlockedAuthor, BlockedAuthors};
pub use blobs::{BlobList, BlobQuery, BlobView, RemovedBlob};
pub use deliveries::{Deliveries, Delivery, DeliveryQuery, Retried, RetryRequest};
pub use jobs::{job_views, JobList, JobStarted, JobView};
pub use payloads::HiddenPayload;
pub use peers::{peer_views, AddPeer, Health, PeerList, PeerView};

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
        .routes(routes!(stats::get_stats))
        .routes(routes!(peers::list_peers, peers::add_peer))
        .routes(routes!(peers::change_peer))
        .routes(routes!(peers::remove_peer))
        .routes(routes!(authors::blocked_authors))
        .routes(routes!(authors::block_author, authors::unblock_author))
        .routes(routes!(payloads::hide_payload))
        .routes(routes!(blobs::list_blobs))
        .routes(routes!(blobs::remove_blob))
        .routes(routes!(communities::list_communities))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::retry_deliveries))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::run_job))
        .routes(routes!(sync::run_sync))
        .routes(routes!(audit::audit_log))
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

/// A change made through the API, as the audit log records it.
fn api_actor(addr: SocketAddr) -> Actor {
    Actor {
        from: addr.ip().to_string(),
        via: "api",
    }
}

/// A JSON request body, or 400 `bad_request` saying what is wrong with it.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> AdminResult<T> {
    body.map(|Json(t)| t)
        .map_err(|e| AdminError::bad_request(e.body_text()))
}

/// A query string, or 400 `bad_request` saying what is wrong with it.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> AdminResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| AdminError::bad_request(e.body_text()))
}

/// How many rows a listing may return: 100 unless asked, at most 1000.
fn list_limit(limit: Option<i64>) -> AdminResult<i64> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::bad_request("limit is 1 to 1000"));
    }
    Ok(limit)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// `{"code", "message"}`
    #[schema(value_type = Object)]
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A PROTOCOL.md error code, e.g. `not_found` or `auth_failed`.
    pub code: String,
    pub message: String,
}

/// Seconds since the Unix epoch, for templates.
pub(crate) fn now() -> i64 {
    unix_now()
}
