//! Anti-entropy sync messages from a peer (PROTOCOL.md 5.5), both roles:
//!
//! - responder: a fixed item set answers an arbitrary query, exactly as
//!   `sync::Responder::answer` does once the set is loaded
//!   (`Negentropy::borrowed(&set, FRAME_LIMIT)` then `reconcile`);
//! - initiator: a fresh `sync::Session` over another fixed set takes the same
//!   bytes as the peer's answer (`Session::step`, i.e. `reconcile_with_ids`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshrelay_federation::sync::{item_set, Row, Session, FRAME_LIMIT};
use negentropy::{Negentropy, NegentropyStorageVector};

/// 100 items a second apart; `skip` leaves some out and `extra` adds some, so
/// the two sides differ in a few places.
fn rows(skip: &[u64], extra: &[u64]) -> Vec<Row> {
    let mut rows: Vec<Row> = (0..100u64)
        .filter(|i| !skip.contains(i))
        .chain(extra.iter().copied())
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_be_bytes());
            id[31] = 0xa5;
            (1_763_800_000 + i, id)
        })
        .collect();
    rows.sort_unstable();
    rows
}

fn responder_set() -> &'static NegentropyStorageVector {
    static SET: OnceLock<NegentropyStorageVector> = OnceLock::new();
    SET.get_or_init(|| item_set(&rows(&[3, 50], &[200, 201])).unwrap())
}

fn initiator_rows() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| rows(&[7], &[300]))
}

fuzz_target!(|data: &[u8]| {
    // Responder: stateless, one round per request.
    let mut neg = Negentropy::borrowed(responder_set(), FRAME_LIMIT as u64).unwrap();
    if let Ok(answer) = neg.reconcile(data) {
        assert!(!answer.is_empty(), "an answer is at least the version byte");
    }

    // Initiator: its first message went out; `data` is the peer's answer.
    let set = item_set(initiator_rows()).unwrap();
    let (mut session, first) = Session::start(set).unwrap();
    assert!(first.len() <= FRAME_LIMIT);
    if let Ok(Some(next)) = session.step(data) {
        assert!(
            next.len() <= FRAME_LIMIT,
            "initiator message over the frame limit"
        );
    }
});
