//! Why a domain record is refused: a short machine code and the words for a person.
//!
//! The DLQ reason header (`__evalstream.errors.message`) of a domain rejection reads
//! `invalid record: <code>: <detail>` (the runtime prefixes `invalid record: `), so an operator,
//! an alert or a test can group dead letters by code without parsing prose, and
//! [`code_of`] reads it back. Codes are stable; details may change.
//!
//! | code | processor | meaning |
//! | --- | --- | --- |
//! | `invalid_field` | all | a field fails validation (the detail names it) |
//! | `key_mismatch` | all | the record key is not the record's natural id (it would escape per-partition deduplication) |
//! | `conflicting_resubmission` | submissions | the submission id was accepted with other content (both digests named) |
//! | `conflicting_request` | policy | the request id was registered with other content |
//! | `conflicting_duplicate` | policy, settlement | a decision / ledger entry id seen before with other content |
//! | `already_decided` | policy | another real decision already decided (or waits for) the request |
//! | `subject_kind_mismatch` | policy | the decision's subject kind is not the request's |
//! | `bad_proof` | settlement | the ledger proof's signature does not verify (`unknown_signer`, `signature_invalid`) |
//! | `malformed` | settlement | the proof is not a ledger proof, or the settlement record is malformed |
//! | `proof_mismatch` | settlement | the signed proof says something else than the settlement record |
//! | `allocation_denied` | settlement | the allocation was denied: nothing to pay for |
//! | `already_settled` | settlement | a different ledger entry already settled (or is held for) the allocation: a double payment |
//! | `invalid_correction` | settlement | a correction asks for a transition no correction may make |
//! | `inconsistent_transition` | settlement | an `alloc.state` record that contradicts the allocation's known state |

use evalstream_runtime::error::ProcessError;

/// A refused record: `code` (one of the table above) and `detail` (words, ids, digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable machine code.
    pub code: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl Rejection {
    /// A rejection with this code and detail.
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Rejection { code, detail: detail.into() }
    }

    /// `invalid_field`: `field` is wrong because `why`.
    pub fn field(field: &str, why: impl std::fmt::Display) -> Self {
        Rejection::new("invalid_field", format!("{field}: {why}"))
    }

    /// `key_mismatch`: the record key is not `id`.
    pub fn key(key: Option<&str>, id_field: &str, id: &str) -> Self {
        Rejection::new(
            "key_mismatch",
            format!(
                "record key {} is not the {id_field} {id:?}: records must be keyed by {id_field} \
                 (deduplication and joins are per partition)",
                key.map(|k| format!("{k:?}")).unwrap_or_else(|| "(none)".into())
            ),
        )
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl From<Rejection> for ProcessError {
    fn from(r: Rejection) -> Self {
        ProcessError::Invalid(r.to_string())
    }
}

/// The code of a DLQ reason written for a [`Rejection`] (`invalid record: <code>: ...` or
/// `<code>: ...`), or `None` when the reason is not a domain rejection (e.g. a decode error).
pub fn code_of(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("invalid record: ").unwrap_or(reason);
    let (code, _) = rest.split_once(": ")?;
    is_machine_code(code).then_some(code)
}

/// A short machine code: `[a-z0-9_.-]{1,48}`.
pub fn is_machine_code(s: &str) -> bool {
    (1..=48).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// A bounded metric label from a free-text reason: the reason itself when it is a short machine
/// code, else `other` (CONTRACTS: `reason` labels stay a small vocabulary).
pub fn reason_label(reason: Option<&str>) -> &str {
    match reason {
        Some(r) if is_machine_code(r) => r,
        Some(_) => "other",
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_render_and_parse_back() {
        let r =
            Rejection::new("already_settled", "allocation a settled by L1; L2 is a second payment");
        let e: ProcessError = r.clone().into();
        let text = e.to_string();
        assert_eq!(
            text,
            "invalid record: already_settled: allocation a settled by L1; L2 is a second payment"
        );
        assert_eq!(code_of(&text), Some("already_settled"));
        assert_eq!(code_of("already_settled: x"), Some("already_settled"));
        assert_eq!(code_of("invalid record: expected evalstream.x, got y"), None);
        assert_eq!(code_of("Value is 3 bytes: no"), None);
        assert_eq!(Rejection::field("metrics[\"acc\"]", "NaN").code, "invalid_field");
        assert!(Rejection::key(None, "submission_id", "s").detail.contains("(none)"));
    }

    #[test]
    fn reason_labels_stay_bounded() {
        assert_eq!(reason_label(Some("toxicity_above_threshold")), "toxicity_above_threshold");
        assert_eq!(reason_label(Some("Toxicity above 0.3")), "other");
        assert_eq!(reason_label(Some(&"x".repeat(49))), "other");
        assert_eq!(reason_label(None), "none");
    }
}
