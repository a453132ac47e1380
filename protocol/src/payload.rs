//! The signed payload (PROTOCOL.md 2): field rules, canonical form, id and signature.
//! `Payload::from_json` is the single gate every payload passes, whatever its source.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, ProtocolError, Result};
use crate::hexfmt::{decode_fixed, is_hex32};
use crate::keys::{NodeKey, PublicKey};
use crate::strict_json::parse_strict;

/// Domain separation prefix of payload signatures.
pub const PAYLOAD_SIG_PREFIX: &[u8] = b"meshrelay-payload-v1:";
/// The kind whose `e` tags hide the same author's payloads (PROTOCOL.md 2.3).
pub const KIND_DELETE: &str = "delete";

const FIELDS: [&str; 10] = [
    "id",
    "author",
    "seq",
    "prev",
    "created_at",
    "kind",
    "channel",
    "tags",
    "content",
    "sig",
];

/// The node's payload limits; defaults are PROTOCOL.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_content_bytes: usize,
    pub max_future_skew: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: 65536,
            max_future_skew: 600,
        }
    }
}

/// A payload whose fields, id and signature have been checked (or that we signed).
/// Field order is the wire order, so serializing gives the familiar layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub id: String,
    pub author: String,
    pub seq: u64,
    pub prev: Option<String>,
    pub created_at: u64,
    pub kind: String,
    pub channel: String,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: String,
}

/// The unsigned part of a payload, as a client builds it before signing.
#[derive(Debug, Clone)]
pub struct Draft {
    pub seq: u64,
    pub prev: Option<String>,
    pub created_at: u64,
    pub kind: String,
    pub channel: String,
    pub tags: Vec<Vec<String>>,
    pub content: String,
}

impl Payload {
    /// Parse and fully check payload JSON text: fields, then id, then signature.
    pub fn from_json(text: &str, limits: &Limits, now: u64) -> Result<Self> {
        Self::from_json_with_keys(text, limits, now, PublicKey::from_hex)
    }

    /// Like `from_json`, with the author key decoded by `decode_key`, so a caller
    /// can cache decoded keys: decompressing a point costs about a fifth of a
    /// verification, and most payloads come from authors seen before.
    pub fn from_json_with_keys(
        text: &str,
        limits: &Limits,
        now: u64,
        decode_key: impl Fn(&str) -> Result<PublicKey, String>,
    ) -> Result<Self> {
        let (payload, author) = Self::from_json_unsigned(text, limits, now, decode_key)?;
        payload.check_signature_by(&author)?;
        Ok(payload)
    }

    /// Every check of `from_json_with_keys` but the signature's: fields and
    /// id. With the decoded author key for `check_signature_by`. A caller
    /// that already holds a payload of this id (whose signature it checked
    /// when it stored it) may answer "duplicate" without checking this one's:
    /// the id commits to everything the signature covers, so a copy with a
    /// bad signature changes nothing it holds.
    pub fn from_json_unsigned(
        text: &str,
        limits: &Limits,
        now: u64,
        decode_key: impl Fn(&str) -> Result<PublicKey, String>,
    ) -> Result<(Self, PublicKey)> {
        let value = parse_strict(text)
            .map_err(|e| ProtocolError::invalid_payload(format!("payload JSON: {e}")))?;
        let payload = Self::from_value_unchecked(value)?;
        let author = decode_key(&payload.author)
            .map_err(|e| ProtocolError::invalid_payload(format!("author: {e}")))?;
        payload.check_fields_except_author(limits, now)?;
        payload.check_id()?;
        Ok((payload, author))
    }

