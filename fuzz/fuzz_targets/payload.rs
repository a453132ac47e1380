//! Payload JSON text as any client or peer sends it: the strict JSON parser
//! (protocol/src/strict_json.rs) and `Payload::from_json`, the single gate
//! every payload passes (PROTOCOL.md 1 and 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrelay_protocol::strict_json::parse_strict;
use meshrelay_protocol::{Limits, Payload};

/// Fixed clock: a little after the seeds' `created_at`, so they are not in the future.
const NOW: u64 = 1_763_800_200;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();

    if let Ok(value) = parse_strict(text) {
        // Strict JSON is a subset of JSON: serde_json reads the same value.
        let plain: serde_json::Value =
            serde_json::from_str(text).expect("strict JSON that serde_json refuses");
        assert_eq!(plain, value, "strict and plain JSON disagree");
        // What we write back, we read again as the same value.
        let again = parse_strict(&value.to_string()).expect("re-serialized strict JSON refused");
        assert_eq!(again, value, "strict JSON does not round-trip");
    }

    let Ok(payload) = Payload::from_json(text, &limits, NOW) else {
        return;
    };
    // An accepted payload satisfies every check on its own.
    payload
        .check_fields(&limits, NOW)
        .expect("accepted payload fails its field checks");
    payload
        .check_id()
        .expect("accepted payload fails its id check");
    payload
        .check_signature()
        .expect("accepted payload fails its signature check");
    assert_eq!(payload.id, hex::encode(payload.compute_id()));
    parse_strict(std::str::from_utf8(&payload.canonical_form()).expect("canonical form is UTF-8"))
        .expect("canonical form is not strict JSON");

    // Re-serialized, it parses again to the same payload and id.
    let json = payload.to_json();
    let back = Payload::from_json(&json, &limits, NOW).expect("re-serialized payload refused");
    assert_eq!(back, payload, "payload does not round-trip through to_json");
    assert_eq!(back.id, payload.id);
    assert_eq!(back.to_json(), json, "to_json is not stable");
});
