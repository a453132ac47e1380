//! Outbound HTTP to peers. Every request resolves its host through a resolver
//! that refuses loopback, private, link-local and other non-public addresses
//! unless the operator allows them, so a peer URL can never be used to reach
//! the relay's own network. Timeouts and size caps on every response.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use meshrelay_protocol::node_doc::SignedNodeDoc;
use meshrelay_protocol::NodeKey;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::OnceCell;

use crate::httpsig;
use crate::peer_client::Answer;

use crate::limits::{MAX_ANSWER_BYTES, MAX_DOC_BYTES};

/// Headers reqwest adds to a POST by itself: `host: `, `accept: */*`,
/// `content-length: ` with up to 7 digits, each with its CRLF.
const IMPLICIT_HEADERS: usize = "host: \r\naccept: */*\r\ncontent-length: 1048576\r\n".len();

/// Bytes of these headers on an HTTP/1.1 wire (`name: value` and CRLF).
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum()
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("the node document is not valid: {0}")]
    BadDocument(String),
    #[error("the peer's answer is not valid: {0}")]
    BadAnswer(String),
}

/// True for addresses a relay may reach on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking, 198.18.0.0/15
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            // Addresses that carry an IPv4 address reach it: judge that one.
            if s[..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
                return embedded(s[6], s[7]); // IPv4-compatible, ::a.b.c.d
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return embedded(s[6], s[7]); // NAT64, 64:ff9b::/96
            }
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]); // 6to4, 2002::/16
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
                || (s[0] == 0x2001 && s[1] == 0) // Teredo: hides an IPv4 address
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// The resolver reqwest uses: hickory, then the public-address filter. The
/// state sits behind an `Arc` so each resolution future owns a handle to it.
struct GuardedResolver {
    inner: Arc<ResolverState>,
}

