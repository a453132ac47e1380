//! The requests this node makes of a peer (PROTOCOL.md 5), typed: one place
//! builds their bodies and reads their answers, all over the guarded,
//! signed transport of `client`.

use meshrelay_protocol::node_doc::SignedNodeDoc;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::{FetchError, Outbound};
use crate::limits::{MAX_BODY_BYTES, MAX_ITEMS};
use crate::sync::{SyncRequest, SyncResponse};

/// Room an item takes in an inbox body besides its payload's JSON.
const ITEM_OVERHEAD: usize = r#"{"payload":,"hops":4294967295,"sync":true},"#.len();
/// Most bytes of a peer's `/v1/info` read (ours is about 2 KB).
const MAX_INFO_BYTES: usize = 64 * 1024;
/// `{"items":[` and `]}`.
const BODY_OVERHEAD: usize = r#"{"items":[]}"#.len();

/// An inbox request body built from stored JSON without re-encoding it, held
/// to `MAX_ITEMS` and `MAX_BODY_BYTES`.
#[derive(Debug, Default)]
pub struct InboxBody {
    text: String,
    items: usize,
}

impl InboxBody {
    /// Whether a payload of `json_len` bytes fits in any inbox request at all.
    pub fn fits_alone(json_len: usize) -> bool {
        BODY_OVERHEAD + ITEM_OVERHEAD + json_len <= MAX_BODY_BYTES
    }

    /// Whether one more payload of `json_len` bytes fits in this body.
    pub fn has_room(&self, json_len: usize) -> bool {
        self.items < MAX_ITEMS
            && BODY_OVERHEAD + self.text.len() + ITEM_OVERHEAD + json_len <= MAX_BODY_BYTES
    }

