//! # evalstream-audit
//!
//! The tamper-evident audit log, Kafka-native: events from `audit.events` are canonicalized
//! (RFC 8785), hash-chained per partition, summarized by RFC 6962 Merkle trees in signed
//! checkpoints on `audit.chain`, and verified by `audit-verifier` and `evalstream audit verify`.
//! The exact byte formats are specified in `docs/audit-chain.md`.
//!
//! This crate is the library; the processors that run it live in `processors/audit-chain` and
//! `processors/audit-verifier`, and the offline commands in the `evalstream` binary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod merkle;
pub mod offline;
pub mod records;
pub mod signer;
pub mod trust;
pub mod verify;

/// Topic every auditable fact is produced to; partition `p` feeds chain `p`.
pub const EVENTS_TOPIC: &str = "audit.events";
/// Topic of the hash chains and their signed checkpoints (partition `p` = chain `p`).
pub const CHAIN_TOPIC: &str = "audit.chain";
/// Topic of the verifier's results.
pub const VERIFICATIONS_TOPIC: &str = "audit.verifications";