    /// Shape and types only: exactly the ten members, each of its JSON type.
    fn from_value_unchecked(value: Value) -> Result<Self> {
        let Value::Object(mut obj) = value else {
            return Err(ProtocolError::invalid_payload(
                "payload must be a JSON object",
            ));
        };
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) {
                return Err(ProtocolError::invalid_payload(format!(
                    "unknown member {key:?}"
                )));
            }
        }
        for f in FIELDS {
            if !obj.contains_key(f) {
                return Err(ProtocolError::invalid_payload(format!(
                    "missing member {f:?}"
                )));
            }
        }
        let prev = match obj.remove("prev") {
            Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            _ => {
                return Err(ProtocolError::invalid_payload(
                    "prev must be a string or null",
                ))
            }
        };
        let tags = match obj.remove("tags") {
            Some(Value::Array(tags)) => tags
                .into_iter()
                .map(|t| match t {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|s| match s {
                            Value::String(s) => Ok(s),
                            _ => Err(ProtocolError::invalid_payload(
                                "every tag element must be a string",
                            )),
                        })
                        .collect::<Result<Vec<_>>>(),
                    _ => Err(ProtocolError::invalid_payload("every tag must be an array")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(ProtocolError::invalid_payload("tags must be an array")),
        };
        Ok(Self {
            id: take_string(&mut obj, "id")?,
            author: take_string(&mut obj, "author")?,
            seq: take_integer(&mut obj, "seq")?,
            prev,
            created_at: take_integer(&mut obj, "created_at")?,
            kind: take_string(&mut obj, "kind")?,
            channel: take_string(&mut obj, "channel")?,
            tags,
            content: take_string(&mut obj, "content")?,
            sig: take_string(&mut obj, "sig")?,
        })
    }

    /// Every field rule of PROTOCOL.md 2, in one place.
    pub fn check_fields(&self, limits: &Limits, now: u64) -> Result<()> {
        PublicKey::from_hex(&self.author)
            .map_err(|e| ProtocolError::invalid_payload(format!("author: {e}")))?;
        self.check_fields_except_author(limits, now)
    }

    fn check_fields_except_author(&self, limits: &Limits, now: u64) -> Result<()> {
        fn bad(m: impl Into<String>) -> ProtocolError {
            ProtocolError::invalid_payload(m)
        }
        if !is_hex32(&self.id) {
            return Err(bad("id must be 64 lowercase hex characters"));
        }
        if self.sig.len() != 128 || !crate::hexfmt::is_lower_hex(&self.sig) {
            return Err(bad("sig must be 128 lowercase hex characters"));
        }
        if self.seq < 1 {
            return Err(bad("seq must be at least 1"));
        }
        match (&self.prev, self.seq) {
            (None, 1) => {}
            (Some(_), 1) => return Err(bad("prev must be null when seq is 1")),
            (None, _) => return Err(bad("prev must be an id when seq is above 1")),
            (Some(p), _) if !is_hex32(p) => {
                return Err(bad("prev must be 64 lowercase hex characters"))
            }
            (Some(_), _) => {}
        }
        if !valid_kind(&self.kind) {
            return Err(bad("kind must be 1-64 characters of [a-z0-9._-]"));
        }
        if !valid_channel(&self.channel) {
            return Err(bad(
                "channel must be 1-128 characters of [a-z0-9._/-], without a leading or trailing '/' or '//'",
            ));
        }
        check_tags(&self.tags)?;
        // PROTOCOL.md 9.1 and 9.2 are field rules too: before the id and signature.
        crate::community::check_fields(self).map_err(bad)?;
        if self.kind == KIND_DELETE && self.delete_targets().next().is_none() {
            return Err(bad("a delete must name at least one [\"e\", <id>] tag"));
        }
        if self.content.len() > limits.max_content_bytes {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "content is {} bytes; this node takes at most {}",
                    self.content.len(),
                    limits.max_content_bytes
                ),
            ));
        }
        if self.created_at > now.saturating_add(limits.max_future_skew) {
            return Err(bad(format!(
                "created_at {} is more than {} s in the future",
                self.created_at, limits.max_future_skew
            )));
        }
        Ok(())
    }

    /// RFC 8785 form of the payload without `id` and `sig`.
    pub fn canonical_form(&self) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("author".into(), Value::String(self.author.clone()));
        obj.insert("seq".into(), Value::from(self.seq));
        obj.insert(
            "prev".into(),
            self.prev.clone().map(Value::String).unwrap_or(Value::Null),
        );
        obj.insert("created_at".into(), Value::from(self.created_at));
        obj.insert("kind".into(), Value::String(self.kind.clone()));
        obj.insert("channel".into(), Value::String(self.channel.clone()));
        obj.insert(
            "tags".into(),
            Value::Array(
                self.tags
                    .iter()
                    .map(|t| Value::Array(t.iter().cloned().map(Value::String).collect()))
                    .collect(),
            ),
        );
        obj.insert("content".into(), Value::String(self.content.clone()));
        serde_json_canonicalizer::to_vec(&Value::Object(obj))
            .expect("a map of strings, integers and arrays always canonicalizes")
    }

    pub fn compute_id(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_form()).into()
    }

    pub fn check_id(&self) -> Result<()> {
        if hex::encode(self.compute_id()) != self.id {
            return Err(ProtocolError::new(
                ErrorCode::InvalidId,
                "id is not the SHA-256 of the payload's canonical form",
            ));
        }
        Ok(())
    }

    pub fn check_signature(&self) -> Result<()> {
        let author = PublicKey::from_hex(&self.author)
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidSignature, e))?;
        self.check_signature_by(&author)
    }

    /// Verify the signature with the already decoded author key.
    pub fn check_signature_by(&self, author: &PublicKey) -> Result<()> {
        let invalid = |m: &str| ProtocolError::new(ErrorCode::InvalidSignature, m);
        debug_assert_eq!(author.to_hex(), self.author);
        let id = decode_fixed::<32>(&self.id, "id").map_err(|e| invalid(&e))?;
        let sig = decode_fixed::<64>(&self.sig, "sig").map_err(|e| invalid(&e))?;
        if !author.verify(&signing_message(&id), &sig) {
            return Err(invalid("signature does not verify against author"));
        }
        Ok(())
    }

    /// Sign a draft as `key`'s author: the client side of PROTOCOL.md 2.1.
    pub fn sign(key: &NodeKey, draft: Draft) -> Self {
        let mut p = Payload {
            id: String::new(),
            author: key.public_hex(),
            seq: draft.seq,
            prev: draft.prev,
            created_at: draft.created_at,
            kind: draft.kind,
            channel: draft.channel,
            tags: draft.tags,
            content: draft.content,
            sig: String::new(),
        };
        let id = p.compute_id();
        p.id = hex::encode(id);
        p.sig = hex::encode(key.sign(&signing_message(&id)));
        p
    }

    /// Ids named by this payload's `e` tags, when it is a delete.
    pub fn delete_targets(&self) -> impl Iterator<Item = &str> {
        let is_delete = self.kind == KIND_DELETE;
        self.tags.iter().filter_map(move |t| match t.as_slice() {
            [name, id, ..] if is_delete && name == "e" && is_hex32(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// The value of the first tag element after the name, for tag filters.
    pub fn tag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags.iter().filter_map(move |t| match t.as_slice() {
            [n, v, ..] if n == name => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("payload serializes")
    }
}

/// `"meshrelay-payload-v1:"` followed by the raw id.
pub fn signing_message(id: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PAYLOAD_SIG_PREFIX.len() + 32);
    m.extend_from_slice(PAYLOAD_SIG_PREFIX);
    m.extend_from_slice(id);
    m
}

fn take_string(obj: &mut Map<String, Value>, f: &str) -> Result<String> {
    match obj.remove(f) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ProtocolError::invalid_payload(format!(
            "{f} must be a string"
        ))),
    }
}

fn take_integer(obj: &mut Map<String, Value>, f: &str) -> Result<u64> {
    match obj.remove(f).as_ref().and_then(Value::as_u64) {
        Some(n) => Ok(n),
        None => Err(ProtocolError::invalid_payload(format!(
            "{f} must be a non-negative integer"
        ))),
    }
}

fn check_tags(tags: &[Vec<String>]) -> Result<()> {
    fn bad(m: impl Into<String>) -> ProtocolError {
        ProtocolError::invalid_payload(m)
    }
    if tags.len() > 64 {
        return Err(bad("at most 64 tags"));
    }
    for tag in tags {
        let Some(name) = tag.first() else {
            return Err(bad("a tag must be a non-empty array"));
        };
        if tag.len() > 8 {
            return Err(bad("a tag has at most 8 strings"));
        }
        if !valid_tag_name(name) {
            return Err(bad("a tag name must be 1-32 characters of [a-z0-9_-]"));
        }
        if tag.iter().any(|s| s.len() > 1024) {
            return Err(bad("a tag string is at most 1024 bytes"));
        }
    }
    Ok(())
}

pub fn valid_kind(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

pub fn valid_channel(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b))
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.contains("//")
}

