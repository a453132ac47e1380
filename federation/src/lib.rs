//! Federation between meshrelay nodes (PROTOCOL.md 5 and 6).

pub mod client;
pub mod httpsig;
pub mod router;
pub mod service;
pub mod sync;

pub use service::{Config, Federation, JoinError};
