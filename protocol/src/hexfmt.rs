//! Strict lowercase hex (PROTOCOL.md 1): uppercase or a wrong length is refused, never guessed.

/// Decode exactly `N` bytes from lowercase hex, or say why not.
pub fn decode_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    if s.len() != N * 2 {
        return Err(format!(
            "{what} must be {} lowercase hex characters, got {}",
            N * 2,
            s.len()
        ));
    }
    if !is_lower_hex(s) {
        return Err(format!("{what} must be lowercase hex"));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("{what}: {e}"))?;
    Ok(out)
}

pub fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a 64-character lowercase hex string (a key or an id).
pub fn is_hex32(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercase_hex_is_refused() {
        let up = "AB".repeat(32);
        assert!(decode_fixed::<32>(&up, "id").is_err());
        assert!(decode_fixed::<32>(&"ab".repeat(32), "id").is_ok());
    }

    #[test]
    fn wrong_length_is_refused() {
        assert!(decode_fixed::<32>(&"ab".repeat(31), "id").is_err());
        assert!(!is_hex32(&"ab".repeat(33)));
    }
}
