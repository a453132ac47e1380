//! WebSocket frames (PROTOCOL.md 4.2): parsing what clients send, building what nodes send.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::{ProtocolError, Result};
use crate::filter::Filter;
use crate::payload::{valid_channel, valid_tag_name};
use crate::receipt::Receipt;

/// Most bytes of a signal's `data`, serialized.
pub const MAX_SIGNAL_DATA_BYTES: usize = 4096;

/// A client frame, borrowed from the frame text so the payload can be checked
/// strictly from its own bytes.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Auth {
        pubkey: String,
        sig: String,
    },
    Publish {
        payload: &'a RawValue,
    },
    Subscribe {
        sub: String,
        filters: Vec<Filter>,
    },
    Unsubscribe {
        sub: String,
    },
    Signal {
        channel: String,
        kind: String,
        data: Map<String, Value>,
    },
    Ping,
}

/// Every member any op uses; which are required depends on `op`.
#[derive(Deserialize)]
struct RawFrame<'a> {
    op: String,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    sub: Option<String>,
    filters: Option<Vec<Value>>,
    pubkey: Option<String>,
    sig: Option<String>,
    channel: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<Value>,
}

/// A refused frame: the error, and the `ref` to answer with (the op or sub).
#[derive(Debug)]
pub struct FrameError {
    pub error: ProtocolError,
    pub reference: Option<String>,
}

impl<'a> ClientFrame<'a> {
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        let raw: RawFrame<'a> = serde_json::from_str(text).map_err(|e| FrameError {
            error: ProtocolError::bad_request(format!("frame is not a valid op object: {e}")),
            reference: None,
        })?;
        let op = raw.op.clone();
        let fail = |m: String, reference: Option<String>| FrameError {
            error: ProtocolError::bad_request(m),
            reference,
        };
        let need = |v: Option<String>, name: &str| {
            v.ok_or_else(|| fail(format!("{op} needs {name:?}"), Some(op.clone())))
        };
        match op.as_str() {
            "auth" => Ok(ClientFrame::Auth {
                pubkey: need(raw.pubkey, "pubkey")?,
                sig: need(raw.sig, "sig")?,
            }),
            "publish" => Ok(ClientFrame::Publish {
                payload: raw
                    .payload
                    .ok_or_else(|| fail("publish needs \"payload\"".into(), Some(op.clone())))?,
            }),
            "subscribe" => {
                let sub = need(raw.sub, "sub")?;
                check_sub_id(&sub).map_err(|m| fail(m, Some(op.clone())))?;
                let filters = raw
                    .filters
                    .ok_or_else(|| fail("subscribe needs \"filters\"".into(), Some(sub.clone())))?
                    .into_iter()
                    .map(Filter::from_value)
                    .collect::<Result<Vec<_>>>()
                    .map_err(|error| FrameError {
                        error,
                        reference: Some(sub.clone()),
                    })?;
                Ok(ClientFrame::Subscribe { sub, filters })
            }
            "unsubscribe" => Ok(ClientFrame::Unsubscribe {
                sub: need(raw.sub, "sub")?,
            }),
            "signal" => {
                let channel = need(raw.channel, "channel")?;
                let kind = need(raw.kind, "type")?;
                if !valid_channel(&channel) {
                    return Err(fail(
                        "signal channel is not a valid channel".into(),
                        Some(op),
                    ));
                }
                if !valid_tag_name(&kind) {
                    return Err(fail(
                        "signal type must be 1-32 characters of [a-z0-9_-]".into(),
                        Some(op),
                    ));
                }
                let data = match raw.data {
                    Some(Value::Object(m)) => m,
                    None => Map::new(),
                    Some(_) => {
                        return Err(fail("signal data must be a JSON object".into(), Some(op)))
                    }
                };
                let size = serde_json::to_string(&data)
                    .map(|s| s.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_SIGNAL_DATA_BYTES {
                    return Err(FrameError {
                        error: ProtocolError::new(
                            crate::ErrorCode::TooLarge,
                            format!("signal data is {size} bytes; at most {MAX_SIGNAL_DATA_BYTES}"),
                        ),
                        reference: Some(op),
                    });
                }
                Ok(ClientFrame::Signal {
                    channel,
                    kind,
                    data,
                })
            }
            "ping" => Ok(ClientFrame::Ping),
            other => Err(fail(
                format!("unknown op {other:?}"),
                Some(other.to_string()),
            )),
        }
    }
}

