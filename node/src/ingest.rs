//! The walk of one payload from a local client: check it (protocol), commit it
//! (store), then hand it to live subscribers. Every path that accepts a payload
//! goes through `ingest`.

use std::sync::Arc;
use std::time::Instant;

use meshrelay_protocol::{ErrorCode, Payload, ProtocolError, PublicKey};
use meshrelay_store::WriteOutcome;

use crate::hub::Fresh;
use crate::metrics::IngestLabels;
use crate::state::{unix_now, AppState};

/// What `ingest` tells the client on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub duplicate: bool,
}

/// Check, store and fan out one payload given as JSON text. Answers only after
/// the payload is durably committed (or known to be held already).
pub async fn ingest(
    state: &AppState,
    text: &str,
    via: &'static str,
) -> Result<Accepted, ProtocolError> {
    let started = Instant::now();
    let result = ingest_inner(state, text).await;
    let outcome = match &result {
        Ok(a) if a.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(e) => e.code.as_str(),
    };
    state
        .metrics
        .payloads_ingested
        .get_or_create(&IngestLabels { via, outcome })
        .inc();
    if result.is_ok() {
        state
            .metrics
            .ingest_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

/// Decode an author key through the node's cache of decoded keys.
fn decode_key_cached(state: &AppState, hex: &str) -> Result<PublicKey, String> {
    if let Some(key) = state.keys.get(hex) {
        return Ok(key);
    }
    let key = PublicKey::from_hex(hex)?;
    state.keys.insert(hex.to_string(), key);
    Ok(key)
}

async fn ingest_inner(state: &AppState, text: &str) -> Result<Accepted, ProtocolError> {
    let payload = Payload::from_json_with_keys(text, &state.settings.limits, unix_now(), |hex| {
        decode_key_cached(state, hex)
    })?;
    if state.seen.contains_key(&payload.id) {
        return Ok(Accepted {
            id: payload.id,
            duplicate: true,
        });
    }
    let json: Arc<str> = payload.to_json().into();
    let payload = Arc::new(payload);
    let outcome = state
        .writer
        .write(payload.clone(), json.clone(), None, unix_now() as i64)
        .await
        .map_err(|e| {
            tracing::error!(error = ?e, "storing a payload failed");
            ProtocolError::new(
                ErrorCode::Internal,
                "the payload could not be stored; try again",
            )
        })?;
    let id = payload.id.clone();
    match outcome {
        WriteOutcome::Stored { hidden } => {
            state.seen.insert(id.clone(), ());
            if !hidden {
                let fresh = Arc::new(Fresh {
                    payload: Arc::unwrap_or_clone(payload),
                    json,
                });
                state.hub.publish(&fresh);
            }
            Ok(Accepted {
                id,
                duplicate: false,
            })
        }
        WriteOutcome::Duplicate => {
            state.seen.insert(id.clone(), ());
            Ok(Accepted {
                id,
                duplicate: true,
            })
        }
        WriteOutcome::Blocked => Err(ProtocolError::new(
            ErrorCode::Blocked,
            "this node does not accept payloads by this author",
        )),
    }
}
