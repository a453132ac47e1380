//! HTTP Message Signatures (RFC 9421) with Ed25519 and Content-Digest (RFC 9530),
//! as PROTOCOL.md 6 profiles them. One implementation signs every outbound
//! federation request and verifies every inbound one.
//!
//! The signature base is built generically (any derived component or header
//! field), so the RFC's own B.2.6 example reproduces byte for byte; the profile
//! rules (label `sig1`, required parameters, covered set, validity window,
//! replay) are checked on top in `Verifier::verify`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderMap;
use meshrelay_protocol::{NodeKey, PublicKey};
use sfv::{BareItem, FieldType, InnerList, Item, ListEntry, Parser};
use sha2::{Digest, Sha256};

/// The label of the one signature a request carries.
pub const LABEL: &str = "sig1";
/// Longest validity a signature may claim, and the oldest `created` accepted.
pub const MAX_AGE_SECS: i64 = 300;
/// How far in the future `created` may lie (clock skew).
pub const MAX_FUTURE_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// What a signature is computed over.
pub struct Message<'a> {
    pub method: &'a str,
    /// The full target URI as the verifier sees it (its own `public_url` + path + query).
    pub target_uri: &'a str,
    pub headers: &'a HeaderMap,
}

/// The value of one covered component (RFC 9421 2.1 and 2.2).
fn component_value(msg: &Message<'_>, name: &str) -> Result<String, Refusal> {
    let uri: http::Uri = msg
        .target_uri
        .parse()
        .map_err(|_| Refusal(format!("target URI {:?} does not parse", msg.target_uri)))?;
    Ok(match name {
        "@method" => msg.method.to_string(),
        "@target-uri" => msg.target_uri.to_string(),
        "@authority" => uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .ok_or_else(|| Refusal("no authority in target URI".into()))?,
        "@scheme" => uri.scheme_str().unwrap_or_default().to_ascii_lowercase(),
        "@path" => match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        },
        "@query" => format!("?{}", uri.query().unwrap_or_default()),
        "@request-target" => uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        derived if derived.starts_with('@') => {
            return refuse(format!("unsupported derived component {derived}"))
        }
        field => {
            let values: Vec<&str> = msg
                .headers
                .get_all(field)
                .iter()
                .map(|v| v.to_str().map(str::trim))
                .collect::<Result<_, _>>()
                .map_err(|_| Refusal(format!("header {field} is not visible ASCII")))?;
            if values.is_empty() {
                return refuse(format!("covered header {field} is missing"));
            }
            values.join(", ")
        }
    })
}