fn check_sub_id(sub: &str) -> Result<(), String> {
    let n = sub.chars().count();
    if !(1..=64).contains(&n) {
        return Err("sub must be 1-64 characters".into());
    }
    Ok(())
}

/// Frames the node sends. Payload frames splice pre-serialized payload JSON so a
/// payload fanned out to many subscribers is serialized once.
pub mod out {
    use super::*;

    pub fn hello(node: &str, challenge: &str, limits: &Value) -> String {
        json!({"op": "hello", "node": node, "challenge": challenge, "limits": limits}).to_string()
    }

    pub fn auth_ok(pubkey: &str) -> String {
        json!({"op": "auth_ok", "pubkey": pubkey}).to_string()
    }

    /// An accepted publish, with the node's receipt for it (PROTOCOL.md 4.4).
    pub fn ok_accepted(id: &str, duplicate: bool, receipt: Option<&Receipt>) -> String {
        let mut frame = json!({"op": "ok", "id": id, "accepted": true, "duplicate": duplicate});
        if let Some(r) = receipt {
            frame["receipt"] = json!(r);
        }
        frame.to_string()
    }

    pub fn ok_refused(id: Option<&str>, err: &ProtocolError) -> String {
        json!({"op": "ok", "id": id, "accepted": false, "code": err.code.as_str(), "message": err.message})
            .to_string()
    }

    pub fn payload(sub: &str, payload_json: &str) -> String {
        let sub = Value::String(sub.to_owned()).to_string();
        format!(r#"{{"op":"payload","sub":{sub},"payload":{payload_json}}}"#)
    }

    pub fn eose(sub: &str) -> String {
        json!({"op": "eose", "sub": sub}).to_string()
    }

    pub fn closed(sub: &str, reason: &str) -> String {
        json!({"op": "closed", "sub": sub, "reason": reason}).to_string()
    }

    pub fn signal(from: &str, channel: &str, kind: &str, data: &Map<String, Value>) -> String {
        json!({"op": "signal", "from": from, "channel": channel, "type": kind, "data": data})
            .to_string()
    }

    pub fn pong() -> String {
        r#"{"op":"pong"}"#.to_string()
    }

    pub fn error(err: &ProtocolError, reference: Option<&str>) -> String {
        json!({"op": "error", "code": err.code.as_str(), "message": err.message, "ref": reference})
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_the_payload_bytes() {
        let f = ClientFrame::parse(r#"{"op":"publish","payload":{"a":1.0}}"#).unwrap();
        match f {
            ClientFrame::Publish { payload } => assert_eq!(payload.get(), r#"{"a":1.0}"#),
            _ => panic!("not a publish"),
        }
    }

    #[test]
    fn unknown_op_and_missing_members_are_bad_requests() {
        for bad in [
            r#"{"op":"nope"}"#,
            r#"{"op":"auth"}"#,
            r#"{"op":"subscribe","sub":"","filters":[]}"#,
            r#"{"op":"subscribe","sub":"x"}"#,
            r#"not json"#,
            r#"{"op":"signal","channel":"a","type":"Typing"}"#,
        ] {
            let e = ClientFrame::parse(bad).unwrap_err();
            assert_eq!(e.error.code, crate::ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn payload_frame_is_valid_json() {
        let s = out::payload("a\"b", r#"{"x":1}"#);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["sub"], "a\"b");
        assert_eq!(v["payload"]["x"], 1);
    }
}
