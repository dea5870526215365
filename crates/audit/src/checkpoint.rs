//! The checkpoint body: the exact bytes a signer signs (version 1).
//!
//! ```text
//!  evalstream.audit.checkpoint.v1\n      header: domain separation + version
//!  audit.chain\n                         origin: the logical chain topic name
//!  0\n                                   partition, decimal
//!  8\n                                   tree size, decimal
//!  XclJqacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n   Merkle root, standard base64 with padding
//!  6c2f...e4\n                           chain head (entry hash of seq tree_size-1), lowercase hex
//!  1700000000123\n                       time: occurred_at of the last entry, ms, decimal
//! ```
//!
//! Why this shape: it reads like a C2SP signed-note checkpoint (origin, size, base64 root, one
//! item per line, final newline), so an operator can inspect and verify it with `openssl`
//! alone, but it starts with a version header line instead of the origin so that our signing key
//! can never be tricked into producing a signature that some other note verifier accepts, and
//! so that a v2 layout is unambiguous. It is *not* a C2SP tlog-checkpoint. The body binds the
//! partition (a checkpoint cannot be moved to another chain), the tree head (which covers every
//! entry hash) and the chain head (the last entry hash, so a verifier can check the tail link
//! without the tree). The time is deterministic — the `occurred_at` of the last entry — so a
//! replay reproduces identical bodies; an empty tree has time 0.
//!
//! Signature: ECDSA P-256 with SHA-256 over these bytes, DER encoded (what AWS KMS `Sign` with
//! `ECDSA_SHA_256` and `MessageType=RAW` returns). Signing and key registry live elsewhere.

use evalstream_runtime::b64;
use thiserror::Error;

use crate::merkle::{hash_from_slice, Hash};

/// First line of every v1 checkpoint body.
pub const CHECKPOINT_HEADER: &str = "evalstream.audit.checkpoint.v1";

/// Origin line: the logical name of the chain topic. It is a constant, not the physical topic
/// name, so that environments with prefixed topic names produce the same bodies.
pub const CHECKPOINT_ORIGIN: &str = "audit.chain";

/// Why a checkpoint body cannot be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// The origin is empty or contains a control character (a newline would shift every
    /// following line of the body).
    #[error("checkpoint origin must be non-empty without control characters, got {0:?}")]
    InvalidOrigin(String),
    /// The bytes are not a v1 checkpoint body in exactly the canonical layout.
    #[error("malformed checkpoint body: {0}")]
    Malformed(&'static str),
}

/// The fields of a checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The chain's logical topic name, normally [`CHECKPOINT_ORIGIN`].
    pub origin: String,
    /// The chain's partition.
    pub partition: u32,
    /// Number of entries covered (sequence numbers `0..tree_size`).
    pub tree_size: u64,
    /// RFC 6962 Merkle tree head over the entry hashes of those entries.
    pub root: Hash,
    /// Entry hash of sequence `tree_size - 1` (the genesis hash when `tree_size` is 0).
    pub head_hash: Hash,
    /// `occurred_at` of the entry at `tree_size - 1`, in ms since the Unix epoch (0 when empty).
    pub time_ms: i64,
}

