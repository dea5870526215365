//! # evalstream-runtime
//!
//! The library every evalstream processor stands on: the wire codec, the topology model, and the
//! exactly-once consume → process → produce runtime with DLQ, retry, state stores and the operator
//! surface (`/health`, `/ready`, `/metrics`).
//!
//! ```text
//!   input topics ──► consumer (read_committed, manual offsets)
//!                        │ decode (codec) ── bad bytes ──► <topic>.dlq ─┐
//!                        ▼                                               │ same
//!                  Processor::process (pure)  ── Invalid ──► <topic>.dlq ├ transaction
//!                        │                     ── NotReady ─► <topic>.retry
//!                        ▼                                               │
//!            outputs + state changelog + progress markers ──────────────┘
//!                        │
//!            send_offsets_to_transaction → commit_transaction
//! ```
//!
//! A processor is a [`processor::Processor`] implementation: pure logic over one decoded record and
//! a keyed state view, unit-testable without a broker. [`engine::run`] runs it as a member of a
//! consumer group.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod b64;
pub mod codec;
pub mod config;
pub mod control;
pub mod engine;
pub mod error;
pub mod headers;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod processor;
pub mod progress;
pub mod reader;
pub mod readiness;
pub mod record;
pub mod state;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_records;
pub mod testkit;
pub mod time;
pub mod topology;
