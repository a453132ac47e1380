//! The walk of one payload: check it (protocol), commit it together with its
//! forwards (store), then hand it to live subscribers and wake the peers'
//! delivery loops. Local clients come here directly; peers' payloads come
//! through federation, which reaches this walk by the `Ingest` seam that
//! `PeerIngest` implements.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use meshrelay_federation::{Accepted, Checked, Ingest, Source};
use meshrelay_protocol::receipt::Receipt;
use meshrelay_protocol::{ErrorCode, Payload, ProtocolError, PublicKey};
use meshrelay_store::WriteOutcome;

use crate::hub::Fresh;
use crate::metrics::IngestLabels;
use crate::state::{AppState, Held};

/// The node as federation's way to store peers' payloads, counted as `peer`.
pub struct PeerIngest(pub AppState);

impl Ingest for PeerIngest {
    fn check(&self, json: &str) -> Result<Checked, ProtocolError> {
        let result = check(&self.0, json);
        if let Err(e) = &result {
            count(&self.0, "peer", &Err(e.clone()), Instant::now());
        }
        result
    }

    fn store<'a>(
        &'a self,
        checked: Checked,
        source: Source<'a>,
    ) -> BoxFuture<'a, Result<Accepted, ProtocolError>> {
        async move {
            let started = Instant::now();
            let result = store_checked(&self.0, checked, source).await;
            count(&self.0, "peer", &result, started);
            result
        }
        .boxed()
    }
}

/// Check, store and fan out one payload given as JSON text (a local client's).
/// Answers only after the payload is durably committed (or known to be held).
pub async fn ingest(
    state: &AppState,
    text: &str,
    via: &'static str,
) -> Result<Accepted, ProtocolError> {
    let started = Instant::now();
    let result = match check(state, text) {
        Ok(p) => store_checked(state, p, Source::Local(via)).await,
        Err(e) => Err(e),
    };
    count(state, via, &result, started);
    result
}

/// Fields, id and signature, with author keys decoded through the node's
/// cache; the signature is not checked again for an id this node holds.
pub fn check(state: &AppState, text: &str) -> Result<Checked, ProtocolError> {
    // Before any parsing: 64 tags of 8 strings of 1 KiB, escaped, make a
    // payload of megabytes within the field rules (PROTOCOL.md 10).
    let max = state.settings.limits.max_payload_bytes;
    if text.len() > max {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "a payload's JSON is at most {max} bytes (max_payload_bytes); this one is {}",
                text.len()
            ),
        ));
    }
    let now = meshrelay_protocol::clock::now_wire_secs();
    let (payload, author) =
        Payload::from_json_unsigned(text, &state.settings.limits.payload, now, |hex| {
            decode_key_cached(state, hex)
        })?;
    // A copy of a payload this node stored lately, with the very signature
    // it verified then, is answered as a duplicate without verifying it
    // again: much of what a mesh sends a node is such copies (protocol-notes,
    // "Duplicates"). Any other signature is checked like a new payload's.
    if let Some(held) = state.seen.get(&payload.id) {
        if held.same_signature(&payload) {
            return Ok(Checked {
                payload,
                held: Some(held.received_at),
            });
        }
    }
    payload.check_signature_by(&author)?;
    Ok(Checked {
        payload,
        held: None,
    })
}

pub fn count(
    state: &AppState,
    via: &'static str,
    result: &Result<Accepted, ProtocolError>,
    started: Instant,
) {
    let outcome = match result {
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

/// Store a checked payload with its forwards in one transaction, then deliver
/// it to local subscribers and wake the delivery loops of the peers it is for.
pub async fn store_checked(
    state: &AppState,
    checked: Checked,
    source: Source<'_>,
) -> Result<Accepted, ProtocolError> {
    let Checked { payload, held } = checked;
    if let Some(received_at) = held.or_else(|| state.seen.get(&payload.id).map(|h| h.received_at)) {
        return Ok(Accepted {
            id: payload.id,
            duplicate: true,
            received_at,
        });
    }
    let (from, forward) = match source {
        Source::Local(_) => (None, state.federation.forward_targets(&payload, None)),
        Source::Peer {
            node, sync: true, ..
        } => (Some(node.to_string()), Vec::new()),
        Source::Peer { node, hops, .. } => (
            Some(node.to_string()),
            state
                .federation
                .forward_targets(&payload, Some((node, hops))),
        ),
    };
    let json: Arc<str> = payload.to_json().into();
    // Verified by `check`: `seen` keeps it once stored or found held.
    let sig = Held::of(&payload, None).sig;
    let payload = Arc::new(payload);
    let now = meshrelay_protocol::clock::now_secs();
    let outcome = state
        .writer
        .write_and_forward(payload.clone(), json.clone(), from, now, forward.clone())
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
            let received_at = Some(now as u64);
            state.seen.insert(id.clone(), Held { received_at, sig });
            if !hidden {
                state.federation.wake(&forward);
                let fresh = Arc::new(Fresh {
                    payload: Arc::unwrap_or_clone(payload),
                    json,
                });
                crate::cluster::deliver(state, &fresh);
            }
            Ok(Accepted {
                id,
                duplicate: false,
                received_at,
            })
        }
        WriteOutcome::Duplicate { received_at } => {
            let received_at = received_at.map(|t| t as u64);
            state.seen.insert(id.clone(), Held { received_at, sig });
            Ok(Accepted {
                id,
                duplicate: true,
                received_at,
            })
        }
        WriteOutcome::Blocked => Err(ProtocolError::new(
            ErrorCode::Blocked,
            "this node does not accept payloads by this author",
        )),
        // Not remembered as seen: it is accepted when it comes again after
        // its authority arrived (PROTOCOL.md 9.4).
        WriteOutcome::Forbidden(why) => Err(ProtocolError::new(ErrorCode::Forbidden, why)),
    }
}

/// The node's signed receipt for a payload it accepted from a local client
/// (PROTOCOL.md 4.4); none when the first storage time is not known.
pub fn receipt(state: &AppState, accepted: &Accepted) -> Option<Receipt> {
    let at = accepted.received_at?;
    // The id was checked before it was stored, so it is 64 lowercase hex.
    Receipt::sign(&state.node_key, &accepted.id, at).ok()
}
