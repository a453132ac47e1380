//! Signed node documents as fetched from a peer's `/.well-known/meshrelay`
//! (PROTOCOL.md 5.1): `SignedNodeDoc` deserialization (from bytes, as
//! federation/src/client.rs reads them) and `verify_signature`; and the same
//! input as an operator's `subscribe` setting, `Subscribe::from_setting`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrelay_protocol::node_doc::{SignedNodeDoc, Subscribe};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<SignedNodeDoc>(data) {
        if let Ok(key) = doc.verify_signature() {
            assert_eq!(
                key.to_hex(),
                doc.doc.node,
                "verified by another key than node"
            );
            // Re-serialized, the document still verifies (how a node relays it).
            let again: SignedNodeDoc =
                serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
            assert_eq!(again, doc);
            again
                .verify_signature()
                .expect("re-serialized document no longer verifies");
        }
        if let Subscribe::Filtered { filters } = &doc.doc.subscribe {
            for f in filters {
                let _ = f.validate();
            }
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sub) = Subscribe::from_setting(text) {
        if let Subscribe::Filtered { filters } = &sub {
            for f in filters {
                f.validate()
                    .expect("from_setting accepted an invalid filter");
                assert!(f.limit.is_none(), "from_setting accepted a limit");
            }
        }
        // The preference as a node document carries it reads back the same.
        let json = serde_json::to_string(&sub).unwrap();
        let back: Subscribe = serde_json::from_str(&json).expect("preference does not read back");
        assert_eq!(back, sub);
    }
});
