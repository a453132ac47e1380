//! The sizes of PROTOCOL.md 5 in one place: what this node sends is built to
//! them, and what it receives is refused past them.

/// Most items in one inbox request (5.4).
pub const MAX_ITEMS: usize = 100;
/// Most bytes in one inbox request (5.4).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest negentropy message either side sends or accepts (5.5).
pub const FRAME_LIMIT: usize = 60_000;
/// Most ids in one fetch request (5.5).
pub const MAX_FETCH_IDS: usize = 500;
/// Most bytes of payload JSON in one fetch answer; the initiator asks again
/// for what did not fit.
pub const MAX_FETCH_ANSWER_BYTES: usize = 3 * 1024 * 1024;
/// Largest node document accepted (5.1).
pub const MAX_DOC_BYTES: usize = 64 * 1024;
/// Largest answer to a federation POST accepted from a peer.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
