//! Offline verification, archives and inclusion proofs: the pure logic behind
//! `evalstream audit verify | export | prove | check-proof`.
//!
//! ```text
//!  --from / --to ──► bounds::parse_from/parse_to ──► Bound::Offset | Bound::Time
//!                                                         │ time
//!            offsets-for-times (a hint only) ──► search::locate_time ◄── OffsetProbe (reads one record)
//!                                                         │ offsets [start, end)
//!  audit.chain[p] before start ──► range::anchor_candidates ──► last usable checkpoint (or genesis)
//!                                                         │
//!  records from the anchor on ──► range::RangeCheck (wraps ChainVerifier) ──► PartitionReport
//!                                  stops at the first signed checkpoint covering the range
//!
//!  json:  ChainRecord ⇄ JSON lines (archives), results as JSON, export metadata
//!  proof: entry + RFC 6962 audit path + signed checkpoint ⇄ JSON, checked without a broker
//! ```
//!
//! Nothing here talks to Kafka: the binary reads records (from the broker or from an archive
//! file) and feeds them in; the decisions — where a time range starts, which checkpoint a range
//! is resumed from, when a range is covered by a signature, what a proof must satisfy — are
//! plain functions with unit tests, so they can be checked against a fake log (for example one
//! whose offsets-for-times answers are wrong, as our local broker's are).

pub mod bounds;
pub mod json;
pub mod proof;
pub mod range;
pub mod search;