impl CheckpointBody {
    /// The body bytes (see the module documentation for the layout).
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        if self.origin.is_empty() || self.origin.chars().any(char::is_control) {
            return Err(CheckpointError::InvalidOrigin(self.origin.clone()));
        }
        let text = format!(
            "{CHECKPOINT_HEADER}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.origin,
            self.partition,
            self.tree_size,
            b64::encode(&self.root),
            hex::encode(self.head_hash),
            self.time_ms,
        );
        Ok(text.into_bytes())
    }

    /// Parses a body, accepting only the exact bytes [`CheckpointBody::encode`] would produce
    /// (no leading zeros, no `+`, lowercase hex, padded base64, final newline), so that one set
    /// of fields has exactly one body.
    pub fn parse(bytes: &[u8]) -> Result<CheckpointBody, CheckpointError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| CheckpointError::Malformed("not UTF-8"))?;
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed("no final newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [header, origin, partition, tree_size, root, head_hash, time_ms] = lines[..] else {
            return Err(CheckpointError::Malformed("expected 7 lines"));
        };
        if header != CHECKPOINT_HEADER {
            return Err(CheckpointError::Malformed("unknown header line"));
        }
        let root = b64::decode_canonical(root)
            .ok()
            .and_then(|b| hash_from_slice(&b))
            .ok_or(CheckpointError::Malformed("root is not base64 of 32 bytes"))?;
        let head_hash = hex::decode(head_hash)
            .ok()
            .and_then(|b| hash_from_slice(&b))
            .ok_or(CheckpointError::Malformed("head hash is not hex of 32 bytes"))?;
        let parsed = CheckpointBody {
            origin: origin.to_string(),
            partition: partition.parse().map_err(|_| CheckpointError::Malformed("partition"))?,
            tree_size: tree_size.parse().map_err(|_| CheckpointError::Malformed("tree size"))?,
            root,
            head_hash,
            time_ms: time_ms.parse().map_err(|_| CheckpointError::Malformed("time"))?,
        };
        if parsed.encode()? != bytes {
            return Err(CheckpointError::Malformed("not in canonical form"));
        }
        Ok(parsed)
    }
}

/// The checkpoint body for the given fields (see [`CheckpointBody`]); `origin` is normally
/// [`CHECKPOINT_ORIGIN`].
pub fn checkpoint_body(
    origin: &str,
    partition: u32,
    tree_size: u64,
    root: &Hash,
    head_hash: &Hash,
    time_ms: i64,
) -> Result<Vec<u8>, CheckpointError> {
    CheckpointBody {
        origin: origin.to_string(),
        partition,
        tree_size,
        root: *root,
        head_hash: *head_hash,
        time_ms,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::EMPTY_ROOT;

    #[test]
    fn layout_and_round_trip() {
        let body = CheckpointBody {
            origin: CHECKPOINT_ORIGIN.into(),
            partition: 2,
            tree_size: 0,
            root: EMPTY_ROOT,
            head_hash: [0xab; 32],
            time_ms: -5,
        };
        let bytes = body.encode().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!(
                "evalstream.audit.checkpoint.v1\naudit.chain\n2\n0\n\
                 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n{}\n-5\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(CheckpointBody::parse(&bytes).unwrap(), body);
    }

    #[test]
    fn only_the_canonical_bytes_parse() {
        let body = CheckpointBody {
            origin: CHECKPOINT_ORIGIN.into(),
            partition: 1,
            tree_size: 10,
            root: [1; 32],
            head_hash: [0xab; 32],
            time_ms: 7,
        };
        let good = String::from_utf8(body.encode().unwrap()).unwrap();
        let variants = [
            good.replace("\n10\n", "\n010\n"),
            good.replace("\n10\n", "\n+10\n"),
            good.replace(&"ab".repeat(32), &"ab".repeat(31)),
            good.replace(&"ab".repeat(32), &"AB".repeat(32)),
            good.replace("evalstream.audit.checkpoint.v1", "evalstream.audit.checkpoint.v2"),
            good.trim_end().to_string(),
            format!("{good}\n"),
            good.replace("\n7\n", "\n7\nextra\n"),
            good.replace('=', ""),
        ];
        for bad in variants {
            assert_ne!(bad, good);
            assert!(CheckpointBody::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(CheckpointBody::parse(&[0xff, b'\n']).is_err());
        for origin in ["", "audit\nchain", "a\u{7f}"] {
            let b = CheckpointBody { origin: origin.into(), ..body.clone() };
            assert!(matches!(b.encode(), Err(CheckpointError::InvalidOrigin(_))));
        }
    }
}
