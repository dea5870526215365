//! Inclusion proofs: one entry, its RFC 6962 audit path, and the signed checkpoint whose root
//! the path leads to — checkable by anyone with the signer's public key, without the broker.
//!
//! ```text
//!  canonical ─┐
//!  prev_hash ─┼─► entry_hash (docs/audit-chain.md §3) ─► leaf ─► audit path ─► root
//!  seq ───────┘                                                                 │ ==
//!  checkpoint {partition, tree_size, root, head, time} ─► body (§5) ─► signature by kid
//!                                                                     (signers.json, valid at time)
//! ```
//!
//! The proof document is plain JSON (`format` [`PROOF_FORMAT`]); hashes are hex, the signature
//! base64, and the checkpoint body is included verbatim so that an operator can also check the
//! signature with `openssl dgst -sha256 -verify` alone. [`check_proof`] recomputes everything
//! from the entry's canonical bytes; nothing in the document is taken on trust except what the
//! signature covers.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::canonical::canonicalize_str;
use crate::chain::{entry_hash, genesis_hash};
use crate::checkpoint::{CheckpointBody, CHECKPOINT_ORIGIN};
use crate::merkle::{inclusion_proof, root, verify_inclusion, Hash, MerkleError};
use crate::offline::json::{
    base64_decode, base64_encode, hash_hex, parse_hash, parse_status, EntryJson, JsonFormError,
};
use crate::records::{ChainEntry, Checkpoint, CheckpointStatus};
use crate::signer::ALGORITHM_ECDSA_P256_SHA256;
use crate::trust::{SignatureCheckError, SignerRegistry, SignerRegistryError};

/// `format` of an inclusion proof document.
pub const PROOF_FORMAT: &str = "evalstream.audit.inclusion-proof.v1";

/// The checkpoint part of a proof: the signed body's fields, the body itself and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofCheckpoint {
    /// `audit.chain` offset of the checkpoint (informational).
    pub offset: Option<i64>,
    /// Number of entries it covers.
    pub tree_size: u64,
    /// Hex of its RFC 6962 root.
    pub root: String,
    /// Hex of the entry hash of `tree_size - 1`.
    pub head_hash: String,
    /// `occurred_at` of entry `tree_size - 1`; selects the key in the registry.
    pub time_ms: i64,
    /// Must be `signed`.
    pub status: String,
    /// Signer key id.
    pub kid: Option<String>,
    /// Base64 of the DER ECDSA signature over `body`.
    pub signature: Option<String>,
    /// `kms`, `local` or `proxy`.
    pub signer_kind: Option<String>,
    /// The signed body (docs/audit-chain.md §5), verbatim.
    pub body: String,
}

/// An inclusion proof document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// [`PROOF_FORMAT`].
    pub format: String,
    /// The checkpoint origin, `audit.chain`.
    pub origin: String,
    /// The chain.
    pub partition: u32,
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry's event id.
    pub event_id: String,
    /// `audit.chain` offset of the entry (informational).
    pub offset: Option<i64>,
    /// The entry: canonical bytes, previous hash, entry hash and the copied metadata.
    pub entry: EntryJson,
    /// Leaf index in the tree (equals `seq`).
    pub leaf_index: u64,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Hex of the root the audit path leads to.
    pub root: String,
    /// Hex of the sibling hashes from the leaf up (RFC 6962 `PATH(leaf_index, D[tree_size])`).
    pub audit_path: Vec<String>,
    /// The signed checkpoint.
    pub checkpoint: ProofCheckpoint,
}

