//! meshrelay-client: what a Rust client of meshrelay relays uses.
//!
//! - [`RelayClient`]: publish (with the relay's receipt), get, query with
//!   paging, the author's signed head and whole log, live subscriptions as a
//!   stream. Every payload, receipt and head a relay answers is verified
//!   before it is returned; an answer that does not verify is
//!   [`Error::BadAnswer`].
//! - [`ReceiptStore`]: the receipts and signed heads a client verified, and
//!   the entries it published, kept in a local file (PROTOCOL.md 4.4).
//! - [`audit`]: the check of an author's log across relays against that
//!   store: invalid entries, forks, omissions, withheld payloads, rollbacks.
//!
//! - Blobs (PROTOCOL.md 4.3): [`RelayClient::put_blob`] signs an upload
//!   with any client key; [`RelayClient::get_blob`] checks the bytes against
//!   their name.

pub mod audit;
pub mod blobs;
pub mod receipts;
pub mod relay;

pub use audit::{audit, Finding, HeadSeen, Kind, RelayLog};
pub use blobs::{blob_name, Progress, StoredBlob};
pub use receipts::{Evidence, KeptReceipt, ReceiptStore};
pub use relay::{Event, LogEntry, Page, Published, RelayClient};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relay could not be reached, or the connection failed.
    #[error("{0}")]
    Transport(String),
    /// The relay answered with an error.
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The relay answered something that does not verify or does not fit.
    #[error("{0}")]
    BadAnswer(String),
    /// The relay closed a WebSocket: in words.
    #[error("{0}")]
    Closed(String),
    /// The receipts store could not be read or written.
    #[error("{0}")]
    Store(String),
    /// A caller's mistake (a malformed URL, say).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
