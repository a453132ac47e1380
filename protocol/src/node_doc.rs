//! The signed node document (PROTOCOL.md 5.1) and the subscription preference it carries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ProtocolError, Result};
use crate::filter::Filter;
use crate::hexfmt::decode_fixed;
use crate::keys::{NodeKey, PublicKey};

pub const NODE_DOC_SIG_PREFIX: &[u8] = b"meshrelay-node-v1:";

/// What a node wants forwarded to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase", deny_unknown_fields)]
pub enum Subscribe {
    All,
    None,
    Filtered { filters: Vec<Filter> },
}

impl Subscribe {
    /// Parse the `subscribe` setting: `all`, `none`, or a JSON list of filters.
    pub fn from_setting(s: &str) -> Result<Self> {
        match s.trim() {
            "all" => Ok(Subscribe::All),
            "none" => Ok(Subscribe::None),
            json => {
                let filters: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| {
                    ProtocolError::bad_request(format!(
                        "subscribe must be all, none or a JSON filter list: {e}"
                    ))
                })?;
                let filters = filters
                    .into_iter()
                    .map(Filter::from_value)
                    .collect::<Result<Vec<_>>>()?;
                if filters.iter().any(|f| f.limit.is_some()) {
                    return Err(ProtocolError::bad_request(
                        "subscription preference filters take no limit",
                    ));
                }
                Ok(Subscribe::Filtered { filters })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDoc {
    pub node: String,
    pub url: String,
    pub software: Software,
    pub inbox: String,
    pub subscribe: Subscribe,
    pub issued_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNodeDoc {
    pub doc: NodeDoc,
    pub sig: String,
}

impl NodeDoc {
    fn signing_message(&self) -> Vec<u8> {
        let canonical =
            serde_json_canonicalizer::to_vec(self).expect("a node document canonicalizes");
        let mut m = NODE_DOC_SIG_PREFIX.to_vec();
        m.extend_from_slice(&Sha256::digest(canonical));
        m
    }

    pub fn sign(self, key: &NodeKey) -> SignedNodeDoc {
        let sig = hex::encode(key.sign(&self.signing_message()));
        SignedNodeDoc { doc: self, sig }
    }
}

impl SignedNodeDoc {
    /// Check the signature by the document's own `node` key.
    pub fn verify_signature(&self) -> Result<PublicKey> {
        let bad = |m: String| ProtocolError::new(crate::ErrorCode::AuthFailed, m);
        // RFC 8785 writes integers as doubles: past 2^53 two documents that
        // differ in `issued_at` would share one signature.
        if self.doc.issued_at >= 1 << 53 {
            return Err(bad("issued_at must be below 2^53".into()));
        }
        let key = PublicKey::from_hex(&self.doc.node).map_err(bad)?;
        let sig = decode_fixed::<64>(&self.sig, "sig").map_err(bad)?;
        if !key.verify(&self.doc.signing_message(), &sig) {
            return Err(bad("node document signature does not verify".into()));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issued_at: u64) -> NodeDoc {
        NodeDoc {
            node: String::new(),
            url: "https://r.example".into(),
            software: Software {
                name: "meshrelay".into(),
                version: "0".into(),
            },
            inbox: "https://r.example/v1/federation/inbox".into(),
            subscribe: Subscribe::All,
            issued_at,
        }
    }

    #[test]
    fn a_document_past_2_pow_53_is_refused_whatever_it_signs() {
        let key = NodeKey::generate();
        let signed = |t| {
            let mut d = doc(t);
            d.node = key.public_hex();
            d.sign(&key)
        };
        assert!(signed(1_763_800_000).verify_signature().is_ok());
        // 2^53 and 2^53 + 1 canonicalize alike: neither may verify.
        let mut forged = signed(1 << 53);
        forged.doc.issued_at = (1 << 53) + 1;
        assert!(signed(1 << 53).verify_signature().is_err());
        assert!(forged.verify_signature().is_err());
    }
}
