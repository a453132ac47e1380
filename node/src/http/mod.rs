//! The public listener's routes (PROTOCOL.md 4.1, 4.2, 5.1). Routes and their
//! OpenAPI entries are registered together, so `/openapi.json` is what is served.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{error_body, ApiError};
use crate::state::AppState;

pub mod authors;
pub mod communities;
pub mod federation;
pub mod ops;
pub mod payloads;
pub mod schema;
pub mod serve;
pub mod ws;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshrelay client API",
        description = "The client-facing HTTP API of a meshrelay node (PROTOCOL.md 4). \
                       Errors are `{\"error\": {\"code\", \"message\"}}` with the status of their code."
    ),
    components(schemas(schema::ErrorBody, schema::PayloadDoc))
)]
struct ApiDoc;

/// Room a WebSocket frame takes around the payload it carries
/// (`{"op":"publish","payload":...}`), or a subscribe frame around its filters.
pub const FRAME_ENVELOPE_BYTES: usize = 1024;

/// Largest WebSocket client frame: one payload at `max_payload_bytes` and its
/// envelope. A larger frame ends the connection (1009).
pub fn max_frame_bytes(limits: &crate::settings::ClientLimits) -> usize {
    limits.max_payload_bytes + FRAME_ENVELOPE_BYTES
}

/// The router and the OpenAPI document describing it.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    // A published payload is the whole body: `max_payload_bytes` (PROTOCOL.md 10).
    let body_limit = state.settings.limits.max_payload_bytes;
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(payloads::publish, payloads::query))
        .routes(routes!(payloads::get_one))
        .routes(routes!(authors::head))
        .routes(routes!(authors::log))
        .routes(routes!(communities::community))
        .routes(routes!(ops::info))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::node_document))
        .routes(routes!(crate::http::ws::upgrade))
        .routes(routes!(federation::peers))
        .split_for_parts();
    // Federation POSTs carry at most 1 MiB (PROTOCOL.md 5.4).
    let (fed_router, fed_api) = OpenApiRouter::new()
        .routes(routes!(federation::inbox))
        .routes(routes!(federation::announce))
        .routes(routes!(federation::sync))
        .routes(routes!(federation::fetch))
        .routes(routes!(federation::ihave))
        .layer(DefaultBodyLimit::max(
            meshrelay_federation::limits::MAX_BODY_BYTES,
        ))
        .split_for_parts();
    // Blob bodies stream through their own bounds (max_blob_bytes, checked
    // as they arrive), not the payload-sized body limit.
    let (blob_router, blob_api) = OpenApiRouter::new()
        .routes(routes!(
            crate::blobs::http::put_blob,
            crate::blobs::http::get_blob,
            crate::blobs::http::head_blob
        ))
        .layer(DefaultBodyLimit::disable())
        .split_for_parts();
    let mut api = api;
    api.merge(fed_api);
    api.merge(blob_api);
    let router = router.merge(fed_router).merge(blob_router);
    let api_json = api.clone();
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let api = api_json.clone();
                async move { Json(api) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Reading a body at a byte a second holds a task: at most request_timeout_secs.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(state.settings.connections.request_timeout_secs),
        ))
        // PROTOCOL.md 4.3: every answer, a blob's above all, is taken for
        // the type it names, never sniffed.
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            axum::http::HeaderValue::from_static("nosniff"),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(meshrelay_protocol::ErrorCode::Internal, "internal error").into_response()
        }))
        .with_state(state);
    (meshrelay_admin_api::layers::traced(router, "public"), api)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(error_body(
            meshrelay_protocol::ErrorCode::BadRequest,
            "method not allowed on this route",
        )),
    )
        .into_response()
}
