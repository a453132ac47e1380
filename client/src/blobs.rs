//! Blobs (PROTOCOL.md 4.3) through a `RelayClient`: a signed upload, and a
//! download checked against its name.

use std::sync::Arc;

use futures_util::StreamExt;
use meshrelay_protocol::NodeKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::relay::RelayClient;
use crate::{Error, Result};

/// What a relay answered to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredBlob {
    pub sha256: String,
    pub size: u64,
    /// The type the relay serves it with (detected from the bytes).
    #[serde(rename = "type")]
    pub content_type: String,
    /// False when the relay held it already (200).
    #[serde(skip)]
    pub created: bool,
}

/// Told the bytes sent or received so far, for a progress display.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Bytes per chunk of a streamed upload.
const CHUNK: usize = 64 * 1024;

/// The name of a blob: the lowercase hex SHA-256 of its bytes.
pub fn blob_name(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl RelayClient {
    /// Upload `bytes` as a blob, the request signed by `uploader` (any client
    /// key; the relay counts it toward that key's quota).
    pub async fn put_blob(&self, uploader: &NodeKey, bytes: Vec<u8>) -> Result<StoredBlob> {
        self.put_blob_with(uploader, bytes, None).await
    }

    /// `put_blob`, telling `progress` the bytes sent as the body streams out
    /// (with its `Content-Length`, so a relay refuses a blob over its limit
    /// before any of it is sent).
    pub async fn put_blob_with(
        &self,
        uploader: &NodeKey,
        bytes: Vec<u8>,
        progress: Option<Progress>,
    ) -> Result<StoredBlob> {
        let name = blob_name(&bytes);
        let url = format!("{}/v1/blobs/{name}", self.url());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/octet-stream"),
        );
        let now = meshrelay_protocol::clock::now_secs();
        meshrelay_httpsig::sign(uploader, "PUT", &url, &mut headers, Some(&bytes), now)
            .map_err(|e| Error::Usage(format!("signing the upload: {e}")))?;
        let len = bytes.len();
        let bytes = bytes::Bytes::from(bytes);
        let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
            let end = ((i + 1) * CHUNK).min(len);
            if let Some(p) = &progress {
                p(end as u64);
            }
            Ok::<_, std::io::Error>(bytes.slice(i * CHUNK..end))
        });
        let resp = self
            .http()
            .put(&url)
            .headers(headers)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .map_err(|e| self.transport("uploading a blob", e))?;
        let status = resp.status().as_u16();
        if status != 200 && status != 201 {
            return Err(crate::relay::refused(resp).await);
        }
        let mut stored: StoredBlob = resp
            .json()
            .await
            .map_err(|e| self.bad(format!("upload answer: {e}")))?;
        if stored.sha256 != name {
            return Err(self.bad(format!("stored {} for {name}", stored.sha256)));
        }
        stored.created = status == 201;
        Ok(stored)
    }

    /// A blob's bytes, at most `max_bytes`, checked to hash to `sha256`;
    /// `None` when the relay does not hold it.
    pub async fn get_blob(&self, sha256: &str, max_bytes: u64) -> Result<Option<Vec<u8>>> {
        self.get_blob_with(sha256, max_bytes, None).await
    }

    /// `get_blob`, telling `progress` the bytes received, and `total` the
    /// size the relay declares before the first byte.
    pub async fn get_blob_with(
        &self,
        sha256: &str,
        max_bytes: u64,
        progress: Option<(Progress, Progress)>,
    ) -> Result<Option<Vec<u8>>> {
        let resp = self
            .http()
            .get(format!("{}/v1/blobs/{sha256}", self.url()))
            .send()
            .await
            .map_err(|e| self.transport("getting a blob", e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(crate::relay::refused(resp).await),
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(self.bad(format!("the blob is larger than {max_bytes} bytes")));
        }
        if let (Some((_, total)), Some(n)) = (&progress, resp.content_length()) {
            total(n);
        }
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport("reading a blob", e))?;
            if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(self.bad(format!("the blob is larger than {max_bytes} bytes")));
            }
            bytes.extend_from_slice(&chunk);
            if let Some((received, _)) = &progress {
                received(bytes.len() as u64);
            }
        }
        if blob_name(&bytes) != sha256 {
            return Err(self.bad(format!(
                "the bytes served for {sha256} hash to {}",
                blob_name(&bytes)
            )));
        }
        Ok(Some(bytes))
    }
}
