//! # evalstream-domain
//!
//! What the three domain processors (`submissions`, `policy`, `settlement`) and the operator
//! commands share, so that each processor crate is its state machine and little else:
//!
//! - [`records`]: the typed form of every domain schema in `schemas/` (one struct per Avro
//!   record, checked against its schema by a unit test);
//! - [`events`]: audit events with deterministic ids, so replays and at-least-once upstreams
//!   produce the same `event_id` and the audit chain deduplicates them;
//! - [`reject`]: why a record is refused, as a short machine code plus words, which becomes the
//!   DLQ reason (`<code>: <detail>`) and the bounded metric label;
//! - [`proof`]: the Finance ledger-proof format, its verification against the signer registry,
//!   and the development Finance stand-in that signs settlements;
//! - [`check`]: field checks every processor applies the same way.
//!
//! The rules the processors implement, and why, are in `docs/domain.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod events;
pub mod proof;
pub mod records;
pub mod reject;

/// The request id the submissions processor derives for a submission's promotion ask.
pub fn promotion_request_id(submission_id: &str) -> String {
    format!("{submission_id}:promotion")
}

/// The allocation id the submissions processor derives for a submission's allocation ask.
pub fn allocation_id(submission_id: &str) -> String {
    format!("{submission_id}:allocation")
}

/// SHA-256 of the RFC 8785 canonical JSON of `value`, lower-case hex: how processors recognise
/// "same id, same content" (a duplicate) against "same id, other content" (a conflict). Fields
/// that are absent, null or empty and have a schema default are left out of the JSON by the
/// record types, so adding such a field to a schema later does not change old digests.
pub fn content_digest<T: serde::Serialize>(value: &T) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let canonical = evalstream_audit::canonical::canonicalize(&json).map_err(|e| e.to_string())?;
    Ok(hex::encode(Sha256::digest(canonical)))
}
