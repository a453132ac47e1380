//! Receipts and signed heads (PROTOCOL.md 4.4): what a relay promised a
//! client, signed by the relay's node key, so that a client roaming between
//! relays can show anyone that a relay withheld or rolled back an entry.

use serde::{Deserialize, Serialize};

use crate::hexfmt::decode_fixed;
use crate::{NodeKey, PublicKey};

/// The 21 ASCII bytes before a receipt's id and time.
pub const RECEIPT_PREFIX: &[u8; 21] = b"meshrelay-receipt-v1:";
/// The 18 ASCII bytes before a head's author, seq, id and time.
pub const HEAD_PREFIX: &[u8; 18] = b"meshrelay-head-v1:";

/// A relay's signed statement that it stored payload `id` at `received_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub node: String,
    pub id: String,
    pub received_at: u64,
    pub sig: String,
}

/// `"meshrelay-receipt-v1:" || id || received_at (u64 big-endian)`: 61 bytes.
pub fn receipt_message(id: &[u8; 32], received_at: u64) -> [u8; 61] {
    let mut m = [0u8; 61];
    m[..21].copy_from_slice(RECEIPT_PREFIX);
    m[21..53].copy_from_slice(id);
    m[53..].copy_from_slice(&received_at.to_be_bytes());
    m
}

impl Receipt {
    /// Sign a receipt for the payload `id` (lowercase hex) with the node key.
    pub fn sign(key: &NodeKey, id: &str, received_at: u64) -> Result<Self, String> {
        let raw = decode_fixed::<32>(id, "payload id")?;
        let sig = key.sign(&receipt_message(&raw, received_at));
        Ok(Self {
            node: key.public_hex(),
            id: id.to_string(),
            received_at,
            sig: hex::encode(sig),
        })
    }

    /// Check the signature against the receipt's own `node` key.
    pub fn verify(&self) -> Result<(), String> {
        let node = PublicKey::from_hex(&self.node).map_err(|e| format!("receipt node: {e}"))?;
        let id = decode_fixed::<32>(&self.id, "receipt id")?;
        let sig = decode_fixed::<64>(&self.sig, "receipt sig")?;
        if node.verify(&receipt_message(&id, self.received_at), &sig) {
            Ok(())
        } else {
            Err("the receipt's signature does not verify with its node key".into())
        }
    }
}

/// `GET /v1/authors/{key}/head` with the relay's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub author: String,
    pub seq: u64,
    pub id: String,
    pub at: u64,
    pub node: String,
    pub sig: String,
}

/// `"meshrelay-head-v1:" || author || seq || id || at` (integers u64
/// big-endian): 98 bytes.
pub fn head_message(author: &[u8; 32], seq: u64, id: &[u8; 32], at: u64) -> [u8; 98] {
    let mut m = [0u8; 98];
    m[..18].copy_from_slice(HEAD_PREFIX);
    m[18..50].copy_from_slice(author);
    m[50..58].copy_from_slice(&seq.to_be_bytes());
    m[58..90].copy_from_slice(id);
    m[90..].copy_from_slice(&at.to_be_bytes());
    m
}

impl SignedHead {
    /// Sign the head `(author, seq, id)` as answered at `at`.
    pub fn sign(key: &NodeKey, author: &str, seq: u64, id: &str, at: u64) -> Result<Self, String> {
        let a = decode_fixed::<32>(author, "author key")?;
        let i = decode_fixed::<32>(id, "head id")?;
        let sig = key.sign(&head_message(&a, seq, &i, at));
        Ok(Self {
            author: author.to_string(),
            seq,
            id: id.to_string(),
            at,
            node: key.public_hex(),
            sig: hex::encode(sig),
        })
    }

    /// Check the signature against the head's own `node` key.
    pub fn verify(&self) -> Result<(), String> {
        let node = PublicKey::from_hex(&self.node).map_err(|e| format!("head node: {e}"))?;
        let author = decode_fixed::<32>(&self.author, "head author")?;
        let id = decode_fixed::<32>(&self.id, "head id")?;
        let sig = decode_fixed::<64>(&self.sig, "head sig")?;
        if node.verify(&head_message(&author, self.seq, &id, self.at), &sig) {
            Ok(())
        } else {
            Err("the head's signature does not verify with its node key".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_receipt_verifies_and_an_altered_one_does_not() {
        let key = NodeKey::generate();
        let r = Receipt::sign(&key, &"ab".repeat(32), 1_763_800_000).unwrap();
        r.verify().unwrap();
        let later = Receipt {
            received_at: r.received_at + 1,
            ..r.clone()
        };
        assert!(later.verify().is_err());
        let other = Receipt {
            node: NodeKey::generate().public_hex(),
            ..r
        };
        assert!(other.verify().is_err());
    }

    #[test]
    fn a_signed_head_verifies_and_an_altered_one_does_not() {
        let key = NodeKey::generate();
        let author = NodeKey::generate().public_hex();
        let h = SignedHead::sign(&key, &author, 7, &"cd".repeat(32), 1_763_800_000).unwrap();
        h.verify().unwrap();
        assert!(SignedHead {
            seq: 6,
            ..h.clone()
        }
        .verify()
        .is_err());
        assert!(SignedHead { at: 1, ..h }.verify().is_err());
    }
}
