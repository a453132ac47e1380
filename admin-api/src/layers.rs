//! What both listeners (the public one and this admin one) wrap every request
//! in: a request id (`x-request-id`, taken from the request or made, and sent
//! back), and a tracing span per request carrying it, so one request's log
//! lines can be found together.

use axum::http::Request;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// `router` with request ids and a span per request named `listener`.
pub fn traced(router: axum::Router, listener: &'static str) -> axum::Router {
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(
            move |req: &Request<axum::body::Body>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", listener, id, method = %req.method(), path = %req.uri().path())
            },
        ))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