/// Why a proof could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    /// The checkpoint is not signed.
    #[error("checkpoint {0} is not signed")]
    NotSigned(u64),
    /// The entry is not covered by the checkpoint.
    #[error("entry {seq} is not covered by checkpoint {tree_size}")]
    NotCovered {
        /// The entry.
        seq: u64,
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// The entry hashes read do not reproduce the checkpoint's root: the chain was altered.
    #[error(
        "the entry hashes 0..{tree_size} read from the chain do not reproduce the root of \
         checkpoint {tree_size}: the chain does not match its checkpoint (run `evalstream audit \
         verify`)"
    )]
    RootMismatch {
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// A Merkle computation failed (too few entry hashes).
    #[error("merkle: {0}")]
    Merkle(#[from] MerkleError),
    /// The checkpoint body cannot be encoded.
    #[error("checkpoint body: {0}")]
    Body(String),
}

/// Builds the proof of `entry` (at `entry_offset`) of chain `partition` under the signed
/// `checkpoint` (at `checkpoint_offset`), from the chain's entry hashes `0..` (at least
/// `tree_size` of them). The root is recomputed from the hashes and must equal the checkpoint's.
pub fn build_proof(
    partition: u32,
    entry: &ChainEntry,
    entry_offset: Option<i64>,
    entry_hashes: &[Hash],
    checkpoint: &Checkpoint,
    checkpoint_offset: Option<i64>,
) -> Result<InclusionProof, ProofError> {
    let n = checkpoint.tree_size;
    if checkpoint.status != CheckpointStatus::Signed {
        return Err(ProofError::NotSigned(n));
    }
    if entry.seq >= n {
        return Err(ProofError::NotCovered { seq: entry.seq, tree_size: n });
    }
    let hashes = usize::try_from(n)
        .ok()
        .and_then(|n| entry_hashes.get(..n))
        .ok_or(MerkleError::SizeBeyondLeaves { size: n, available: entry_hashes.len() as u64 })?;
    if root(hashes) != checkpoint.root {
        return Err(ProofError::RootMismatch { tree_size: n });
    }
    let path = inclusion_proof(hashes, entry.seq, n)?;
    let body = checkpoint.body(partition).map_err(|e| ProofError::Body(e.to_string()))?;
    Ok(InclusionProof {
        format: PROOF_FORMAT.to_string(),
        origin: CHECKPOINT_ORIGIN.to_string(),
        partition,
        seq: entry.seq,
        event_id: entry.event_id.clone(),
        offset: entry_offset,
        entry: EntryJson::of(entry),
        leaf_index: entry.seq,
        tree_size: n,
        root: hash_hex(&checkpoint.root),
        audit_path: path.iter().map(hash_hex).collect(),
        checkpoint: ProofCheckpoint {
            offset: checkpoint_offset,
            tree_size: n,
            root: hash_hex(&checkpoint.root),
            head_hash: hash_hex(&checkpoint.head_hash),
            time_ms: checkpoint.time_ms,
            status: checkpoint.status.as_str().to_string(),
            kid: checkpoint.kid.clone(),
            signature: checkpoint.signature.as_deref().map(base64_encode),
            signer_kind: checkpoint.signer_kind.clone(),
            // The body is ASCII by construction (docs/audit-chain.md §5).
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    })
}

/// One step of checking a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofStep {
    /// What was checked.
    pub check: &'static str,
    /// `Some(true)` held, `Some(false)` failed, `None` not checked.
    pub ok: Option<bool>,
    /// Why, in words.
    pub detail: String,
}

/// Overall outcome of [`check_proof`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofVerdict {
    /// Every step held, the signature included.
    Valid,
    /// A step failed: the proof does not show that the entry is in the signed chain.
    Invalid,
    /// Every checked step held, but the signature was not checked (no signer registry).
    SignatureUnchecked,
}

/// The result of [`check_proof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofReport {
    /// The outcome.
    pub verdict: ProofVerdict,
    /// Every step, in order.
    pub steps: Vec<ProofStep>,
}

struct Steps(Vec<ProofStep>);

impl Steps {
    fn check(&mut self, check: &'static str, ok: bool, detail: impl Into<String>) -> bool {
        self.0.push(ProofStep { check, ok: Some(ok), detail: detail.into() });
        ok
    }

    fn result<T>(&mut self, check: &'static str, r: Result<T, impl ToString>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.check(check, false, e.to_string());
                None
            }
        }
    }
}

