//! meshrelay wire types (PROTOCOL.md sections 1–3, 4.2, 4.4 and 5.1): pure data and
//! checks, no I/O, so every other crate and every other implementation agrees on them.

pub mod clock;
pub mod community;
pub mod error;
pub mod filter;
pub mod hexfmt;
pub mod keys;
pub mod node_doc;
pub mod payload;
pub mod receipt;
pub mod strict_json;
pub mod ws;

pub use error::{ErrorCode, ProtocolError};
pub use filter::Filter;
pub use keys::{NodeKey, PublicKey};
pub use payload::{Limits, Payload};

/// The software name announced in `/v1/info` and node documents.
pub const SOFTWARE_NAME: &str = "meshrelay";
/// This crate's version is the protocol implementation's version.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
