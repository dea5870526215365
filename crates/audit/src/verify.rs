//! Chain verification as a pure state machine, shared by the `audit-verifier` processor,
//! `evalstream audit verify` (a broker range) and `evalstream audit verify --archive`.
//!
//! Feed it one partition's `audit.chain` records in offset order; it recomputes every entry hash,
//! checks links and sequence continuity, recomputes the RFC 6962 root at every checkpoint and
//! checks the checkpoint's signature against the signer registry. Each checkpoint yields one
//! [`VerificationResult`] for the entries since the previous checkpoint. Failures are reported
//! once each (status + first failing sequence) and verification **keeps going**: after a broken
//! entry it continues from that entry's recorded hash, after a gap from the sequence found, so one
//! tampered record yields one finding, not a cascade.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::chain::genesis_hash;
use crate::checkpoint::CHECKPOINT_ORIGIN;
use crate::merkle::{CompactRange, Hash};
use crate::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus, VerificationResult,
    VerificationStatus,
};
use crate::signer::ALGORITHM_ECDSA_P256_SHA256;
use crate::trust::SignerRegistry;

/// Roots of pending checkpoints remembered for their late-signed copies.
const MAX_PENDING_ROOTS: usize = 4096;

/// Verification state of one chain (serializable, so the verifier processor can keep it in its
/// changelog-backed state).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainVerifier {
    partition: u32,
    next_seq: u64,
    prev: Hash,
    /// Merkle state; `None` while resynchronising after a gap (until the next checkpoint).
    range: Option<Vec<u8>>,
    range_start_seq: u64,
    range_start_offset: Option<i64>,
    /// tree_size → (root, head, time) of checkpoints seen unsigned.
    pending: BTreeMap<u64, (Hash, Hash, i64)>,
    reported: HashSet<(String, u64)>,
    /// Entries verified (hash + link), for metrics and reports.
    pub entries_verified: u64,
    /// Failures reported.
    pub failures: u64,
    /// Event id and offset of the last entry seen (for results).
    last_entry: Option<(u64, String, i64)>,
}

impl ChainVerifier {
    /// A verifier for chain `partition` from its genesis.
    pub fn new(partition: u32) -> Self {
        ChainVerifier {
            partition,
            next_seq: 0,
            prev: genesis_hash(partition),
            range: Some(CompactRange::new().to_bytes()),
            range_start_seq: 0,
            range_start_offset: None,
            pending: BTreeMap::new(),
            reported: HashSet::new(),
            entries_verified: 0,
            failures: 0,
            last_entry: None,
        }
    }

    /// A verifier that starts after `checkpoint` (whose frontier restores the tree), for
    /// verifying a range without reading the chain from its start. The checkpoint itself must be
    /// verified by the caller (it is fed again, or its signature is checked separately).
    pub fn resume_after(partition: u32, checkpoint: &Checkpoint) -> Result<Self, String> {
        let range = checkpoint.compact_range().map_err(|e| e.to_string())?;
        let mut v = Self::new(partition);
        v.next_seq = checkpoint.tree_size;
        v.prev =
            if checkpoint.tree_size == 0 { genesis_hash(partition) } else { checkpoint.head_hash };
        v.range = Some(range.to_bytes());
        v.range_start_seq = checkpoint.tree_size;
        Ok(v)
    }

