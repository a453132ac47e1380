//! `../shared/vectors/http-signatures.json`: the RFC 9421 B.2.6 example and the
//! profile examples from an independent implementation; then the profile's refusals.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderMap;
use meshrelay_httpsig::{self as httpsig, Message, Verifier};
use meshrelay_protocol::{NodeKey, PublicKey};
use serde_json::Value;

/// `../shared/vectors/http-signatures.json`, or the same file under `MESHRELAY_VECTORS`.
fn vectors() -> Value {
    let dir = std::env::var("MESHRELAY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    let path = dir.join("http-signatures.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn headers(list: &Value) -> HeaderMap {
    let mut h = HeaderMap::new();
    for pair in list.as_array().unwrap() {
        let name: http::HeaderName = pair[0]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .parse()
            .unwrap();
        h.append(name, pair[1].as_str().unwrap().parse().unwrap());
    }
    h
}

/// The last 32 bytes of a PKCS#8 / SPKI Ed25519 PEM are the seed / public key.
fn pem_tail(pem: &str) -> [u8; 32] {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = B64.decode(b64).unwrap();
    der[der.len() - 32..].try_into().unwrap()
}

#[test]
fn the_rfc_9421_b26_example_reproduces_byte_for_byte() {
    let v = &vectors()["rfc9421_b26"];
    let req = &v["request"];
    let mut h = headers(&req["headers"]);
    // The signed request carries the signature headers; build the base from its input.
    let input = v["signature_input"].as_str().unwrap();
    h.insert("signature-input", input.parse().unwrap());
    h.insert(
        "signature",
        v["signature"].as_str().unwrap().parse().unwrap(),
    );
    let msg = Message {
        method: req["method"].as_str().unwrap(),
        target_uri: req["url"].as_str().unwrap(),
        headers: &h,
    };
    let components: Vec<String> = [
        "date",
        "@method",
        "@path",
        "@authority",
        "content-type",
        "content-length",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut params = sfv::Parameters::new();
    params.insert(
        sfv::Key::from_string("created".into()).unwrap(),
        sfv::BareItem::Integer(sfv::Integer::constant(1618884473)),
    );
    params.insert(
        sfv::Key::from_string("keyid".into()).unwrap(),
        sfv::BareItem::String(sfv::String::from_string("test-key-ed25519".into()).unwrap()),
    );
    let base = httpsig::signature_base(&msg, &components, &params).unwrap();
    assert_eq!(base, v["signature_base"].as_str().unwrap());

    let key = NodeKey::from_seed_hex(&hex::encode(pem_tail(
        v["private_key_pem"].as_str().unwrap(),
    )))
    .unwrap();
    let public = PublicKey::from_bytes(&pem_tail(v["public_key_pem"].as_str().unwrap())).unwrap();
    assert_eq!(key.public(), public);
    let sig = B64.encode(key.sign(base.as_bytes()));
    assert_eq!(format!("sig-b26=:{sig}:"), v["signature"].as_str().unwrap());
    // ...and the verifier accepts the RFC's request (with its own label).
    let mut relabelled = h.clone();
    relabelled.insert(
        "signature-input",
        input.replacen("sig-b26", "sig1", 1).parse().unwrap(),
    );
    relabelled.insert(
        "signature",
        v["signature"]
            .as_str()
            .unwrap()
            .replacen("sig-b26", "sig1", 1)
            .parse()
            .unwrap(),
    );
    let msg = Message {
        headers: &relabelled,
        ..msg
    };
    httpsig::verify_raw(&msg, &public).unwrap();
}

#[test]
fn the_profile_examples_verify_at_their_time_and_are_refused_as_stale_now() {
    for ex in vectors()["profile_examples"].as_array().unwrap() {
        let name = ex["name"].as_str().unwrap();
        let h = headers(&ex["headers"]);
        let msg = Message {
            method: ex["method"].as_str().unwrap(),
            target_uri: ex["url"].as_str().unwrap(),
            headers: &h,
        };
        let body = ex["body"].as_str().map(str::as_bytes);
        let verifier = Verifier::default();
        let key = verifier
            .verify(&msg, body, 1_763_800_000 + 10)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.to_hex(), ex["keyid"].as_str().unwrap(), "{name}");
        let signer = NodeKey::from_seed_hex(ex["signer_seed"].as_str().unwrap()).unwrap();
        assert_eq!(signer.public_hex(), key.to_hex());
        // The same request again is a replay.
        let again = verifier.verify(&msg, body, 1_763_800_000 + 11).unwrap_err();
        assert!(again.0.contains("replay"), "{name}: {again}");
        // A fresh verifier living in the real present refuses it as too old.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let stale = Verifier::default().verify(&msg, body, now).unwrap_err();
        assert!(stale.0.contains("too old"), "{name}: {stale}");
    }
}

fn signed(body: Option<&[u8]>, now: i64) -> (NodeKey, HeaderMap) {
    let key = NodeKey::generate();
    let mut h = HeaderMap::new();
    if body.is_some() {
        h.insert("content-type", "application/json".parse().unwrap());
    }
    httpsig::sign(
        &key,
        "POST",
        "https://relay.example.org/v1/federation/inbox",
        &mut h,
        body,
        now,
    )
    .unwrap();
    (key, h)
}

const URI: &str = "https://relay.example.org/v1/federation/inbox";

fn verify(
    h: &HeaderMap,
    uri: &str,
    body: Option<&[u8]>,
    now: i64,
) -> Result<PublicKey, httpsig::Refusal> {
    Verifier::default().verify(
        &Message {
            method: "POST",
            target_uri: uri,
            headers: h,
        },
        body,
        now,
    )
}

#[test]
fn our_signatures_verify_and_name_their_signer() {
    let (key, h) = signed(Some(b"{\"items\":[]}"), 1000);
    assert_eq!(
        verify(&h, URI, Some(b"{\"items\":[]}"), 1000).unwrap(),
        key.public()
    );
    let (key, h) = signed(None, 1000);
    assert_eq!(verify(&h, URI, None, 1030).unwrap(), key.public());
}

#[test]
fn tampering_staleness_and_weak_coverage_are_refused() {
    let body = b"{\"items\":[]}".as_slice();
    let (_, h) = signed(Some(body), 1000);
    let why = |r: Result<PublicKey, httpsig::Refusal>| r.unwrap_err().0;
    assert!(why(verify(&h, URI, Some(b"{\"items\":[1]}"), 1000)).contains("Content-Digest"));
    assert!(why(verify(
        &h,
        "https://other.example.org/v1/federation/inbox",
        Some(body),
        1000
    ))
    .contains("does not verify"));
    assert!(why(verify(&h, URI, Some(body), 1000 + 301)).contains("too old"));
    assert!(why(verify(&h, URI, Some(body), 1000 - 61)).contains("future"));

    // A signature over the method and URI alone does not cover the body.
    let (_, mut bare) = signed(None, 1000);
    bare.insert("content-type", "application/json".parse().unwrap());
    bare.insert(
        "content-digest",
        httpsig::content_digest(body).parse().unwrap(),
    );
    assert!(why(verify(&bare, URI, Some(body), 1000)).contains("must be covered"));

    // Two signatures, an unsigned request, and a wrong label.
    let mut two = h.clone();
    let input = h["signature-input"].to_str().unwrap().to_string();
    two.insert(
        "signature-input",
        format!("{input}, {}", input.replacen("sig1", "sig2", 1))
            .parse()
            .unwrap(),
    );
    assert!(why(verify(&two, URI, Some(body), 1000)).contains("exactly one"));
    let mut none = h.clone();
    none.remove("signature");
    assert!(why(verify(&none, URI, Some(body), 1000)).contains("no signature"));
    let mut other = h.clone();
    other.insert(
        "signature-input",
        input.replacen("sig1", "sigx", 1).parse().unwrap(),
    );
    let sig = h["signature"].to_str().unwrap().replacen("sig1", "sigx", 1);
    other.insert("signature", sig.parse().unwrap());
    assert!(why(verify(&other, URI, Some(body), 1000)).contains("labelled sig1"));
}
