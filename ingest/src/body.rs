//! Request bodies before they are parsed: `Content-Encoding` (gzip, zstd) decoded under a cap on
//! the decoded size, the decoding budget's unit, and the rule that the body, not its
//! `Content-Type` label, decides whether it is JSON (SDKs label the same JSON differently).

use std::io::Read as _;

use http::{header, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::error::IngestError;

/// Deflate's largest compression ratio: a 258-byte match coded in as few as 2 bits, about
/// 1,032:1, so a gzip body of n bytes decodes to at most about 1,032 n bytes.
pub const DEFLATE_MAX_RATIO: usize = 1_032;

/// Permits of the decoding budget: one per KiB, at least one.
pub fn decoding_permits(bytes: usize) -> usize {
    bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS)
}

/// `Content-Encoding`s ingest decodes.
#[derive(Debug, Clone, Copy)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    pub fn of(headers: &HeaderMap) -> Result<Self, IngestError> {
        match headers.get(header::CONTENT_ENCODING).map(HeaderValue::to_str) {
            None => Ok(Encoding::Identity),
            Some(Ok(value)) => match value.trim().to_ascii_lowercase().as_str() {
                "" | "identity" => Ok(Encoding::Identity),
                "gzip" | "x-gzip" => Ok(Encoding::Gzip),
                "zstd" => Ok(Encoding::Zstd),
                other => Err(IngestError::UnsupportedMediaType(format!(
                    "Content-Encoding {other:?} is not supported; use gzip, zstd or none"
                ))),
            },
            Some(Err(_)) => Err(IngestError::UnsupportedMediaType(
                "Content-Encoding is not ASCII".into(),
            )),
        }
    }

    /// Decompresses, stopping at `max` bytes so a small bomb cannot exhaust memory.
    pub fn decode(&self, body: Vec<u8>, max: usize) -> Result<Vec<u8>, IngestError> {
        let too_large =
            || IngestError::PayloadTooLarge(format!("the body is larger than {max} bytes once decompressed"));
        let mut out = Vec::new();
        let read = match self {
            Encoding::Identity => {
                return if body.len() > max { Err(too_large()) } else { Ok(body) };
            }
            Encoding::Gzip => flate2::read::MultiGzDecoder::new(&body[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out),
            Encoding::Zstd => zstd::stream::read::Decoder::new(&body[..])
                .and_then(|decoder| decoder.take(max as u64 + 1).read_to_end(&mut out)),
        };
        read.map_err(|e| IngestError::BadRequest(format!("the body cannot be decompressed: {e}")))?;
        if out.len() > max {
            return Err(too_large());
        }
        Ok(out)
    }
}

/// SDKs label the same JSON body differently (`application/json`, `text/plain` from
/// `sendBeacon`, `application/x-www-form-urlencoded` from @rudderstack/rudder-sdk-node's gzipped
/// batches), so the body decides, not the label: every endpoint takes a JSON object, and a body
/// that does not start like one is 415 when its Content-Type does not claim JSON (the client sent
/// another format) and left to the JSON parser's 400 otherwise.
pub fn check_json_body(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<(), IngestError> {
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let media = content_type
        .map(|value| String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    let claims_json = media.is_empty() || media == "application/json" || media.ends_with("+json");
    if looks_like_json || claims_json {
        Ok(())
    } else {
        Err(IngestError::UnsupportedMediaType(format!(
            "the body ({media}) is not a JSON object; send the Segment JSON envelope, with any Content-Type"
        )))
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn decompression_stops_at_the_decoded_cap() {
        use std::io::Write as _;
        let plain = vec![b' '; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(Encoding::Gzip.decode(gz.clone(), 10_000).unwrap().len(), 10_000);
        assert_eq!(
            Encoding::Gzip.decode(gz, 9_999).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(Encoding::Zstd.decode(zst.clone(), 10_000).unwrap().len(), 10_000);
        assert_eq!(
            Encoding::Zstd.decode(zst, 9_999).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
