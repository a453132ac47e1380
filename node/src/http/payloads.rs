//! `POST /v1/payloads`, `GET /v1/payloads/{id}` and `GET /v1/payloads` (queries).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::{ErrorCode, Filter};
use meshrelay_store::Cursor;
use serde_json::value::RawValue;

use super::schema::{ErrorBody, PayloadDoc, PublishResponse, QueryResponse};
use crate::error::{body_or_413, ApiError, ApiResult};
use crate::ingest::{ingest, receipt};
use crate::state::AppState;

/// Publish one payload.
#[utoipa::path(
    post,
    path = "/v1/payloads",
    request_body(content = PayloadDoc, description = "A signed payload"),
    responses(
        (status = 201, description = "Stored", body = PublishResponse),
        (status = 200, description = "Already stored", body = PublishResponse),
        (status = 403, description = "Author blocked", body = ErrorBody),
        (status = 413, description = "Content over max_content_bytes", body = ErrorBody),
        (status = 422, description = "invalid_payload, invalid_id or invalid_signature", body = ErrorBody),
        (status = 429, description = "rate_limited, with Retry-After", body = ErrorBody),
    )
)]
pub async fn publish(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<PublishResponse>)> {
    if let Err(secs) = state.limits.check_http(client.ip()) {
        let mut err = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many publishes from this address; retry in {secs} s"),
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    let body = body_or_413(body)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorCode::InvalidPayload, "body is not UTF-8"))?;
    // A task of its own: a client hanging up mid-request must not stop the
    // fan-out of a payload that was already committed.
    let accepted = tokio::spawn(async move {
        let accepted = ingest(&state, &text, "http").await?;
        let receipt = receipt(&state, &accepted);
        Ok::<_, meshrelay_protocol::ProtocolError>((accepted, receipt))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let (accepted, receipt) = accepted?;
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(PublishResponse {
            id: accepted.id,
            accepted: true,
            duplicate: accepted.duplicate,
            receipt,
        }),
    ))
}

/// One payload by id.
#[utoipa::path(
    get,
    path = "/v1/payloads/{id}",
    params(("id" = String, Path, description = "Payload id, 64 lowercase hex")),
    responses(
        (status = 200, description = "The payload object", body = PayloadDoc),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "Not held, or hidden", body = ErrorBody),
    )
)]
pub async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    if !is_hex32(&id) {
        return Err(ApiError::bad_request(
            "id must be 64 lowercase hex characters",
        ));
    }
    match state.store.get_payload(&id).await? {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::not_found("no such payload")),
    }
}

/// Query stored payloads with one filter.
#[utoipa::path(
    get,
    path = "/v1/payloads",
    params(
        ("ids" = Option<String>, Query, description = "Comma-separated payload ids"),
        ("authors" = Option<String>, Query, description = "Comma-separated author keys"),
        ("kinds" = Option<String>, Query, description = "Comma-separated kinds"),
        ("channels" = Option<String>, Query, description = "Comma-separated channels; `x/*` matches below x"),
        ("since" = Option<u64>, Query, description = "Inclusive lower bound on created_at"),
        ("until" = Option<u64>, Query, description = "Inclusive upper bound on created_at"),
        ("limit" = Option<u32>, Query, description = "Default 100, clamped to max_limit"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("tag_X" = Option<String>, Query, description = "Comma-separated values of tag X, e.g. tag_t=rust"),
    ),
    responses(
        (status = 200, description = "Newest first, ties by id", body = QueryResponse),
        (status = 400, description = "Unknown parameter or malformed value", body = ErrorBody),
    )
)]
pub async fn query(
    State(state): State<AppState>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limits = &state.settings.limits;
    let q = parse_query(&params, limits.max_limit)?;
    q.filter.check_values(limits.max_filter_values)?;
    if q.limit == 0 {
        return Ok(Json(QueryResponse {
            payloads: vec![],
            next_cursor: None,
        })
        .into_response());
    }
    // A page holds at most max_response_bytes of payloads: past it, it stops
    // early and gives its cursor.
    let budget = limits.max_response_bytes.saturating_sub(1024);
    state
        .build_page(async {
            let page = state
                .store
                .query_page(&q.filter, q.cursor.as_ref(), q.limit, budget)
                .await?;
            let next_cursor = match page.more {
                true => page.rows.last().map(|r| Cursor::after(r).encode()),
                false => None,
            };
            let answer = QueryResponse {
                payloads: raw_payloads(page.rows.into_iter().map(|r| r.json))?,
                next_cursor,
            };
            serde_json::to_vec(&answer).map_err(|e| ApiError::internal(&e))
        })
        .await
}

