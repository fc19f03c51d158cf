use std::fmt;
use std::str::FromStr;

/// The hash function that produced a [`Digest`].
///
/// Only BLAKE3 exists today; the tag is written into every digest so that a future algorithm
/// can live beside it without ambiguity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Blake3,
}

impl Algorithm {
    /// The tag written before the `:` in a digest's text form.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Blake3 => "blake3",
        }
    }
}

/// A content digest tagged with its algorithm: `blake3:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: [u8; 32],
}

impl Digest {
    pub fn blake3(bytes: [u8; 32]) -> Self {
        Digest { algorithm: Algorithm::Blake3, bytes }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Parses the text form from raw bytes (`blake3:<64 lowercase hex>`), without the
    /// error detail of [`FromStr`]; for hot decoding loops.
    pub fn parse_bytes(text: &[u8]) -> Option<Self> {
        let hex = text.strip_prefix(b"blake3:")?;
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            bytes[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest::blake3(bytes))
    }

    /// The digest's bytes as 64 lowercase hex digits, without the algorithm tag.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.bytes {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.tag(), self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDigestError {
    #[error("`{0}` has no algorithm tag; digests look like `blake3:<64 hex digits>`")]
    MissingTag(String),
    #[error("unknown digest algorithm `{0}`; this version of Cairn knows only `blake3`")]
    UnknownAlgorithm(String),
    #[error("`{0}` is not 64 lowercase hex digits")]
    BadHex(String),
}

/// A digest serializes as its text, `blake3:<64 hex digits>`.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!("`{text}` is not a digest (blake3:<64 hex digits>)"))
        })
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (tag, hex) = text.split_once(':').ok_or_else(|| ParseDigestError::MissingTag(text.to_owned()))?;
        if tag != Algorithm::Blake3.tag() {
            return Err(ParseDigestError::UnknownAlgorithm(tag.to_owned()));
        }
        let bad = || ParseDigestError::BadHex(hex.to_owned());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let high = nibble(pair[0]).ok_or_else(bad)?;
            let low = nibble(pair[1]).ok_or_else(bad)?;
            bytes[i] = (high << 4) | low;
        }
        Ok(Digest::blake3(bytes))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_digest_serializes_as_its_text_and_refuses_anything_else() {
        let digest = crate::hash_bytes(b"hello\n");
        let text = serde_json::to_string(&digest).unwrap();
        assert_eq!(text, format!("\"{digest}\""));
        assert_eq!(serde_json::from_str::<Digest>(&text).unwrap(), digest);
        let error = serde_json::from_str::<Digest>("\"blake3:00\"").unwrap_err().to_string();
        assert!(error.contains("is not a digest"), "{error}");
    }

    #[test]
    fn empty_input_matches_the_blake3_reference() {
        // The BLAKE3 paper's digest of the empty input.
        let digest = crate::hash_bytes(b"");
        assert_eq!(
            digest.to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn rejects_malformed_text() {
        assert!(matches!("abc".parse::<Digest>(), Err(ParseDigestError::MissingTag(_))));
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(ParseDigestError::UnknownAlgorithm(_))
        ));
        assert!(matches!("blake3:12".parse::<Digest>(), Err(ParseDigestError::BadHex(_))));
        let upper = format!("blake3:{}", "A".repeat(64));
        assert!(matches!(upper.parse::<Digest>(), Err(ParseDigestError::BadHex(_))));
    }

    proptest! {
        #[test]
        fn text_round_trips(bytes in any::<[u8; 32]>()) {
            let digest = Digest::blake3(bytes);
            prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
            prop_assert_eq!(Digest::parse_bytes(digest.to_string().as_bytes()), Some(digest));
        }
    }
}
