//! Every case of `../shared/vectors/receipts.json` (PROTOCOL.md 4.4) as a test:
//! the signed messages byte for byte, the signatures reproduced from the
//! vectors' node seed, and every altered receipt or head refused.

use std::path::PathBuf;

use meshrelay_protocol::receipt::{head_message, receipt_message, Receipt, SignedHead};
use meshrelay_protocol::NodeKey;
use serde_json::Value;

fn vectors() -> Value {
    let dir = std::env::var("MESHRELAY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    let path = dir.join("receipts.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn raw32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn node_key(v: &Value) -> NodeKey {
    let key = NodeKey::from_seed_hex(v["node_seed"].as_str().unwrap()).unwrap();
    assert_eq!(
        key.public_hex(),
        v["node"].as_str().unwrap(),
        "node key from seed"
    );
    key
}

#[test]
fn every_receipt_vector_reproduces_and_verifies() {
    let v = vectors();
    let key = node_key(&v);
    let cases = v["receipts"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let id = case["id"].as_str().unwrap();
        let at = case["received_at"].as_u64().unwrap();
        let message = receipt_message(&raw32(&case["id"]), at);
        assert_eq!(
            message.len() as u64,
            case["message_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex::encode(message),
            case["message_hex"].as_str().unwrap(),
            "{name}: message"
        );
        let signed = Receipt::sign(&key, id, at).unwrap();
        assert_eq!(
            signed.sig,
            case["sig"].as_str().unwrap(),
            "{name}: signature"
        );
        let given: Receipt = serde_json::from_value(case["receipt"].clone()).unwrap();
        assert_eq!(given, signed, "{name}: receipt object");
        given.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn every_head_vector_reproduces_and_verifies() {
    let v = vectors();
    let key = node_key(&v);
    let cases = v["heads"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (seq, at) = (case["seq"].as_u64().unwrap(), case["at"].as_u64().unwrap());
        let message = head_message(&raw32(&case["author"]), seq, &raw32(&case["id"]), at);
        assert_eq!(
            message.len() as u64,
            case["message_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex::encode(message),
            case["message_hex"].as_str().unwrap(),
            "{name}: message"
        );
        let signed = SignedHead::sign(
            &key,
            case["author"].as_str().unwrap(),
            seq,
            case["id"].as_str().unwrap(),
            at,
        )
        .unwrap();
        assert_eq!(
            signed.sig,
            case["sig"].as_str().unwrap(),
            "{name}: signature"
        );
        let given: SignedHead = serde_json::from_value(case["head"].clone()).unwrap();
        assert_eq!(given, signed, "{name}: head object");
        given.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn every_invalid_receipt_and_head_vector_is_refused() {
    let v = vectors();
    let cases = v["invalid"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let refused = match case["kind"].as_str().unwrap() {
            "receipt" => serde_json::from_value::<Receipt>(case["receipt"].clone())
                .unwrap()
                .verify()
                .is_err(),
            "head" => serde_json::from_value::<SignedHead>(case["head"].clone())
                .unwrap()
                .verify()
                .is_err(),
            other => panic!("{name}: unknown kind {other}"),
        };
        assert!(refused, "{name}: an altered {} verified", case["kind"]);
    }
}
