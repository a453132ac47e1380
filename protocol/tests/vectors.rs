//! Every case of `../shared/vectors/payloads.json` and `filters.json` as a test.

use std::path::PathBuf;

use meshrelay_protocol::node_doc::SignedNodeDoc;
use meshrelay_protocol::{keys, Filter, Limits, NodeKey, Payload, PublicKey};
use serde_json::Value;

/// A fixed "now" shortly after the vectors were made, so far-future stays far.
const NOW: u64 = 1_763_900_000;

fn vectors(name: &str) -> Value {
    let dir = std::env::var("MESHRELAY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_valid_payload_vector_verifies_and_reproduces() {
    let v = vectors("payloads.json");
    let valid = v["valid"].as_array().unwrap();
    assert!(!valid.is_empty());
    for case in valid {
        let name = case["name"].as_str().unwrap();
        let text = case["payload"].to_string();
        let p = Payload::from_json(&text, &Limits::default(), NOW)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            String::from_utf8(p.canonical_form()).unwrap(),
            case["canonical"].as_str().unwrap(),
            "{name}: canonical form"
        );
        assert_eq!(p.id, case["id"].as_str().unwrap(), "{name}: id");
        // Signing the same fields with the vector's seed gives the same bytes (Ed25519 is deterministic).
        let key = NodeKey::from_seed_hex(case["secret_seed"].as_str().unwrap()).unwrap();
        assert_eq!(key.public_hex(), p.author, "{name}: author key");
        let draft = meshrelay_protocol::payload::Draft {
            seq: p.seq,
            prev: p.prev.clone(),
            created_at: p.created_at,
            kind: p.kind.clone(),
            channel: p.channel.clone(),
            tags: p.tags.clone(),
            content: p.content.clone(),
        };
        let signed = Payload::sign(&key, draft);
        assert_eq!(
            signed.sig,
            case["sig"].as_str().unwrap(),
            "{name}: signature"
        );
        assert_eq!(signed.id, p.id, "{name}: id from signing");
    }
}

#[test]
fn every_invalid_payload_vector_gets_its_code() {
    let v = vectors("payloads.json");
    let invalid = v["invalid"].as_array().unwrap();
    assert!(!invalid.is_empty());
    for case in invalid {
        let name = case["name"].as_str().unwrap();
        let want = case["code"].as_str().unwrap();
        let text = case["payload"].to_string();
        let err = Payload::from_json(&text, &Limits::default(), NOW)
            .expect_err(&format!("{name} must be refused"));
        assert_eq!(err.code.as_str(), want, "{name}: {}", err.message);
    }
}

#[test]
fn the_auth_vector_verifies() {
    let v = vectors("payloads.json");
    let a = &v["auth"];
    let msg = keys::auth_message(
        a["node"].as_str().unwrap(),
        a["challenge"].as_str().unwrap(),
    );
    assert_eq!(msg, a["message"].as_str().unwrap());
    let client = NodeKey::from_seed_hex(a["client_seed"].as_str().unwrap()).unwrap();
    assert_eq!(client.public_hex(), a["client"].as_str().unwrap());
    assert_eq!(
        hex::encode(client.sign(msg.as_bytes())),
        a["sig"].as_str().unwrap()
    );
    let pk = PublicKey::from_hex(a["client"].as_str().unwrap()).unwrap();
    let sig: [u8; 64] = hex::decode(a["sig"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert!(pk.verify(msg.as_bytes(), &sig));
}

#[test]
fn the_node_document_vector_reproduces() {
    let v = vectors("payloads.json");
    let nd = &v["node_document"];
    let signed: SignedNodeDoc = serde_json::from_value(nd["document"].clone()).unwrap();
    assert_eq!(
        serde_json_canonicalizer::to_string(&signed.doc).unwrap(),
        nd["canonical_doc"].as_str().unwrap()
    );
    signed.verify_signature().unwrap();
    let key = NodeKey::from_seed_hex(nd["node_seed"].as_str().unwrap()).unwrap();
    let again = signed.doc.clone().sign(&key);
    assert_eq!(again.sig, signed.sig);
    let mut tampered = signed.clone();
    tampered.doc.issued_at += 1;
    assert!(tampered.verify_signature().is_err());
}

#[test]
fn every_filter_vector_selects_its_payloads() {
    let payloads = vectors("payloads.json");
    let valid: Vec<(String, Payload)> = payloads["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = Payload::from_json(&c["payload"].to_string(), &Limits::default(), NOW).unwrap();
            (c["name"].as_str().unwrap().to_string(), p)
        })
        .collect();
    let cases = vectors("filters.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let filters: Vec<Filter> = case["filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| Filter::from_value(f.clone()).unwrap())
            .collect();
        let mut got: Vec<&str> = valid
            .iter()
            .filter(|(_, p)| meshrelay_protocol::filter::any_matches(&filters, p))
            .map(|(n, _)| n.as_str())
            .collect();
        let mut want: Vec<&str> = case["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "filter case {i}: {}", case["filters"]);
    }
}
