//! The node's one clock. Times on the wire (PROTOCOL.md 1) and in columns
//! without a suffix are Unix seconds; columns and names ending in `_ms` are
//! Unix milliseconds (the outbox's attempt times, `hidden_at`). Everything in
//! the workspace reads the time through these two functions.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 on a clock set before it).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch (0 on a clock set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `now_secs` for the wire's unsigned times (payload checks, documents).
pub fn now_wire_secs() -> u64 {
    now_secs().max(0) as u64
}
