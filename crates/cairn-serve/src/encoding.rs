//! Content codings on the wire: compressed request bodies (`Content-Encoding: gzip` or
//! `deflate`), compressed answers (`Accept-Encoding`), for every protocol alike.
//!
//! The body limit (`cairn serve --max-body`) applies twice: to the bytes received and to
//! the bytes they decompress to, which are read through a bounded reader, so a small
//! "gzip bomb" costs at most the limit in memory and is answered 413.
//!
//! HTTP's `deflate` is the zlib format (RFC 1950); some clients send raw DEFLATE (RFC 1951)
//! under that name, so a body without a zlib header is read as raw DEFLATE.

use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Answers smaller than this go out as they are: compressing them costs more than it saves.
const MIN_COMPRESSED: usize = 1024;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit, before or after decompression.
    TooLarge { limit: usize, decompressed: bool },
    /// A `Content-Encoding` this server does not decode.
    Unsupported(String),
    /// Bytes that are not what the `Content-Encoding` says.
    Corrupt { encoding: &'static str, reason: String },
}

/// The codings a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
}

impl Coding {
    /// The request's `Content-Encoding` (one coding; `identity` when absent).
    pub fn of_request(headers: &HeaderMap) -> Result<Self, BodyError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else { return Ok(Self::Identity) };
        let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "deflate" => Ok(Self::Deflate),
            _ => Err(BodyError::Unsupported(text)),
        }
    }

    /// The coding to answer with, from `Accept-Encoding` (gzip preferred; `q=0` refuses).
    pub fn accepted(headers: &HeaderMap) -> Self {
        let Some(text) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
            return Self::Identity;
        };
        let accepts = |name: &str| {
            text.split(',').any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0)
                });
                coding.eq_ignore_ascii_case(name) && !refused
            })
        };
        if accepts("gzip") {
            Self::Gzip
        } else if accepts("deflate") {
            Self::Deflate
        } else {
            Self::Identity
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }
}

/// Reads a request body of at most `limit` bytes, decoded as its `Content-Encoding` says,
/// and at most `limit` bytes once decoded.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let coding = Coding::of_request(headers)?;
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|length| length > limit)
    {
        return Err(BodyError::TooLarge { limit, decompressed: false });
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit")
        {
            BodyError::TooLarge { limit, decompressed: false }
        } else {
            BodyError::Corrupt { encoding: "identity", reason: format!("cannot read the request body: {e}") }
        }
    })?;
    decode(coding, bytes, limit)
}

/// Decodes `bytes`, refusing more than `limit` decoded bytes.
pub fn decode(coding: Coding, bytes: Bytes, limit: usize) -> Result<Bytes, BodyError> {
    let read = |reader: &mut dyn Read| -> Result<Bytes, BodyError> {
        let mut out = Vec::new();
        // One byte past the limit tells "exactly the limit" from "more".
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Corrupt { encoding: coding.name(), reason: e.to_string() })?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit, decompressed: true });
        }
        Ok(Bytes::from(out))
    };
    match coding {
        Coding::Identity => Ok(bytes),
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(&bytes[..])),
        // A zlib stream starts with CMF/FLG whose 16-bit value is a multiple of 31.
        Coding::Deflate if bytes.len() >= 2 && (u16::from(bytes[0]) << 8 | u16::from(bytes[1])) % 31 == 0 => {
            read(&mut flate2::read::ZlibDecoder::new(&bytes[..]))
        }
        Coding::Deflate => read(&mut flate2::read::DeflateDecoder::new(&bytes[..])),
    }
}

/// Middleware: compresses an answer of at least [`MIN_COMPRESSED`] bytes as the request's
/// `Accept-Encoding` asks, unless the handler already chose a coding.
pub async fn compress_responses(request: Request, next: Next) -> Response {
    let coding = Coding::accepted(request.headers());
    let response = next.run(request).await;
    if coding == Coding::Identity || response.headers().contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Answers are built whole in memory already; this only re-reads them.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    parts.headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if bytes.len() < MIN_COMPRESSED {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let level = flate2::Compression::fast();
    let encoded = match coding {
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 2), level);
            encoder.write_all(&bytes).and_then(|()| encoder.finish())
        }
        _ => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::with_capacity(bytes.len() / 2), level);
            encoder.write_all(&bytes).and_then(|()| encoder.finish())
        }
    };
    match encoded {
        Ok(encoded) => {
            parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(encoded))
        }
        // Writing into memory does not fail; if it ever did, the plain answer is still right.
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn every_coding_round_trips_within_the_limit() {
        let data = b"{\"inputs\": [1, 2, 3]}".repeat(10);
        assert_eq!(decode(Coding::Gzip, gzip(&data), data.len()).unwrap(), data);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        assert_eq!(decode(Coding::Deflate, Bytes::from(z.finish().unwrap()), 1 << 20).unwrap(), data);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&data).unwrap();
        assert_eq!(decode(Coding::Deflate, Bytes::from(raw.finish().unwrap()), 1 << 20).unwrap(), data);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decode(Coding::Gzip, bomb, 1 << 20),
            Err(BodyError::TooLarge { limit: 1 << 20, decompressed: true })
        );
    }

    #[test]
    fn damaged_and_unknown_codings_are_errors() {
        assert!(matches!(
            decode(Coding::Gzip, Bytes::from_static(b"not gzip"), 100),
            Err(BodyError::Corrupt { .. })
        ));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(Coding::of_request(&headers), Err(BodyError::Unsupported("br".into())));
    }

    #[test]
    fn accept_encoding_prefers_gzip_and_honours_q_zero() {
        let accepted = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            Coding::accepted(&headers)
        };
        assert_eq!(accepted("gzip, deflate"), Coding::Gzip);
        assert_eq!(accepted("deflate"), Coding::Deflate);
        assert_eq!(accepted("gzip;q=0, deflate"), Coding::Deflate);
        assert_eq!(accepted("br"), Coding::Identity);
    }
}