    /// Add an item; the caller checked `has_room`.
    pub fn push(&mut self, json: &str, hops: i64, sync: bool) {
        self.text.push_str(if self.items == 0 {
            r#"{"items":["#
        } else {
            ","
        });
        self.text.push_str(r#"{"payload":"#);
        self.text.push_str(json);
        self.text.push_str(&format!(r#","hops":{hops}"#));
        if sync {
            self.text.push_str(r#","sync":true"#);
        }
        self.text.push('}');
        self.items += 1;
    }

    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.items == 0 {
            self.text.push_str(r#"{"items":["#);
        }
        self.text.push_str("]}");
        self.text.into_bytes()
    }
}

/// A peer's answer to a signed POST: its status and body, for requests
/// whose failures are reported rather than interpreted.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// HTTP bytes of the request and this answer, headers included.
    pub wire_bytes: usize,
    /// The answer's `Retry-After` in seconds (a 429's).
    pub retry_after: Option<u64>,
}

impl Answer {
    /// The body as text for logs and error records, cut to `max` bytes.
    pub fn excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match text.char_indices().nth(max) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.into_owned(),
        }
    }
}

/// `{"accepted", "duplicates", "rejected"}` of an inbox answer.
#[derive(Debug, Deserialize)]
pub struct InboxAnswer {
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub rejected: Vec<serde_json::Value>,
}

/// Typed requests to one peer.
#[derive(Clone)]
pub struct PeerClient {
    outbound: Outbound,
}

impl PeerClient {
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound }
    }

    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// Fetch and check the node document at `base_url` (5.1).
    pub async fn document(&self, base_url: &str) -> Result<SignedNodeDoc, FetchError> {
        let now = meshrelay_protocol::clock::now_wire_secs();
        self.outbound.fetch_node_doc(base_url, now).await
    }

    /// Announce `our_url` to the peer at `base_url` (5.2).
    pub async fn announce(&self, base_url: &str, our_url: &str) -> Result<Answer, FetchError> {
        let body = serde_json::json!({ "url": our_url }).to_string();
        self.post(
            &format!("{base_url}/v1/federation/announce"),
            body.into_bytes(),
        )
        .await
    }

    /// Deliver an inbox body to `inbox` (5.4).
    pub async fn inbox(&self, inbox: &str, body: InboxBody) -> Result<Answer, FetchError> {
        self.post(inbox, body.into_bytes()).await
    }

    /// Offer ids to the peer at `base_url` (5.6): `items` are (id, hops).
    pub async fn ihave(&self, base_url: &str, items: &[(&str, i64)]) -> Result<Answer, FetchError> {
        let items: Vec<_> = items
            .iter()
            .map(|(id, hops)| serde_json::json!({ "id": id, "hops": hops }))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "items": items })).expect("serializes");
        self.post(&format!("{base_url}/v1/federation/ihave"), body)
            .await
    }

    /// Whether the node at `base_url` answers offers: its `/v1/info` says
    /// `"lazy_forwarding": true` (5.6).
    pub async fn answers_offers(&self, base_url: &str) -> Result<bool, FetchError> {
        let (status, body) = self
            .outbound
            .get_capped(&format!("{base_url}/v1/info"), MAX_INFO_BYTES)
            .await?;
        if status != 200 {
            return Err(FetchError::Refused(format!("/v1/info answered {status}")));
        }
        let info: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| FetchError::BadAnswer(format!("/v1/info: {e}")))?;
        Ok(info.get("lazy_forwarding") == Some(&serde_json::Value::Bool(true)))
    }

    /// One sync round (5.5): the answer's message, or the refusal's answer
    /// (413 asks the initiator to split the window).
    pub async fn sync_round(
        &self,
        base_url: &str,
        req: &SyncRequest,
    ) -> Result<Result<(SyncResponse, usize), Answer>, FetchError> {
        let body = serde_json::to_vec(req).expect("a sync request serializes");
        let sent = body.len();
        let answer = self
            .post(&format!("{base_url}/v1/federation/sync"), body)
            .await?;
        if answer.status != 200 {
            return Ok(Err(answer));
        }
        let parsed: SyncResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| FetchError::BadAnswer(format!("sync answer: {e}")))?;
        Ok(Ok((parsed, sent + answer.body.len())))
    }

    /// Fetch payloads by id (5.5); the raw answer, read by `FetchAnswer`.
    pub async fn fetch(&self, base_url: &str, ids: &[String]) -> Result<Answer, FetchError> {
        let body = serde_json::to_vec(&serde_json::json!({ "ids": ids })).expect("serializes");
        self.post(&format!("{base_url}/v1/federation/fetch"), body)
            .await
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<Answer, FetchError> {
        let now = meshrelay_protocol::clock::now_secs();
        self.outbound.post_signed(url, body, now).await
    }
}

/// `{"payloads": [...]}` of a fetch answer, each payload left as raw JSON.
#[derive(Debug, Deserialize)]
pub struct FetchAnswer<'a> {
    #[serde(borrow)]
    pub payloads: Vec<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_body_is_valid_json_and_keeps_to_its_limits() {
        let json = r#"{"id":"x"}"#;
        let mut body = InboxBody::default();
        while body.has_room(json.len()) {
            body.push(json, 2, body.len() % 2 == 0);
        }
        assert_eq!(body.len(), MAX_ITEMS);
        let bytes = body.into_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), MAX_ITEMS);
        assert_eq!(items[0]["sync"], true);
        assert_eq!(items[1].get("sync"), None);
        assert_eq!(items[1]["hops"], 2);

        let big = "x".repeat(MAX_BODY_BYTES / 3);
        let mut body = InboxBody::default();
        let mut n = 0;
        while body.has_room(big.len()) {
            body.push(&format!("\"{big}\""), 1, false);
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(body.into_bytes().len() <= MAX_BODY_BYTES);
        assert!(!InboxBody::fits_alone(MAX_BODY_BYTES));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&InboxBody::default().into_bytes())
                .unwrap()["items"],
            serde_json::json!([])
        );
    }

    #[test]
    fn an_excerpt_is_cut_on_a_character_boundary() {
        let a = Answer {
            status: 500,
            body: "é".repeat(2000).into_bytes(),
            wire_bytes: 0,
            retry_after: None,
        };
        let e = a.excerpt(1024);
        assert_eq!(e.chars().count(), 1025);
        assert!(e.ends_with('…'));
    }
}
