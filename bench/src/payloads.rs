//! Signed payloads for the scenarios: a post by `key` at the current time.

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};

/// A post in `channel`; `prev` is a placeholder id, since relays accept gaps.
pub fn post(
    key: &NodeKey,
    seq: u64,
    channel: String,
    tags: Vec<Vec<String>>,
    content: String,
) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_secs(),
            kind: "post".into(),
            channel,
            tags,
            content,
        },
    )
}
