//! The seam between federation and the node: federation receives peers'
//! payloads (inbox, sync) but only the node can store one, because storing
//! means committing it with its forwards and handing it to live subscribers.
//! Federation defines what it needs here; the node implements it.

use futures_util::future::BoxFuture;
use meshrelay_protocol::{Payload, ProtocolError};

/// Where a payload came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A local client, over `ws` or `http`.
    Local(&'static str),
    /// A peer's inbox item with its hops; `sync` items are not forwarded onward.
    Peer {
        node: &'a str,
        hops: u32,
        sync: bool,
    },
}

/// A payload the node holds now (newly stored, or a duplicate of one it held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub duplicate: bool,
    /// When this node first stored it (PROTOCOL.md 4.4); `None` only for a
    /// duplicate of a payload purged before the node kept that time.
    pub received_at: Option<u64>,
}

/// A payload that passed its checks, or one whose id the node held when it
/// was checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub payload: Payload,
    /// `Some(received_at)` when the node already held this id: its fields
    /// and id were checked, its signature not (the held copy's was, and the
    /// id commits to all the signature covers). `store` answers it as a
    /// duplicate and stores nothing.
    pub held: Option<Option<u64>>,
}

/// What federation needs from the node to take in a peer's payloads.
pub trait Ingest: Send + Sync {
    /// Check a payload's fields, id and signature (PROTOCOL.md 2); the
    /// signature of one the node holds already may be left unchecked.
    fn check(&self, json: &str) -> Result<Checked, ProtocolError>;

    /// Store a checked payload (with its forwards, in one transaction) and
    /// hand it to live subscribers. Answers after the commit.
    fn store<'a>(
        &'a self,
        checked: Checked,
        source: Source<'a>,
    ) -> BoxFuture<'a, Result<Accepted, ProtocolError>>;
}