    /// Next expected sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn report(
        &mut self,
        out: &mut Vec<VerificationResult>,
        status: VerificationStatus,
        seq: u64,
        event_id: Option<String>,
        offset: i64,
        detail: String,
    ) {
        if !self.reported.insert((status.as_str().to_string(), seq)) {
            return;
        }
        self.failures += 1;
        out.push(VerificationResult {
            partition: self.partition,
            from_seq: seq,
            to_seq: seq,
            from_offset: offset,
            to_offset: offset,
            status,
            first_failing_seq: Some(seq),
            event_id,
            offset: Some(offset),
            detail,
        });
    }

    /// Feeds a record that could not be decoded as a chain record.
    pub fn feed_undecodable(&mut self, offset: i64, error: &str) -> Vec<VerificationResult> {
        let mut out = Vec::new();
        let seq = self.next_seq;
        self.report(
            &mut out,
            VerificationStatus::HashMismatch,
            seq,
            None,
            offset,
            format!("record at offset {offset} is not a valid chain record: {error}"),
        );
        out
    }

    /// Feeds the record at `offset`; returns the results it completes.
    pub fn feed(
        &mut self,
        offset: i64,
        record: &ChainRecord,
        registry: Option<&SignerRegistry>,
    ) -> Vec<VerificationResult> {
        let mut out = Vec::new();
        if record.partition != self.partition {
            self.report(
                &mut out,
                VerificationStatus::HashMismatch,
                self.next_seq,
                None,
                offset,
                format!(
                    "record claims chain {} but sits in partition {}",
                    record.partition, self.partition
                ),
            );
            return out;
        }
        match &record.body {
            ChainRecordBody::Entry(e) => self.entry(&mut out, offset, e),
            ChainRecordBody::Checkpoint(c) => self.checkpoint(&mut out, offset, c, registry),
        }
        out
    }

    fn entry(&mut self, out: &mut Vec<VerificationResult>, offset: i64, e: &ChainEntry) {
        if self.range_start_offset.is_none() {
            self.range_start_offset = Some(offset);
        }
        let id = Some(e.event_id.clone());
        let mut resync = false;
        if e.seq != self.next_seq {
            let detail = if e.seq > self.next_seq {
                format!("sequence jumps from {} to {} (missing entries)", self.next_seq, e.seq)
            } else {
                format!(
                    "sequence goes back from {} to {} (replayed or forged entry)",
                    self.next_seq, e.seq
                )
            };
            let first = self.next_seq.min(e.seq);
            self.report(out, VerificationStatus::Gap, first, id.clone(), offset, detail);
            resync = true;
        } else if e.prev_hash != self.prev {
            self.report(
                out,
                VerificationStatus::HashMismatch,
                e.seq,
                id.clone(),
                offset,
                format!("entry {} does not link to the previous entry hash", e.seq),
            );
            resync = true;
        }
        if e.recomputed_hash() != e.entry_hash {
            self.report(
                out,
                VerificationStatus::HashMismatch,
                e.seq,
                id.clone(),
                offset,
                format!(
                    "entry {} hash does not match its canonical bytes (content changed)",
                    e.seq
                ),
            );
            resync = true;
        } else if !canonical_matches(e) {
            self.report(
                out,
                VerificationStatus::HashMismatch,
                e.seq,
                id.clone(),
                offset,
                format!("entry {} metadata does not match its canonical bytes", e.seq),
            );
        }
        if resync {
            // Continue from what the record claims, and drop the Merkle state until a
            // checkpoint's frontier resynchronises it.
            self.range = None;
        } else if let Some(bytes) = &self.range {
            let mut range = CompactRange::from_bytes(bytes).expect("own serialization");
            if range.append(&e.entry_hash).is_ok() {
                self.range = Some(range.to_bytes());
            }
            self.entries_verified += 1;
        }
        self.next_seq = e.seq + 1;
        self.prev = e.entry_hash;
        self.last_entry = Some((e.seq, e.event_id.clone(), offset));
    }

    fn checkpoint(
        &mut self,
        out: &mut Vec<VerificationResult>,
        offset: i64,
        c: &Checkpoint,
        registry: Option<&SignerRegistry>,
    ) {
        // A late-signed copy of an earlier pending checkpoint.
        if c.tree_size < self.next_seq
            || (c.tree_size == self.next_seq
                && self.pending.contains_key(&c.tree_size)
                && c.status == CheckpointStatus::Signed)
        {
            if let Some((root, head, time)) = self.pending.get(&c.tree_size).copied() {
                if c.status == CheckpointStatus::Signed {
                    if root != c.root || head != c.head_hash || time != c.time_ms {
                        self.report(
                            out,
                            VerificationStatus::HashMismatch,
                            c.tree_size.saturating_sub(1),
                            None,
                            offset,
                            format!(
                                "signed copy of checkpoint {} differs from the pending one",
                                c.tree_size
                            ),
                        );
                        return;
                    }
                    let status = self.signature_status(c, registry);
                    self.pending.remove(&c.tree_size);
                    out.push(self.result(status.0, c.tree_size, offset, status.1));
                }
                return;
            }
            if c.tree_size < self.next_seq {
                // A checkpoint for a size we passed without seeing a pending copy: verify its
                // signature at least (its root cannot be recomputed from here).
                let (status, detail) = self.signature_status(c, registry);
                if status != VerificationStatus::Ok {
                    self.report(out, status, c.tree_size.saturating_sub(1), None, offset, detail);
                }
                return;
            }
        }
        if c.tree_size > self.next_seq {
            let detail = format!(
                "checkpoint covers {} entries but only {} were seen",
                c.tree_size, self.next_seq
            );
            self.report(out, VerificationStatus::Gap, self.next_seq, None, offset, detail);
            self.resync_from(c);
            return;
        }
        // c.tree_size == self.next_seq
        let Some(bytes) = self.range.clone() else {
            // Resynchronising after a reported failure: adopt this checkpoint's tree.
            self.resync_from(c);
            return;
        };
        let range = CompactRange::from_bytes(&bytes).expect("own serialization");
        let head = if c.tree_size == 0 { genesis_hash(self.partition) } else { self.prev };
        if range.root() != c.root || head != c.head_hash {
            let seq = c.tree_size.saturating_sub(1);
            let (id, off) = self.last_event(seq, offset);
            self.report(
                out,
                VerificationStatus::HashMismatch,
                seq,
                id,
                off,
                format!("checkpoint {} root or head does not match the entries", c.tree_size),
            );
            self.resync_from(c);
            return;
        }
        let (status, detail) = match c.status {
            CheckpointStatus::PendingSignature => {
                if self.pending.len() < MAX_PENDING_ROOTS {
                    self.pending.insert(c.tree_size, (c.root, c.head_hash, c.time_ms));
                }
                (VerificationStatus::PendingSignature, "checkpoint not signed yet".to_string())
            }
            CheckpointStatus::Signed => self.signature_status(c, registry),
        };
        let result = self.result(status, c.tree_size, offset, detail);
        if status != VerificationStatus::Ok && status != VerificationStatus::PendingSignature {
            if self.reported.insert((status.as_str().to_string(), c.tree_size.saturating_sub(1))) {
                self.failures += 1;
                out.push(result);
            }
        } else {
            out.push(result);
        }
        self.range_start_seq = c.tree_size;
        self.range_start_offset = None;
    }

    fn resync_from(&mut self, c: &Checkpoint) {
        if let Ok(range) = c.compact_range() {
            self.range = Some(range.to_bytes());
            self.next_seq = c.tree_size;
            self.prev = if c.tree_size == 0 { genesis_hash(self.partition) } else { c.head_hash };
        }
        self.range_start_seq = c.tree_size;
        self.range_start_offset = None;
    }

    fn last_event(&self, seq: u64, offset: i64) -> (Option<String>, i64) {
        match &self.last_entry {
            Some((s, id, off)) if *s == seq => (Some(id.clone()), *off),
            _ => (None, offset),
        }
    }

    fn signature_status(
        &self,
        c: &Checkpoint,
        registry: Option<&SignerRegistry>,
    ) -> (VerificationStatus, String) {
        let (Some(kid), Some(sig)) = (&c.kid, &c.signature) else {
            return (
                VerificationStatus::SignatureInvalid,
                "signed checkpoint without kid or signature".into(),
            );
        };
        let Some(registry) = registry else {
            return (
                VerificationStatus::UnknownSigner,
                format!("no signer registry to check kid {kid}"),
            );
        };
        let body = match c.body(self.partition) {
            Ok(b) => b,
            Err(e) => {
                return (VerificationStatus::SignatureInvalid, format!("checkpoint body: {e}"))
            }
        };
        match registry.verify(kid, ALGORITHM_ECDSA_P256_SHA256, c.time_ms, &body, sig) {
            Ok(_) => (VerificationStatus::Ok, format!("signed by {kid}")),
            // Unknown kid or outside its window: unknown_signer; revoked or a bad signature:
            // signature_invalid (docs/signing.md).
            Err(e) if e.status() == "unknown_signer" => {
                (VerificationStatus::UnknownSigner, e.to_string())
            }
            Err(e) => (VerificationStatus::SignatureInvalid, e.to_string()),
        }
    }

    fn result(
        &self,
        status: VerificationStatus,
        tree_size: u64,
        offset: i64,
        detail: String,
    ) -> VerificationResult {
        let failing =
            !matches!(status, VerificationStatus::Ok | VerificationStatus::PendingSignature);
        VerificationResult {
            partition: self.partition,
            from_seq: self.range_start_seq.min(tree_size),
            to_seq: tree_size.saturating_sub(1),
            from_offset: self.range_start_offset.unwrap_or(offset),
            to_offset: offset,
            status,
            first_failing_seq: failing
                .then(|| self.range_start_seq.min(tree_size.saturating_sub(1))),
            event_id: None,
            offset: failing.then_some(offset),
            detail,
        }
    }

    /// Ends verification of a bounded range: entries after the last checkpoint are not covered
    /// by a signature yet, so they are reported `pending_signature`, as are checkpoints never
    /// signed.
    pub fn finish(&self) -> Vec<VerificationResult> {
        let mut out = Vec::new();
        for size in self.pending.keys() {
            out.push(VerificationResult {
                partition: self.partition,
                from_seq: 0,
                to_seq: size.saturating_sub(1),
                from_offset: -1,
                to_offset: -1,
                status: VerificationStatus::PendingSignature,
                first_failing_seq: None,
                event_id: None,
                offset: None,
                detail: format!("checkpoint {size} is still pending_signature"),
            });
        }
        if self.next_seq > self.range_start_seq {
            out.push(VerificationResult {
                partition: self.partition,
                from_seq: self.range_start_seq,
                to_seq: self.next_seq - 1,
                from_offset: self.range_start_offset.unwrap_or(-1),
                to_offset: self.last_entry.as_ref().map(|(_, _, o)| *o).unwrap_or(-1),
                status: VerificationStatus::PendingSignature,
                first_failing_seq: None,
                event_id: None,
                offset: None,
                detail: "entries after the last checkpoint are not covered by a signature yet"
                    .into(),
            });
        }
        out
    }
}

/// Whether the entry's canonical bytes are canonical (they re-canonicalize to themselves) and
/// its copied metadata (event id, type, time) agrees with them (docs/audit-chain.md §7).
fn canonical_matches(e: &ChainEntry) -> bool {
    let Ok(text) = std::str::from_utf8(&e.canonical) else { return false };
    if crate::canonical::canonicalize_str(text).ok().as_deref() != Some(e.canonical.as_slice()) {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.canonical) else { return false };
    v.get("event_id").and_then(|x| x.as_str()) == Some(e.event_id.as_str())
        && v.get("type").and_then(|x| x.as_str()) == Some(e.event_type.as_str())
        && v.get("occurred_at").and_then(|x| x.as_i64()) == Some(e.occurred_at)
}

/// The origin every checkpoint body names (re-exported for tools).
pub const ORIGIN: &str = CHECKPOINT_ORIGIN;
