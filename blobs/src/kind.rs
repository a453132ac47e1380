//! The type a blob is served with (PROTOCOL.md 4.3), decided from its bytes:
//! magic numbers by `infer` on the first bytes, and a plain-text check over
//! all of them, fed chunk by chunk as the blob streams in.

/// Bytes kept from a blob's start for the magic-number match.
const HEAD_BYTES: usize = 8192;

/// Served for everything that is not an allowed type, with
/// `Content-Disposition: attachment`.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Plain text as the `type` field names it; served with `; charset=utf-8`.
pub const TEXT_PLAIN: &str = "text/plain";

/// Watches a blob go by and names its type at the end.
#[derive(Debug, Clone)]
pub struct Sniffer {
    head: Vec<u8>,
    /// Still plain text so far (valid UTF-8, no control characters but tab,
    /// CR and LF, first non-blank character not `<`).
    text: bool,
    /// Seen a non-blank character yet.
    started: bool,
    /// The incomplete UTF-8 sequence at the end of the last chunk.
    carry: Vec<u8>,
}

impl Default for Sniffer {
    fn default() -> Self {
        Self {
            head: Vec::new(),
            text: true,
            started: false,
            carry: Vec::new(),
        }
    }
}

impl Sniffer {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let room = HEAD_BYTES - self.head.len();
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if !self.text {
            return;
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() => {
                // Cut inside a character: keep its start for the next chunk.
                let (good, rest) = bytes.split_at(e.valid_up_to());
                self.carry = rest.to_vec();
                std::str::from_utf8(good).expect("checked up to here")
            }
            Err(_) => {
                self.text = false;
                return;
            }
        };
        for c in valid.chars() {
            if c.is_control() && !matches!(c, '\t' | '\r' | '\n') {
                self.text = false;
                return;
            }
            if !self.started && !c.is_whitespace() {
                self.started = true;
                if c == '<' {
                    self.text = false;
                    return;
                }
            }
        }
    }

    /// The type to serve: images (not SVG), audio, video and PDF by their
    /// magic numbers, plain text, else `application/octet-stream`.
    pub fn finish(&self) -> &'static str {
        if let Some(kind) = infer::get(&self.head) {
            let served = match kind.matcher_type() {
                infer::MatcherType::Image => kind.mime_type() != "image/svg+xml",
                infer::MatcherType::Audio | infer::MatcherType::Video => true,
                _ => kind.mime_type() == "application/pdf",
            };
            if served {
                return kind.mime_type();
            }
            // A signature of another kind (an archive, an executable) is not
            // text even when its bytes happen to be.
            if kind.matcher_type() != infer::MatcherType::Text {
                return OCTET_STREAM;
            }
        }
        if self.text && self.carry.is_empty() && !self.head.is_empty() {
            TEXT_PLAIN
        } else {
            OCTET_STREAM
        }
    }
}

/// The `Content-Type` header value for a stored type.
pub fn content_type_header(stored: &str) -> String {
    if stored == TEXT_PLAIN {
        "text/plain; charset=utf-8".to_string()
    } else {
        stored.to_string()
    }
}

/// Whether a blob of this type is served as a download (`Content-Disposition:
/// attachment`): everything but the allowed types.
pub fn is_attachment(stored: &str) -> bool {
    stored == OCTET_STREAM
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(chunks: &[&[u8]]) -> &'static str {
        let mut s = Sniffer::default();
        for c in chunks {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn images_audio_video_and_pdf_keep_their_type() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
        assert_eq!(kind_of(&[png]), "image/png");
        assert_eq!(kind_of(&[b"\xff\xd8\xff\xe0\0\x10JFIF\0"]), "image/jpeg");
        assert_eq!(kind_of(&[b"GIF89a\x01\0\x01\0"]), "image/gif");
        assert_eq!(
            kind_of(&[b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"]),
            "application/pdf"
        );
        assert_eq!(kind_of(&[b"ID3\x03\0\0\0\0\0\0"]), "audio/mpeg");
        assert_eq!(
            kind_of(&[b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom"]),
            "video/mp4"
        );
    }

    #[test]
    fn markup_and_binaries_are_octet_streams() {
        assert_eq!(kind_of(&[b"<!doctype html><html></html>"]), OCTET_STREAM);
        assert_eq!(
            kind_of(&[b"  \n<svg xmlns='http://www.w3.org/2000/svg'/>"]),
            OCTET_STREAM
        );
        assert_eq!(kind_of(&[b"<?xml version=\"1.0\"?><a/>"]), OCTET_STREAM);
        assert_eq!(kind_of(&[b"PK\x03\x04\x14\0\0\0"]), OCTET_STREAM);
        assert_eq!(kind_of(&[b"\x7fELF\x02\x01\x01\0"]), OCTET_STREAM);
        assert_eq!(kind_of(&[b"text with a bell \x07"]), OCTET_STREAM);
        assert_eq!(kind_of(&[b"\xff\xfe not utf-8"]), OCTET_STREAM);
        assert_eq!(kind_of(&[]), OCTET_STREAM);
    }

    #[test]
    fn plain_text_is_text_across_chunk_boundaries() {
        assert_eq!(kind_of(&[b"hello,\tworld\r\n"]), TEXT_PLAIN);
        // A three-byte character cut between chunks.
        let s = "caf\u{20ac} au lait".as_bytes();
        assert_eq!(kind_of(&[&s[..4], &s[4..]]), TEXT_PLAIN);
        // Text whose markup comes later is text.
        assert_eq!(kind_of(&[b"a < b and <b>c</b>"]), TEXT_PLAIN);
        // A character cut at the very end is not valid UTF-8.
        assert_eq!(kind_of(&[&s[..4]]), OCTET_STREAM);
    }
}
