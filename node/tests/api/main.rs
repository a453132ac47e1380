//! Integration tests of the client API: the real router on a random port, talked
//! to over HTTP and WebSocket exactly as a client would.

mod admin;
mod audit;
mod blobs;
mod bounds;
#[path = "../common/mod.rs"]
mod common;
mod communities;
mod federation;
mod helpers;
mod hostile;
mod http;
mod receipts;
mod sync;
mod tls;
mod ws;
