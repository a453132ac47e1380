//! Signed federation requests (PROTOCOL.md 6, RFC 9421 + RFC 9530): the
//! headers and body of an inbound request, verified as the node's inbox does
//! (`Verifier::check`, then `remember` once the signer is admitted;
//! `Verifier::verify` does both) and by `verify_raw`. None of it may panic.
//!
//! Input layout, split on the first five `\n` (header values cannot hold one):
//!
//! ```text
//! path-and-query \n Signature-Input \n Signature \n Content-Digest \n Content-Type \n body
//! ```
//!
//! An empty field leaves that header out; `\r` inside a field (also never in
//! a header value) separates repeated headers of the same name. With all six
//! fields the request is a POST with that body, with fewer a GET without one.
//! The target URI is the node's public URL followed by the path and query.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use meshrelay_federation::httpsig::{verify_raw, Message, Verifier};
use meshrelay_protocol::PublicKey;

const PUBLIC_URL: &str = "http://127.0.0.1:7700";
/// The profile vectors' `created` plus 10 s, so they verify (http-signatures.json).
const NOW: i64 = 1_763_800_010;
/// The profile vectors' signer (keyid).
const PROFILE_KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
/// RFC 9421 B.1.4 test-key-ed25519.
const RFC_KEY: &str = "26b40b8f93fff3d897112f7ebc582b232dbd72517d082fe83cfb30ddce43d1bb";

const HEADERS: [&str; 4] = [
    "signature-input",
    "signature",
    "content-digest",
    "content-type",
];

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(6, |&b| b == b'\n');
    let path = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for name in HEADERS {
        let Some(field) = fields.next() else { break };
        for value in field.split(|&b| b == b'\r').filter(|v| !v.is_empty()) {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                headers.append(HeaderName::from_static(name), v);
            }
        }
    }
    let body = fields.next();
    let target = format!("{PUBLIC_URL}{path}");
    let msg = Message {
        method: if body.is_some() { "POST" } else { "GET" },
        target_uri: &target,
        headers: &headers,
    };

    let verifier = Verifier::default();
    // `check` alone (what the inbox runs before admitting the signer) does not
    // remember the nonce, so `verify` (check, then remember) agrees with it.
    let checked = verifier.check(&msg, body, NOW);
    let verified = verifier.verify(&msg, body, NOW);
    assert_eq!(
        checked.is_ok(),
        verified.is_ok(),
        "check and verify disagree"
    );
    if let Ok(key) = verified {
        assert_eq!(checked.unwrap().key, key);
        // The same request again is a replay.
        assert!(
            verifier.verify(&msg, body, NOW).is_err(),
            "a verified request was accepted twice"
        );
        verify_raw(&msg, &key).expect("verify accepted what verify_raw refuses");
    }
    // The inbox always passes a body (possibly empty).
    let _ = Verifier::default().verify(&msg, Some(body.unwrap_or_default()), NOW);
    for key in [PROFILE_KEY, RFC_KEY] {
        let key = PublicKey::from_hex(key).unwrap();
        let _ = verify_raw(&msg, &key);
    }
});
