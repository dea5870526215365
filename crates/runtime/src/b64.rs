//! Standard base64 (RFC 4648 §4), the one helper every crate uses: how bytes appear in the JSON
//! forms (`{"base64": "..."}`), in proofs and archives, and in the checkpoint body.
//!
//! Writing always pads. Reading is lenient about padding only ([`decode`]: people and other
//! tools drop it) and strict otherwise (alphabet, length, no stray bits in the last character,
//! so one text has one meaning); signed formats, where one set of fields must have exactly one
//! encoding, read with [`decode_canonical`].

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use thiserror::Error;

/// Padded on output, padding optional on input.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a text is not base64.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid base64: {0}")]
pub struct Base64Error(String);

/// Standard base64 of `bytes`, padded.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64, padded or not.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    LENIENT.decode(text).map_err(|e| Base64Error(e.to_string()))
}

/// Decodes exactly what [`encode`] writes (padding required).
pub fn decode_canonical(text: &str) -> Result<Vec<u8>, Base64Error> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| Base64Error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(decode_canonical(enc).unwrap(), plain.as_bytes());
            assert_eq!(decode(enc.trim_end_matches('=')).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in ["Zm9!", "Zg=a", "Z", "Zg===", "Zh==", "Zm9v\n", "Zm-_"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(decode_canonical("Zg").is_err(), "canonical needs padding");
    }
}