struct ResolverState {
    allow_private: bool,
    resolver: OnceCell<hickory_resolver::TokioResolver>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let state = self.inner.clone();
        Box::pin(async move {
            let resolver = state
                .resolver
                .get_or_try_init(|| async {
                    hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build())
                })
                .await?;
            let ips = resolver.lookup_ip(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = ips
                .iter()
                .filter(|ip| state.allow_private || is_public(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Outbound requests signed with this node's key.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    key: Arc<NodeKey>,
    allow_private: bool,
}

impl Outbound {
    pub fn new(key: Arc<NodeKey>, allow_private: bool) -> Self {
        Self::with_roots(key, allow_private, &[])
    }

    /// Like `new`, trusting `extra_roots` for `https://` peers beside the
    /// built-in web roots (webpki-roots: Mozilla's CA list, compiled in).
    pub fn with_roots(
        key: Arc<NodeKey>,
        allow_private: bool,
        extra_roots: &[reqwest::Certificate],
    ) -> Self {
        let resolver = Arc::new(GuardedResolver {
            inner: Arc::new(ResolverState {
                allow_private,
                resolver: OnceCell::new(),
            }),
        });
        let mut builder = reqwest::Client::builder();
        for root in extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .dns_resolver(resolver)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY must not carry peer requests past the address filter.
            .no_proxy()
            .user_agent(concat!("meshrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the HTTP client");
        Self {
            http,
            key,
            allow_private,
        }
    }

    /// Refuse URLs that are not http(s), and literal addresses that are not public.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, FetchError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| FetchError::Refused(format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::Refused(format!(
                "{url:?} is not an http(s) URL"
            )));
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            }
            Some(url::Host::Domain(_)) => None,
            None => return Err(FetchError::Refused(format!("{url:?} has no host"))),
        };
        if let Some(ip) = literal {
            if !self.allow_private && !is_public(ip) {
                return Err(FetchError::Refused(format!(
                    "{ip} is not a public address (allow_private_peers is off)"
                )));
            }
        }
        Ok(parsed)
    }

    /// Fetch and check a node's signed document at `base_url` (PROTOCOL.md 5.1).
    pub async fn fetch_node_doc(
        &self,
        base_url: &str,
        now: u64,
    ) -> Result<SignedNodeDoc, FetchError> {
        let base = base_url.trim_end_matches('/');
        let url = self.check_url(&format!("{base}/.well-known/meshrelay"))?;
        let resp = self.http.get(url).send().await?.error_for_status()?;
        let body = read_capped(resp, MAX_DOC_BYTES).await?;
        let doc: SignedNodeDoc =
            serde_json::from_slice(&body).map_err(|e| FetchError::BadDocument(e.to_string()))?;
        doc.verify_signature()
            .map_err(|e| FetchError::BadDocument(e.message))?;
        if doc.doc.url.trim_end_matches('/') != base {
            return Err(FetchError::BadDocument(format!(
                "document names url {:?}, fetched from {base:?}",
                doc.doc.url
            )));
        }
        if doc.doc.issued_at > now + 600 {
            return Err(FetchError::BadDocument("issued_at is in the future".into()));
        }
        Ok(doc)
    }

    /// POST a signed JSON body; returns the status, the (capped) answer and
    /// the HTTP/1.1 bytes both ways (request and status lines, headers,
    /// bodies; what reqwest adds itself is estimated by `IMPLICIT_HEADERS`).
    pub async fn post_signed(
        &self,
        url: &str,
        body: Vec<u8>,
        now: i64,
    ) -> Result<Answer, FetchError> {
        let parsed = self.check_url(url)?;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().expect("static"));
        httpsig::sign(
            &self.key,
            "POST",
            parsed.as_str(),
            &mut headers,
            Some(&body),
            now,
        )
        .map_err(|e| FetchError::Refused(e.0))?;
        let sent = format!("POST {} HTTP/1.1\r\n\r\n", parsed.path()).len()
            + header_bytes(&headers)
            + IMPLICIT_HEADERS
            + parsed.host_str().map_or(0, str::len)
            + body.len();
        let resp = self
            .http
            .post(parsed)
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let answer_head = "HTTP/1.1 200 OK\r\n\r\n".len() + header_bytes(resp.headers());
        // Delay-seconds only (RFC 9110 10.2.3); an HTTP date is not honoured.
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_capped(resp, MAX_ANSWER_BYTES).await?;
        let wire_bytes = sent + answer_head + body.len();
        Ok(Answer {
            status,
            body,
            wire_bytes,
            retry_after,
        })
    }

    /// GET `url` (checked like every peer URL) within the client's
    /// timeouts: its status and at most `cap` bytes of its body.
    pub async fn get_capped(&self, url: &str, cap: usize) -> Result<(u16, Vec<u8>), FetchError> {
        let parsed = self.check_url(url)?;
        let resp = self.http.get(parsed).send().await?;
        let status = resp.status().as_u16();
        Ok((status, read_capped(resp, cap).await?))
    }

    /// GET `url` (checked like every peer URL), for a caller that streams
    /// the answer itself within `timeout` (a mirrored blob, PROTOCOL.md 4.3).
    pub async fn get_stream(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, FetchError> {
        let parsed = self.check_url(url)?;
        Ok(self.http.get(parsed).timeout(timeout).send().await?)
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|n| n as usize > cap) {
        return Err(FetchError::TooLarge(cap));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > cap {
            return Err(FetchError::TooLarge(cap));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "::127.0.0.1",
            "::10.1.2.3",
            "fec0::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            "198.20.0.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn private_urls_are_refused_unless_allowed() {
        let key = Arc::new(NodeKey::generate());
        let strict = Outbound::new(key.clone(), false);
        for url in [
            "http://127.0.0.1:7700",
            "http://localhost:7700",
            "http://[::1]/",
            "http://10.0.0.1/",
            "ftp://example.org/",
        ] {
            assert!(strict.check_url(url).is_err(), "{url}");
        }
        assert!(strict.check_url("https://relay.example.org/").is_ok());
        let lax = Outbound::new(key, true);
        assert!(lax.check_url("http://127.0.0.1:7700").is_ok());
        // A refused address never gets a request.
        let err = strict
            .fetch_node_doc("http://127.0.0.1:1", 0)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Refused(_)), "{err}");
    }
}