/// Stored JSON texts as raw values, so they are passed through, not re-encoded.
pub fn raw_payloads(jsons: impl Iterator<Item = String>) -> ApiResult<Vec<Box<RawValue>>> {
    jsons
        .map(|j| RawValue::from_string(j).map_err(|e| ApiError::internal(&e)))
        .collect()
}

/// A parsed `GET /v1/payloads` query string.
#[derive(Debug)]
pub struct ParsedQuery {
    pub filter: Filter,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

fn split_list(v: &str) -> Vec<String> {
    if v.is_empty() {
        return Vec::new();
    }
    v.split(',').map(String::from).collect()
}

/// Turn query parameters into one filter. Lists are comma-separated; a list
/// parameter given twice adds to the list; anything unknown is refused.
pub fn parse_query(params: &[(String, String)], max_limit: u32) -> ApiResult<ParsedQuery> {
    let mut filter = Filter::default();
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cursor = None;
    let mut limit: Option<u32> = None;
    let mut seen_scalar = std::collections::HashSet::new();
    let number = |k: &str, v: &str| -> ApiResult<u64> {
        v.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{k} must be a non-negative integer")))
    };
    for (k, v) in params {
        let list = match k.as_str() {
            "ids" => Some(&mut filter.ids),
            "authors" => Some(&mut filter.authors),
            "kinds" => Some(&mut filter.kinds),
            "channels" => Some(&mut filter.channels),
            _ => None,
        };
        if let Some(list) = list {
            list.get_or_insert_with(Vec::new).extend(split_list(v));
            continue;
        }
        if let Some(name) = k.strip_prefix("tag_") {
            tags.entry(name.to_string())
                .or_default()
                .extend(split_list(v));
            continue;
        }
        if !seen_scalar.insert(k.as_str()) {
            return Err(ApiError::bad_request(format!("parameter {k} given twice")));
        }
        match k.as_str() {
            "since" => filter.since = Some(number(k, v)?),
            "until" => filter.until = Some(number(k, v)?),
            "limit" => limit = Some(number(k, v)?.min(u64::from(max_limit)) as u32),
            "cursor" => {
                cursor = Some(
                    Cursor::decode(v).ok_or_else(|| ApiError::bad_request("malformed cursor"))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}"
                )))
            }
        }
    }
    if !tags.is_empty() {
        filter.tags = Some(tags);
    }
    filter.validate()?;
    Ok(ParsedQuery {
        filter,
        cursor,
        limit: limit.unwrap_or(100).min(max_limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn lists_tags_and_limits_parse() {
        let q = parse_query(
            &params(&[
                ("kinds", "post,reaction"),
                ("tag_t", "rust"),
                ("limit", "9999"),
                ("channels", "a/*"),
            ]),
            500,
        )
        .unwrap();
        assert_eq!(q.filter.kinds.unwrap(), vec!["post", "reaction"]);
        assert_eq!(q.filter.tags.unwrap()["t"], vec!["rust"]);
        assert_eq!(q.limit, 500);
    }

    #[test]
    fn unknown_or_malformed_parameters_are_refused() {
        for bad in [
            vec![("nope", "1")],
            vec![("since", "x")],
            vec![("limit", "1"), ("limit", "2")],
            vec![("authors", "ABC")],
            vec![("cursor", "junk")],
            vec![("tag_T", "x")],
        ] {
            assert!(parse_query(&params(&bad), 500).is_err(), "{bad:?}");
        }
    }
}