/// Whether an entry's copied metadata agrees with its canonical bytes and the bytes are in
/// canonical form (re-canonicalizing them is the identity).
fn canonical_agrees(e: &ChainEntry) -> Result<(), String> {
    let text = std::str::from_utf8(&e.canonical).map_err(|_| "not UTF-8".to_string())?;
    let again = canonicalize_str(text).map_err(|err| format!("not canonical JSON: {err}"))?;
    if again != e.canonical {
        return Err("not in RFC 8785 canonical form".into());
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let same = v.get("event_id").and_then(|x| x.as_str()) == Some(e.event_id.as_str())
        && v.get("type").and_then(|x| x.as_str()) == Some(e.event_type.as_str())
        && v.get("occurred_at").and_then(|x| x.as_i64()) == Some(e.occurred_at);
    if same {
        Ok(())
    } else {
        Err("event_id, event_type or occurred_at differ from the canonical bytes".into())
    }
}

/// Checks a proof without the broker: the entry hash from its canonical bytes, the audit path
/// to the root, the checkpoint body, and (with a registry) the signature with the key that was
/// valid at the checkpoint's time. Never panics on malformed input: every problem is a failed
/// step.
pub fn check_proof(proof: &InclusionProof, registry: Option<&SignerRegistry>) -> ProofReport {
    let mut s = Steps(Vec::new());
    let report = |s: Steps| {
        let verdict = if s.0.iter().any(|x| x.ok == Some(false)) {
            ProofVerdict::Invalid
        } else if s.0.iter().any(|x| x.ok.is_none()) {
            ProofVerdict::SignatureUnchecked
        } else {
            ProofVerdict::Valid
        };
        ProofReport { verdict, steps: s.0 }
    };
    if !s.check(
        "format",
        proof.format == PROOF_FORMAT && proof.origin == CHECKPOINT_ORIGIN,
        format!("format {:?}, origin {:?}", proof.format, proof.origin),
    ) {
        return report(s);
    }
    let Some(entry) = s.result("entry", proof.entry.to_entry()) else { return report(s) };
    let same_entry =
        entry.seq == proof.seq && proof.leaf_index == proof.seq && entry.event_id == proof.event_id;
    s.check(
        "entry identity",
        same_entry,
        format!(
            "seq {} / leaf index {} / entry seq {}, event id {:?} / entry event id {:?}",
            proof.seq, proof.leaf_index, entry.seq, proof.event_id, entry.event_id
        ),
    );
    let canonical = canonical_agrees(&entry);
    s.check(
        "canonical bytes",
        canonical.is_ok(),
        canonical.err().unwrap_or_else(|| "canonical form; metadata agrees".into()),
    );
    let recomputed = entry_hash(&entry.prev_hash, entry.seq, &entry.canonical);
    s.check(
        "entry hash",
        recomputed == entry.entry_hash,
        if recomputed == entry.entry_hash {
            format!(
                "SHA-256 over tag, prev hash, seq and canonical bytes = {}",
                hash_hex(&recomputed)
            )
        } else {
            format!(
                "recomputed {} but the proof claims {}: the entry was changed",
                hash_hex(&recomputed),
                hash_hex(&entry.entry_hash)
            )
        },
    );
    if entry.seq == 0 {
        s.check(
            "genesis link",
            entry.prev_hash == genesis_hash(proof.partition),
            format!("entry 0 must link to the genesis hash of partition {}", proof.partition),
        );
    }
    let cp = &proof.checkpoint;
    let parsed = (|| -> Result<(Hash, Hash, Hash, Vec<Hash>, CheckpointStatus), JsonFormError> {
        Ok((
            parse_hash("root", &proof.root)?,
            parse_hash("checkpoint.root", &cp.root)?,
            parse_hash("checkpoint.head_hash", &cp.head_hash)?,
            proof
                .audit_path
                .iter()
                .map(|h| parse_hash("audit_path", h))
                .collect::<Result<_, _>>()?,
            parse_status("checkpoint.status", &cp.status)?,
        ))
    })();
    let Some((root_hash, cp_root, head_hash, path, status)) = s.result("proof fields", parsed)
    else {
        return report(s);
    };
    s.check(
        "checkpoint covers entry",
        cp.tree_size == proof.tree_size
            && cp_root == root_hash
            && proof.leaf_index < proof.tree_size,
        format!(
            "leaf {} of a tree of {}, checkpoint tree size {}",
            proof.leaf_index, proof.tree_size, cp.tree_size
        ),
    );
    let inclusion =
        verify_inclusion(&recomputed, proof.leaf_index, proof.tree_size, &path, &root_hash);
    s.check(
        "inclusion",
        inclusion.is_ok(),
        match &inclusion {
            Ok(()) => format!(
                "audit path of {} hashes leads to root {}",
                path.len(),
                hash_hex(&root_hash)
            ),
            Err(e) => format!("the audit path does not lead to the checkpoint root: {e}"),
        },
    );
    if proof.leaf_index.checked_add(1) == Some(proof.tree_size) {
        s.check(
            "checkpoint head",
            head_hash == recomputed,
            "the last entry of the tree must be the checkpoint's head",
        );
    }
    let body = CheckpointBody {
        origin: CHECKPOINT_ORIGIN.to_string(),
        partition: proof.partition,
        tree_size: cp.tree_size,
        root: cp_root,
        head_hash,
        time_ms: cp.time_ms,
    }
    .encode();
    let Some(body) = s.result("checkpoint body", body) else { return report(s) };
    s.check(
        "checkpoint body",
        body == cp.body.as_bytes(),
        "the included body must be the one the fields give (docs/audit-chain.md §5)",
    );
    let signed = status == CheckpointStatus::Signed;
    let (Some(kid), Some(sig)) = (&cp.kid, &cp.signature) else {
        s.check("signature", false, "the checkpoint is not signed (no kid or signature)");
        return report(s);
    };
    if !s.check("signed", signed, format!("checkpoint status {}", cp.status)) {
        return report(s);
    }
    let Some(sig) = s.result("signature", base64_decode("checkpoint.signature", sig)) else {
        return report(s);
    };
    match registry {
        None => s.0.push(ProofStep {
            check: "signature",
            ok: None,
            detail: format!("not checked: no signer registry to look up kid {kid}"),
        }),
        Some(registry) => {
            let r = registry.verify(kid, ALGORITHM_ECDSA_P256_SHA256, cp.time_ms, &body, &sig);
            let detail = match &r {
                Ok(e) => format!("valid signature by {kid} ({} key, {})", e.kind(), e.status()),
                Err(SignatureCheckError::Key(SignerRegistryError::UnknownKid(_))) => {
                    format!("kid {kid} is not in the signer registry")
                }
                Err(e) => e.to_string(),
            };
            s.check("signature", r.is_ok(), detail);
        }
    }
    report(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::json::BytesJson;
    use crate::offline::range::tests::Builder;

    /// A chain of 13 entries with a signed checkpoint at 13, and the proof of entry `seq`.
    fn proof_of(seq: u64) -> (InclusionProof, SignerRegistry) {
        let mut b = Builder::new(2);
        let entries: Vec<ChainEntry> = (0..13).map(|_| b.entry()).collect();
        let cp = b.signed();
        let proof =
            build_proof(2, &entries[seq as usize], Some(40), &b.hashes, &cp, Some(99)).unwrap();
        (proof, b.registry())
    }

    #[test]
    fn proofs_round_trip_and_verify() {
        for seq in [0, 5, 12] {
            let (proof, registry) = proof_of(seq);
            let text = serde_json::to_string_pretty(&proof).unwrap();
            let back: InclusionProof = serde_json::from_str(&text).unwrap();
            assert_eq!(back, proof);
            let report = check_proof(&back, Some(&registry));
            assert_eq!(report.verdict, ProofVerdict::Valid, "{report:#?}");
            let report = check_proof(&back, None);
            assert_eq!(report.verdict, ProofVerdict::SignatureUnchecked, "{report:#?}");
        }
    }

    fn failed_steps(proof: &InclusionProof, registry: &SignerRegistry) -> Vec<&'static str> {
        let report = check_proof(proof, Some(registry));
        assert_eq!(report.verdict, ProofVerdict::Invalid, "{report:#?}");
        report.steps.iter().filter(|s| s.ok == Some(false)).map(|s| s.check).collect()
    }

    #[test]
    fn tampered_proofs_are_rejected() {
        let (good, registry) = proof_of(5);

        let mut p = good.clone();
        let BytesJson::Text(t) = &mut p.entry.canonical else { panic!() };
        *t = t.replace("model-5", "model-6");
        assert_eq!(failed_steps(&p, &registry), vec!["entry hash", "inclusion"]);

        // Re-hashing the changed entry moves the problem to the audit path.
        let mut e = p.entry.to_entry().unwrap();
        e.entry_hash = e.recomputed_hash();
        p.entry = EntryJson::of(&e);
        assert_eq!(failed_steps(&p, &registry), vec!["inclusion"]);

        let mut p = good.clone();
        p.audit_path[1] = hash_hex(&[7; 32]);
        assert_eq!(failed_steps(&p, &registry), vec!["inclusion"]);

        let mut p = good.clone();
        p.audit_path.pop();
        assert_eq!(failed_steps(&p, &registry), vec!["inclusion"]);

        // A different tree: the body changes, so the signature no longer holds.
        let mut p = good.clone();
        p.checkpoint.time_ms += 1;
        assert_eq!(failed_steps(&p, &registry), vec!["checkpoint body", "signature"]);

        let mut p = good.clone();
        p.checkpoint.kid = Some("local:ffffffffffffffff".into());
        assert_eq!(failed_steps(&p, &registry), vec!["signature"]);

        let mut p = good.clone();
        p.leaf_index = 6;
        assert!(failed_steps(&p, &registry).contains(&"entry identity"));

        let mut p = good.clone();
        p.root = "zz".into();
        assert_eq!(failed_steps(&p, &registry), vec!["proof fields"]);

        let mut p = good;
        p.format = "something else".into();
        assert_eq!(failed_steps(&p, &registry), vec!["format"]);
    }

    #[test]
    fn extreme_numbers_are_failed_steps_not_panics() {
        let (good, registry) = proof_of(12);
        for (leaf, size, path_len) in
            [(u64::MAX, u64::MAX, 2), (u64::MAX - 1, u64::MAX, 64), (0, 0, 0), (5, 3, 200)]
        {
            let mut p = good.clone();
            p.leaf_index = leaf;
            p.seq = leaf;
            p.entry.seq = leaf;
            p.tree_size = size;
            p.checkpoint.tree_size = size;
            p.audit_path = vec![hash_hex(&[1; 32]); path_len];
            assert_eq!(check_proof(&p, Some(&registry)).verdict, ProofVerdict::Invalid);
        }
        let mut p = good;
        p.checkpoint.time_ms = i64::MIN;
        p.entry.occurred_at = i64::MAX;
        assert_eq!(check_proof(&p, Some(&registry)).verdict, ProofVerdict::Invalid);
    }

    #[test]
    fn building_checks_the_root_and_the_signature_state() {
        let mut b = Builder::new(0);
        let e = b.entry();
        b.entry();
        let cp = b.signed();
        let mut hashes = b.hashes.clone();
        hashes[1][0] ^= 1;
        assert_eq!(
            build_proof(0, &e, None, &hashes, &cp, None),
            Err(ProofError::RootMismatch { tree_size: 2 })
        );
        let pending = b.pending();
        assert_eq!(
            build_proof(0, &e, None, &b.hashes, &pending, None),
            Err(ProofError::NotSigned(2))
        );
        let late = b.entry();
        assert!(matches!(
            build_proof(0, &late, None, &b.hashes, &cp, None),
            Err(ProofError::NotCovered { .. })
        ));
        assert!(build_proof(0, &e, None, &b.hashes[..1], &cp, None).is_err());
    }
}