pub fn valid_tag_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            seq: 1,
            prev: None,
            created_at: 1_763_800_000,
            kind: "post".into(),
            channel: "general".into(),
            tags: vec![],
            content: "hi".into(),
        }
    }

    #[test]
    fn a_signed_payload_passes_its_own_checks() {
        let key = NodeKey::generate();
        let p = Payload::sign(&key, draft());
        let back = Payload::from_json(&p.to_json(), &Limits::default(), 1_763_800_000).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn content_over_the_limit_is_too_large() {
        let key = NodeKey::generate();
        let mut d = draft();
        d.content = "x".repeat(65537);
        let p = Payload::sign(&key, d);
        let err = Payload::from_json(&p.to_json(), &Limits::default(), 1_763_800_000).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
    }

    #[test]
    fn a_delete_without_targets_is_invalid() {
        let key = NodeKey::generate();
        let mut d = draft();
        d.kind = "delete".into();
        let p = Payload::sign(&key, d);
        let err = Payload::from_json(&p.to_json(), &Limits::default(), 1_763_800_000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
    }

    #[test]
    fn duplicate_members_and_lone_surrogates_are_invalid_payload() {
        let key = NodeKey::generate();
        let json = Payload::sign(&key, draft()).to_json();
        let dup = json.replacen(
            "\"kind\":\"post\"",
            "\"kind\":\"post\",\"kind\":\"post\"",
            1,
        );
        let err = Payload::from_json(&dup, &Limits::default(), 1_763_800_000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
        let lone = json.replacen("\"hi\"", "\"\\ud800\"", 1);
        let err = Payload::from_json(&lone, &Limits::default(), 1_763_800_000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPayload);
    }

    #[test]
    fn channel_rules() {
        for ok in ["a", "plural/updates", "a.b-c_d/x", &"a".repeat(128)] {
            assert!(valid_channel(ok), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "A", "a b", &"a".repeat(129), "a*"] {
            assert!(!valid_channel(bad), "{bad}");
        }
    }
}