/// The serialized `@signature-params` value: the covered components as an
/// inner list with the parameters in their order.
fn signature_params(components: &[String], params: &sfv::Parameters) -> Result<String, Refusal> {
    let items = components
        .iter()
        .map(|c| {
            sfv::String::from_string(c.clone())
                .map(|s| Item::new(BareItem::String(s)))
                .map_err(|_| Refusal(format!("component name {c:?} is not a valid string")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let list: sfv::List = vec![ListEntry::InnerList(InnerList::with_params(
        items,
        params.clone(),
    ))];
    list.serialize()
        .ok_or_else(|| Refusal("empty signature parameters".into()))
}

/// The signature base of RFC 9421 2.5.
pub fn signature_base(
    msg: &Message<'_>,
    components: &[String],
    params: &sfv::Parameters,
) -> Result<String, Refusal> {
    let mut base = String::new();
    for c in components {
        if c == "@signature-params" {
            return refuse("@signature-params cannot be a covered component");
        }
        base.push_str(&format!("\"{c}\": {}\n", component_value(msg, c)?));
    }
    base.push_str(&format!(
        "\"@signature-params\": {}",
        signature_params(components, params)?
    ));
    Ok(base)
}

/// `sha-256=:<base64>:` for a body.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(Sha256::digest(body)))
}

fn key(s: &str) -> sfv::Key {
    sfv::Key::from_string(s.to_string()).expect("a constant key")
}

fn string(s: &str) -> BareItem {
    BareItem::String(sfv::String::from_string(s.to_string()).expect("hex and ASCII"))
}

/// Sign a request as PROTOCOL.md 6 profiles it. Adds `Content-Digest` (with a
/// body), `Signature-Input` and `Signature` to `headers`; with a body, the
/// caller has already set `Content-Type`.
pub fn sign(
    key_pair: &NodeKey,
    method: &str,
    target_uri: &str,
    headers: &mut HeaderMap,
    body: Option<&[u8]>,
    now: i64,
) -> Result<(), Refusal> {
    let mut components = vec!["@method".to_string(), "@target-uri".to_string()];
    if let Some(body) = body {
        let digest = content_digest(body);
        headers.insert(
            "content-digest",
            digest.parse().expect("base64 is a valid header"),
        );
        if !headers.contains_key("content-type") {
            return refuse("a signed request with a body needs a Content-Type");
        }
        components.push("content-digest".into());
        components.push("content-type".into());
    }
    let mut params = sfv::Parameters::new();
    params.insert(
        key("created"),
        BareItem::Integer(sfv::Integer::constant(now)),
    );
    params.insert(key("keyid"), string(&key_pair.public_hex()));
    params.insert(key("alg"), string("ed25519"));
    params.insert(
        key("expires"),
        BareItem::Integer(sfv::Integer::constant(now + MAX_AGE_SECS)),
    );
    params.insert(
        key("nonce"),
        string(&hex::encode(rand::random::<[u8; 16]>())),
    );
    let msg = Message {
        method,
        target_uri,
        headers,
    };
    let base = signature_base(&msg, &components, &params)?;
    let sig = key_pair.sign(base.as_bytes());
    let input = format!("{LABEL}={}", signature_params(&components, &params)?);
    headers.insert(
        "signature-input",
        input.parse().map_err(|_| Refusal("bad header".into()))?,
    );
    headers.insert(
        "signature",
        format!("{LABEL}=:{}:", B64.encode(sig))
            .parse()
            .expect("base64"),
    );
    Ok(())
}

/// The one signature of a request, parsed.
struct Parsed {
    components: Vec<String>,
    params: sfv::Parameters,
    signature: Vec<u8>,
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Refusal> {
    let mut all = headers.get_all(name).iter();
    let first = all
        .next()
        .ok_or_else(|| Refusal(format!("no {name} header")))?;
    if all.next().is_some() {
        return refuse(format!("more than one {name} header"));
    }
    first
        .to_str()
        .map_err(|_| Refusal(format!("{name} is not visible ASCII")))
}

fn parse_signature(headers: &HeaderMap) -> Result<Parsed, Refusal> {
    let input: sfv::Dictionary = Parser::new(header_str(headers, "signature-input")?)
        .parse()
        .map_err(|e| Refusal(format!("Signature-Input does not parse: {e}")))?;
    let sigs: sfv::Dictionary = Parser::new(header_str(headers, "signature")?)
        .parse()
        .map_err(|e| Refusal(format!("Signature does not parse: {e}")))?;
    if input.len() != 1 || sigs.len() != 1 {
        return refuse("exactly one signature is allowed");
    }
    let (Some(ListEntry::InnerList(list)), Some(ListEntry::Item(sig))) =
        (input.get(LABEL), sigs.get(LABEL))
    else {
        return refuse(format!("the signature must be labelled {LABEL}"));
    };
    let components = list
        .items
        .iter()
        .map(|i| match &i.bare_item {
            BareItem::String(s) if i.params.is_empty() => Ok(s.as_str().to_string()),
            _ => refuse("covered components must be plain strings"),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let signature = match &sig.bare_item {
        BareItem::ByteSequence(b) => b.clone(),
        _ => return refuse("Signature must be a byte sequence"),
    };
    Ok(Parsed {
        components,
        params: list.params.clone(),
        signature,
    })
}

/// Verify an Ed25519 signature over a request by the key the caller names,
/// checking nothing of the profile (for RFC examples that lack it).
pub fn verify_raw(msg: &Message<'_>, key: &PublicKey) -> Result<(), Refusal> {
    let parsed = parse_signature(msg.headers)?;
    check_signature(msg, &parsed, key)
}

fn check_signature(msg: &Message<'_>, parsed: &Parsed, key: &PublicKey) -> Result<(), Refusal> {
    let base = signature_base(msg, &parsed.components, &parsed.params)?;
    let sig: [u8; 64] = parsed
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| Refusal("an Ed25519 signature is 64 bytes".into()))?;
    if !key.verify(base.as_bytes(), &sig) {
        return refuse("signature does not verify");
    }
    Ok(())
}

/// Verifies inbound requests against PROTOCOL.md 6, remembering nonces so a
/// replay within the validity window is refused.
pub struct Verifier {
    nonces: moka::sync::Cache<String, ()>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            nonces: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                // A nonce must be remembered as long as a signature using it could be valid.
                .time_to_live(Duration::from_secs(
                    (MAX_AGE_SECS + MAX_FUTURE_SECS) as u64 + 5,
                ))
                .build(),
        }
    }
}

/// A request whose signature checked out, before its nonce is remembered.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key: PublicKey,
    nonce_key: String,
}

impl Verified {
    /// `keyid:nonce`: what makes a signed request unique while it is valid.
    pub fn nonce_key(&self) -> &str {
        &self.nonce_key
    }
}

/// How long a nonce must be remembered: as long as a signature using it
/// could still be valid, in seconds.
pub const NONCE_TTL_SECS: i64 = MAX_AGE_SECS + MAX_FUTURE_SECS + 5;

impl Verifier {
    /// Check a request's signature and remember its nonce (a replay within
    /// the validity window is refused); returns the signer's key (`keyid`).
    /// `now` is the verifier's clock in Unix seconds.
    pub fn verify(
        &self,
        msg: &Message<'_>,
        body: Option<&[u8]>,
        now: i64,
    ) -> Result<PublicKey, Refusal> {
        let verified = self.check(msg, body, now)?;
        self.remember(&verified)?;
        Ok(verified.key)
    }

    /// Remember a verified request's nonce: refused when it was seen before.
    /// Called once the signer is admitted, so keys nobody knows cannot fill
    /// the nonce cache (an unknown signer's nonces are remembered only for
    /// announces, which are rate limited per address).
    pub fn remember(&self, verified: &Verified) -> Result<(), Refusal> {
        let entry = self.nonces.entry(verified.nonce_key.clone()).or_insert(());
        if !entry.is_fresh() {
            return refuse("nonce was seen before (replay)");
        }
        Ok(())
    }

    /// Check a request's signature, without remembering its nonce.
    pub fn check(
        &self,
        msg: &Message<'_>,
        body: Option<&[u8]>,
        now: i64,
    ) -> Result<Verified, Refusal> {
        if let Some(body) = body {
            let digest = header_str(msg.headers, "content-digest")?;
            if !digest_matches(digest, body)? {
                return refuse("Content-Digest does not match the body");
            }
        }
        self.check_with_body(msg, body.is_some(), now)
    }

    /// Check a request whose body is still to be read (a blob streams in):
    /// everything but the digest's match with the body, which the caller
    /// checks once it has read it against the returned `sha-256` digest.
    /// The request must have a body: `content-digest` and `content-type`
    /// are required in the covered components.
    pub fn check_streamed(
        &self,
        msg: &Message<'_>,
        now: i64,
    ) -> Result<(Verified, [u8; 32]), Refusal> {
        let digest = claimed_sha256(header_str(msg.headers, "content-digest")?)?;
        Ok((self.check_with_body(msg, true, now)?, digest))
    }

    fn check_with_body(
        &self,
        msg: &Message<'_>,
        has_body: bool,
        now: i64,
    ) -> Result<Verified, Refusal> {
        let parsed = parse_signature(msg.headers)?;
        let int = |name: &str| match parsed.params.get(name) {
            Some(BareItem::Integer(i)) => Ok(i64::from(*i)),
            Some(_) => refuse(format!("parameter {name} must be an integer")),
            None => refuse(format!("parameter {name} is required")),
        };
        let text = |name: &str| match parsed.params.get(name) {
            Some(BareItem::String(s)) => Ok(s.as_str().to_string()),
            Some(_) => refuse(format!("parameter {name} must be a string")),
            None => refuse(format!("parameter {name} is required")),
        };
        let (created, expires) = (int("created")?, int("expires")?);
        let (keyid, alg, nonce) = (text("keyid")?, text("alg")?, text("nonce")?);
        if alg != "ed25519" {
            return refuse(format!("alg {alg:?} is not ed25519"));
        }
        if expires < created || expires - created > MAX_AGE_SECS {
            return refuse("expires must be at most 300 s after created");
        }
        if now - created > MAX_AGE_SECS {
            return refuse("signature is too old");
        }
        if created - now > MAX_FUTURE_SECS {
            return refuse("signature is created in the future");
        }
        if now > expires {
            return refuse("signature has expired");
        }
        if nonce.is_empty() || nonce.len() > 128 {
            return refuse("nonce must be 1-128 characters");
        }
        let mut required = vec!["@method", "@target-uri"];
        if has_body {
            required.extend(["content-digest", "content-type"]);
        }
        for r in required {
            if !parsed.components.iter().any(|c| c == r) {
                return refuse(format!("{r} must be covered by the signature"));
            }
        }
        let key = PublicKey::from_hex(&keyid).map_err(|e| Refusal(format!("keyid: {e}")))?;
        check_signature(msg, &parsed, &key)?;
        // Only signatures that verified get their nonce remembered, so nobody
        // can burn another sender's nonces with forged requests.
        Ok(Verified {
            key,
            nonce_key: format!("{keyid}:{nonce}"),
        })
    }
}

/// The `sha-256` member of a `Content-Digest`.
fn claimed_sha256(header: &str) -> Result<[u8; 32], Refusal> {
    let dict: sfv::Dictionary = Parser::new(header)
        .parse()
        .map_err(|e| Refusal(format!("Content-Digest does not parse: {e}")))?;
    match dict.get("sha-256") {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(d),
            ..
        })) => d
            .as_slice()
            .try_into()
            .map_err(|_| Refusal("a sha-256 Content-Digest is 32 bytes".into())),
        _ => refuse("Content-Digest needs a sha-256 member"),
    }
}

/// True when a `Content-Digest` has a `sha-256` member equal to the body's.
fn digest_matches(header: &str, body: &[u8]) -> Result<bool, Refusal> {
    let dict: sfv::Dictionary = Parser::new(header)
        .parse()
        .map_err(|e| Refusal(format!("Content-Digest does not parse: {e}")))?;
    match dict.get("sha-256") {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(d),
            ..
        })) => Ok(d.as_slice() == Sha256::digest(body).as_slice()),
        _ => refuse("Content-Digest needs a sha-256 member"),
    }
}
