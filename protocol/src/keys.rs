//! Ed25519 keys as the protocol writes them: lowercase hex, canonical encodings only.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::hexfmt::decode_fixed;

/// A checked public key: 32 bytes, canonical point encoding, not of small order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parse a hex key, refusing uppercase, wrong lengths and non-canonical or weak points.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = decode_fixed::<32>(s, "public key")?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, String> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| "public key is not a valid Ed25519 point".to_string())?;
        // Decompression reduces some non-canonical encodings; re-encoding tells them apart.
        if key.as_bytes() != bytes {
            return Err("public key is not canonically encoded".into());
        }
        if key.is_weak() {
            return Err("public key is of small order".into());
        }
        Ok(Self(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Strict verification: refuses non-canonical `S` and small-order `R`, so one
    /// message has one valid signature encoding per key.
    pub fn verify(&self, message: &[u8], sig: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(sig);
        self.0.verify_strict(message, &sig).is_ok()
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A secret key (a node's, or a client's in the CLI). Stored as the 32-byte seed in hex.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

impl NodeKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn from_seed_hex(s: &str) -> Result<Self, String> {
        let seed = decode_fixed::<32>(s.trim(), "secret key seed")?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn seed_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn public_hex(&self) -> String {
        self.public().to_hex()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey(public {})", self.public_hex())
    }
}

/// The message a client signs to authenticate a WebSocket (PROTOCOL.md 4.2).
pub fn auth_message(node_hex: &str, challenge_hex: &str) -> String {
    format!("meshrelay-auth-v1:{node_hex}:{challenge_hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_point_encoding_is_refused() {
        // y = p (2^255 - 19) encodes the same point as y = 0: not canonical.
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xed;
        bytes[31] = 0x7f;
        assert!(PublicKey::from_bytes(&bytes).is_err());
    }

    #[test]
    fn small_order_key_is_refused() {
        // The identity point (y = 1) has order 1.
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        assert!(PublicKey::from_bytes(&bytes).is_err());
    }

    #[test]
    fn a_generated_key_round_trips_through_hex() {
        let key = NodeKey::generate();
        let again = NodeKey::from_seed_hex(&key.seed_hex()).unwrap();
        assert_eq!(key.public_hex(), again.public_hex());
        let sig = key.sign(b"x");
        assert!(key.public().verify(b"x", &sig));
        assert!(!key.public().verify(b"y", &sig));
    }
}
