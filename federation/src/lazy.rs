//! Lazy forwarding, the receiving side (PROTOCOL.md 5.6): a peer offers ids
//! with `POST /v1/federation/ihave` and this node answers the ones it wants;
//! the sender then delivers those through the inbox. This node answers
//! offers but does not make them: it pushes whole payloads to every peer
//! that asked (5.4).

use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::inbound::Refused;
use crate::Federation;

/// Ids one offer may carry (PROTOCOL.md 5.6).
pub const MAX_IHAVE_ITEMS: usize = 1000;

#[derive(Deserialize)]
struct IhaveRequest {
    items: Vec<Offered>,
}

#[derive(Deserialize)]
struct Offered {
    id: String,
    /// The hops the payload would arrive with; it does not change what is wanted.
    #[allow(dead_code)]
    hops: u32,
}

/// The answer to an offer: the offered ids this node neither holds nor
/// keeps a tombstone of, in offer order, each once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IhaveResponse {
    pub want: Vec<String>,
}

impl Federation {
    /// Answer an offer from an authenticated peer. An offer names ids only,
    /// so a payload of a blocked author or outside this node's preference
    /// cannot be told apart here: it is asked for, and refused at the inbox.
    pub async fn answer_ihave(&self, body: &[u8]) -> Result<IhaveResponse, Refused> {
        let req: IhaveRequest = serde_json::from_slice(body)
            .map_err(|e| Refused::bad_request(format!("ihave body: {e}")))?;
        if req.items.len() > MAX_IHAVE_ITEMS {
            return Err(Refused::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_IHAVE_ITEMS} items per offer"),
            ));
        }
        if let Some(bad) = req.items.iter().find(|o| !is_hex32(&o.id)) {
            return Err(Refused::bad_request(format!(
                "{:?} is not a payload id (64 lowercase hex digits)",
                bad.id
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<String> = req
            .items
            .into_iter()
            .map(|o| o.id)
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let known = self.store.known_ids(&ids).await?;
        Ok(IhaveResponse {
            want: ids.into_iter().filter(|id| !known.contains(id)).collect(),
        })
    }
}
