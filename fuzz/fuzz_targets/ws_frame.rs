//! WebSocket client text frames (PROTOCOL.md 4.2): `ClientFrame::parse`, which
//! the node's connection reader calls on every text frame (node/src/ws.rs
//! `Session::handle`), then what the node does next with each frame's parts
//! that can be done without a node: checking a published payload, and
//! building the frames it answers with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrelay_protocol::payload::{valid_channel, valid_tag_name};
use meshrelay_protocol::ws::{out, ClientFrame, MAX_SIGNAL_DATA_BYTES};
use meshrelay_protocol::receipt::Receipt;
use meshrelay_protocol::{Limits, NodeKey, Payload};
use serde_json::Value;

const NOW: u64 = 1_763_800_200;
const FROM: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn is_json(s: &str) {
    serde_json::from_str::<Value>(s).expect("the node's own frame is not JSON");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Err(e) => is_json(&out::error(&e.error, e.reference.as_deref())),
        Ok(ClientFrame::Publish { payload }) => {
            match Payload::from_json(payload.get(), &Limits::default(), NOW) {
                Ok(p) => {
                    // The ok frame with the node's receipt (PROTOCOL.md 4.4)
                    // is JSON, and the receipt in it verifies.
                    let node = NodeKey::from_seed_hex(&"11".repeat(32)).unwrap();
                    let receipt = Receipt::sign(&node, &p.id, NOW).unwrap();
                    let frame = out::ok_accepted(&p.id, false, Some(&receipt));
                    is_json(&frame);
                    let v: Value = serde_json::from_str(&frame).unwrap();
                    let back: Receipt = serde_json::from_value(v["receipt"].clone()).unwrap();
                    back.verify().unwrap();
                    is_json(&out::payload("s", &p.to_json()));
                }
                Err(e) => is_json(&out::ok_refused(None, &e)),
            }
        }
        Ok(ClientFrame::Subscribe { sub, filters }) => {
            assert!(
                (1..=64).contains(&sub.chars().count()),
                "sub {sub:?} accepted"
            );
            for f in &filters {
                f.validate()
                    .expect("subscribe accepted a filter that does not validate");
            }
            is_json(&out::eose(&sub));
            is_json(&out::closed(&sub, "unsubscribed"));
        }
        Ok(ClientFrame::Unsubscribe { sub }) => is_json(&out::closed(&sub, "unknown")),
        Ok(ClientFrame::Signal {
            channel,
            kind,
            data,
        }) => {
            assert!(valid_channel(&channel));
            assert!(valid_tag_name(&kind));
            let size = serde_json::to_string(&data).unwrap().len();
            assert!(
                size <= MAX_SIGNAL_DATA_BYTES,
                "signal data of {size} bytes accepted"
            );
            is_json(&out::signal(FROM, &channel, &kind, &data));
        }
        Ok(ClientFrame::Auth { pubkey, .. }) => is_json(&out::auth_ok(&pubkey)),
        Ok(ClientFrame::Ping) => is_json(&out::pong()),
    }
});
