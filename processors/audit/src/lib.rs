//! # evalstream-audit
//!
//! The tamper-evident audit log, Kafka-native: events from `audit.events` are canonicalized
//! (RFC 8785), hash-chained per partition, summarized by RFC 6962 Merkle trees in signed
//! checkpoints on `audit.chain`, and verified by `audit-verifier` and `evalstream audit verify`.
//! The exact byte formats are specified in `docs/audit-chain.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canonical;
pub mod chain;
pub mod chain_processor;
pub mod checkpoint;
pub mod merkle;
pub mod offline;
pub mod records;
pub mod registry;
pub mod signer;
pub mod verifier_processor;
pub mod verify;
