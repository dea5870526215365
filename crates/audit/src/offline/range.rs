//! Verifying one partition's range: where to start, when to stop, and what to report.
//!
//! ```text
//!  audit.chain[p]:  ... E97 E98 E99 C100 E100 ... E149 │ E150 ... E230 │ E231 ... E249 C250 ...
//!                                    ▲ anchor           │  the range    │                ▲ covering
//!                                    resume_after(C100) │ start .. end  │   (first signed checkpoint
//!                                    (its frontier      │               │    with tree_size > 230)
//!                                     restores the tree)
//! ```
//!
//! A range cannot be verified on its own: its first entry links to the entry before it, and its
//! entries are proven only by a later signed checkpoint whose Merkle root covers them. So the
//! reader starts at the last checkpoint at or before the range start (its frontier restores the
//! Merkle tree, its head hash the link) and stops at the first signed checkpoint that covers the
//! last entry of the range. Every record in between is fed to [`ChainVerifier`]; findings outside
//! the range count too, because the covering checkpoint's root depends on them.
//!
//! **The anchor needs no trust.** A forged anchor (wrong frontier or head) cannot make the range
//! verify: the covering checkpoint's signed root is recomputed from the anchor's frontier plus
//! the entries read, so any change shows as a root mismatch there.
//!
//! **Late-signed copies are not anchors.** A checkpoint left `pending_signature` is emitted again,
//! signed, once the signer is back — after later entries. Resuming from that copy would expect
//! the wrong next sequence number, so a checkpoint qualifies only where it sits in sequence: the
//! entry before it (or, when none is in view, the entry after it) must agree with its tree size.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::offline::bounds::OffsetRange;
use crate::offline::json::ResultJson;
use crate::records::{
    ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus, VerificationResult,
    VerificationStatus,
};
use crate::trust::SignerRegistry;
use crate::verify::ChainVerifier;

/// Entries remembered (sequence → event id, offset) to name the event behind a failure that is
/// detected later, at a checkpoint. Checkpoints come every `checkpoint_every` entries (1000 by
/// default), so this is far more than needed and still bounded.
const REMEMBERED_ENTRIES: usize = 100_000;

/// Indices of the checkpoints in `window` that can anchor a range starting at `start`: at or
/// before `start`, in sequence (see the module doc), latest first. `window` is a stretch of one
/// partition in offset order (`None` for records that did not decode), extending past `start` up
/// to the first entry there if one exists; `from_log_start` says whether it begins at the start
/// of the partition (then a checkpoint with no entry before it qualifies only if it is empty).
pub fn anchor_candidates(
    window: &[(i64, Option<ChainRecord>)],
    start: i64,
    from_log_start: bool,
) -> Vec<usize> {
    let entry_seq = |r: &Option<ChainRecord>| match r {
        Some(ChainRecord { body: ChainRecordBody::Entry(e), .. }) => Some(e.seq),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, (offset, record)) in window.iter().enumerate().rev() {
        if *offset > start {
            continue;
        }
        let Some(ChainRecord { body: ChainRecordBody::Checkpoint(c), .. }) = record else {
            continue;
        };
        let before = window[..i].iter().rev().find_map(|(_, r)| entry_seq(r));
        let after = window[i + 1..].iter().find_map(|(_, r)| entry_seq(r));
        let in_sequence = match (before, after) {
            (Some(seq), _) => seq.checked_add(1) == Some(c.tree_size),
            (None, _) if from_log_start => c.tree_size == 0,
            (None, Some(seq)) => seq == c.tree_size,
            (None, None) => false,
        };
        if in_sequence {
            out.push(i);
        }
    }
    out
}

/// Where the signature over a range came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Covering {
    /// Offset of the covering checkpoint.
    pub offset: i64,
    /// Its tree size.
    pub tree_size: u64,
    /// Its signer key id.
    pub kid: Option<String>,
}

/// The checkpoint a range was resumed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorInfo {
    /// Its offset.
    pub offset: i64,
    /// Its tree size (the first sequence number after it).
    pub tree_size: u64,
    /// `signed` or `pending_signature`.
    pub status: String,
}

/// Overall outcome of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeStatus {
    /// Every entry of the range verified and is covered by a valid signature.
    Ok,
    /// Something does not verify (tampering, corruption, an unknown or invalid signer).
    Failed,
    /// Nothing failed, but part of the range is not covered by a checked signature yet (the
    /// signer was down, the range reaches the newest entries, or signatures were not checked).
    PendingSignature,
}

impl RangeStatus {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeStatus::Ok => "ok",
            RangeStatus::Failed => "failed",
            RangeStatus::PendingSignature => "pending_signature",
        }
    }
}

/// The entries a range held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RangeSummary {
    /// Entries in the range.
    pub entries: u64,
    /// Offset of the first entry in the range.
    pub from_offset: Option<i64>,
    /// Offset of the last entry in the range.
    pub to_offset: Option<i64>,
    /// Sequence number of the first entry.
    pub from_seq: Option<u64>,
    /// Sequence number of the last entry.
    pub to_seq: Option<u64>,
    /// `occurred_at` of the first entry.
    pub from_time_ms: Option<i64>,
    /// `occurred_at` of the last entry.
    pub to_time_ms: Option<i64>,
}

/// What was read to verify a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadSummary {
    /// Records read (anchor and context included).
    pub records: u64,
    /// Offset of the first record read.
    pub from_offset: Option<i64>,
    /// Offset of the last record read.
    pub to_offset: Option<i64>,
    /// The checkpoint the verification was resumed from (`None`: from the chain's genesis).
    pub anchor: Option<AnchorInfo>,
    /// The signed checkpoint that covers the range.
    pub covered_by: Option<Covering>,
}

/// The verification report of one partition's range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// The chain.
    pub partition: u32,
    /// The outcome.
    pub status: RangeStatus,
    /// The offsets that were asked for (`to_offset` inclusive; `None`: to the end).
    pub requested: RequestedRange,
    /// The entries the range held.
    pub range: RangeSummary,
    /// What was read.
    pub read: ReadSummary,
    /// Entries whose hash and link verified (context included).
    pub entries_verified: u64,
    /// Checkpoints whose root and signature verified.
    pub checkpoints_ok: u64,
    /// Whether signatures were checked against a signer registry.
    pub signatures_checked: bool,
    /// Every failure, in the order found.
    pub failures: Vec<ResultJson>,
    /// What is not covered by a signature yet (only when not covered).
    pub pending: Vec<ResultJson>,
    /// The earliest failure (smallest failing sequence number, then offset).
    pub earliest_failure: Option<ResultJson>,
    /// Remarks for the operator (empty range, fallbacks taken).
    pub notes: Vec<String>,
}

/// The requested offsets of a range, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestedRange {
    /// First offset.
    pub from_offset: i64,
    /// Last offset (inclusive), `None` for "to the end".
    pub to_offset: Option<i64>,
}

impl From<OffsetRange> for RequestedRange {
    fn from(r: OffsetRange) -> Self {
        RequestedRange {
            from_offset: r.start,
            to_offset: (r.end != OffsetRange::OPEN).then(|| r.end - 1),
        }
    }
}

/// Whether to keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The range is not finished (or not covered) yet.
    Continue,
    /// The range is read and covered (or provably empty): stop reading.
    Done,
}

fn is_failure(status: VerificationStatus) -> bool {
    !matches!(status, VerificationStatus::Ok | VerificationStatus::PendingSignature)
}

/// Verification of one partition's range, fed record by record in offset order.
#[derive(Debug)]
pub struct RangeCheck {
    partition: u32,
    range: OffsetRange,
    verifier: ChainVerifier,
    signatures_checked: bool,
    failures: Vec<ResultJson>,
    checkpoints_ok: u64,
    summary: RangeSummary,
    read: ReadSummary,
    remembered: BTreeMap<u64, (String, i64)>,
    notes: Vec<String>,
}

impl RangeCheck {
    fn with_verifier(
        partition: u32,
        range: OffsetRange,
        verifier: ChainVerifier,
        signatures_checked: bool,
    ) -> Self {
        RangeCheck {
            partition,
            range,
            verifier,
            signatures_checked,
            failures: Vec::new(),
            checkpoints_ok: 0,
            summary: RangeSummary::default(),
            read: ReadSummary::default(),
            remembered: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Verification from the chain's first entry (no checkpoint before the range). Without a
    /// registry (`signatures_checked` false) signatures are reported as not checked rather than
    /// failed.
    pub fn from_genesis(partition: u32, range: OffsetRange, signatures_checked: bool) -> Self {
        Self::with_verifier(partition, range, ChainVerifier::new(partition), signatures_checked)
    }

    /// Verification resumed after the checkpoint at `offset`. A signed anchor is fed too, so its
    /// signature is checked; a pending one only provides the tree. Fails (with the finding to
    /// report) when the checkpoint's frontier does not reproduce its root.
    pub fn from_anchor(
        partition: u32,
        range: OffsetRange,
        offset: i64,
        anchor: &Checkpoint,
        registry: Option<&SignerRegistry>,
    ) -> Result<Self, Box<VerificationResult>> {
        let verifier = ChainVerifier::resume_after(partition, anchor).map_err(|e| {
            Box::new(VerificationResult {
                partition,
                from_seq: anchor.tree_size.saturating_sub(1),
                to_seq: anchor.tree_size.saturating_sub(1),
                from_offset: offset,
                to_offset: offset,
                status: VerificationStatus::HashMismatch,
                first_failing_seq: Some(anchor.tree_size.saturating_sub(1)),
                event_id: None,
                offset: Some(offset),
                detail: format!(
                    "checkpoint {} at offset {offset}: its frontier does not reproduce its root \
                     ({e})",
                    anchor.tree_size
                ),
            })
        })?;
        let mut check = Self::with_verifier(partition, range, verifier, registry.is_some());
        check.read.anchor = Some(AnchorInfo {
            offset,
            tree_size: anchor.tree_size,
            status: anchor.status.as_str().to_string(),
        });
        check.note_read(offset);
        if anchor.status == CheckpointStatus::Signed {
            let record =
                ChainRecord { partition, body: ChainRecordBody::Checkpoint(anchor.clone()) };
            let results = check.verifier.feed(offset, &record, registry);
            check.absorb(results);
        }
        Ok(check)
    }

    /// Records a finding made outside the verifier (e.g. an unusable anchor candidate).
    pub fn add_failure(&mut self, result: &VerificationResult) {
        self.verifier.failures += 1;
        self.absorb(vec![result.clone()]);
    }

    /// Adds a remark for the report.
    pub fn add_note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The offsets being verified.
    pub fn range(&self) -> OffsetRange {
        self.range
    }

    fn note_read(&mut self, offset: i64) {
        self.read.records += 1;
        self.read.from_offset.get_or_insert(offset);
        self.read.to_offset = Some(offset);
    }

    /// Takes the verifier's results for one record; returns whether they hold an `ok` without
    /// any failure.
    fn absorb(&mut self, results: Vec<VerificationResult>) -> bool {
        let mut ok = false;
        let mut failed = false;
        for r in results {
            if r.status == VerificationStatus::UnknownSigner && !self.signatures_checked {
                // No registry: the signature is simply not checked. Reported by the status
                // (`pending_signature`), not as a failure.
                continue;
            }
            if is_failure(r.status) {
                failed = true;
                let mut json = ResultJson::of(&r);
                if let Some(seq) = r.first_failing_seq {
                    if let Some((id, offset)) = self.remembered.get(&seq) {
                        json.event_id.get_or_insert_with(|| id.clone());
                        if Some(*offset) != r.offset {
                            json.event_offset = Some(*offset);
                        }
                    }
                }
                self.failures.push(json);
            } else if r.status == VerificationStatus::Ok {
                ok = true;
                self.checkpoints_ok += 1;
            }
        }
        ok && !failed
    }

    /// Feeds the record at `offset` (`Err` with the reason when it did not decode as a chain
    /// record). Returns [`Flow::Done`] once the range is read and covered by a signed
    /// checkpoint, so a reader can stop there.
    pub fn feed(
        &mut self,
        offset: i64,
        record: Result<&ChainRecord, &str>,
        registry: Option<&SignerRegistry>,
    ) -> Flow {
        self.note_read(offset);
        let in_range = self.range.contains(offset);
        match record {
            Err(error) => {
                let results = self.verifier.feed_undecodable(offset, error);
                self.absorb(results);
            }
            Ok(record) => {
                if let ChainRecordBody::Entry(e) = &record.body {
                    if self.remembered.len() >= REMEMBERED_ENTRIES {
                        self.remembered.pop_first();
                    }
                    self.remembered.insert(e.seq, (e.event_id.clone(), offset));
                    if in_range {
                        let s = &mut self.summary;
                        s.entries += 1;
                        s.from_offset.get_or_insert(offset);
                        s.from_seq.get_or_insert(e.seq);
                        s.from_time_ms.get_or_insert(e.occurred_at);
                        s.to_offset = Some(offset);
                        s.to_seq = Some(e.seq);
                        s.to_time_ms = Some(e.occurred_at);
                        if self.read.covered_by.as_ref().is_some_and(|c| e.seq >= c.tree_size) {
                            self.read.covered_by = None;
                        }
                    }
                }
                let results = self.verifier.feed(offset, record, registry);
                let clean = self.absorb(results);
                if let ChainRecordBody::Checkpoint(c) = &record.body {
                    let covers = self.summary.to_seq.is_some_and(|last| c.tree_size > last);
                    let signed = c.status == CheckpointStatus::Signed;
                    // Without a registry a signed checkpoint yields no `ok`; its root was still
                    // checked (a mismatch would be a failure).
                    let accepted = clean
                        || (!self.signatures_checked
                            && signed
                            && self.failures.is_empty()
                            && self.verifier.next_seq() >= c.tree_size);
                    if signed && covers && accepted && self.read.covered_by.is_none() {
                        self.read.covered_by =
                            Some(Covering { offset, tree_size: c.tree_size, kid: c.kid.clone() });
                    }
                }
            }
        }
        let covered = self.summary.entries == 0 || self.read.covered_by.is_some();
        if self.range.reached_end(offset) && covered {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    /// The report. Entries of the range not covered by a signed checkpoint are listed as
    /// `pending_signature` (with the checkpoints that never got signed).
    pub fn finish(self) -> PartitionReport {
        let mut pending = Vec::new();
        let covered = self.read.covered_by.is_some();
        if !covered && self.summary.entries > 0 {
            pending = self.verifier.finish().iter().map(ResultJson::of).collect();
            if pending.is_empty() {
                // Covered by a checkpoint whose signature was not checked.
                pending.push(ResultJson {
                    partition: self.partition,
                    status: VerificationStatus::PendingSignature.as_str().to_string(),
                    from_seq: self.summary.from_seq.unwrap_or(0),
                    to_seq: self.summary.to_seq.unwrap_or(0),
                    from_offset: self.summary.from_offset.unwrap_or(-1),
                    to_offset: self.summary.to_offset.unwrap_or(-1),
                    first_failing_seq: None,
                    event_id: None,
                    offset: None,
                    event_offset: None,
                    detail: "no signed checkpoint with a checked signature covers the range".into(),
                });
            }
        }
        let earliest = self
            .failures
            .iter()
            .min_by_key(|f| (f.first_failing_seq.unwrap_or(u64::MAX), f.offset.unwrap_or(i64::MAX)))
            .cloned();
        let status = if !self.failures.is_empty() {
            RangeStatus::Failed
        } else if !pending.is_empty() || (!self.signatures_checked && self.summary.entries > 0) {
            RangeStatus::PendingSignature
        } else {
            RangeStatus::Ok
        };
        let mut notes = self.notes;
        if self.summary.entries == 0 {
            notes.push("the range holds no entries".into());
        }
        if !self.signatures_checked && self.read.records > 0 {
            notes.push("signatures were not checked (no signer registry)".into());
        }
        PartitionReport {
            partition: self.partition,
            status,
            requested: self.range.into(),
            range: self.summary,
            read: self.read,
            entries_verified: self.verifier.entries_verified,
            checkpoints_ok: self.checkpoints_ok,
            signatures_checked: self.signatures_checked,
            failures: self.failures,
            pending,
            earliest_failure: earliest,
            notes,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chain::{AuditEventJson, ChainHead};
    use crate::merkle::CompactRange;
    use crate::records::ChainEntry;
    use crate::signer::{LocalKeySigner, Signer, SignerKind};
    use crate::trust::SignerEntry;

    /// A small chain builder: entries with `occurred_at` one minute apart, checkpoints on demand,
    /// signed with a local key.
    pub(crate) struct Builder {
        pub partition: u32,
        pub head: ChainHead,
        pub range: CompactRange,
        pub hashes: Vec<crate::merkle::Hash>,
        pub last_time: i64,
        pub signer: LocalKeySigner,
        pub records: Vec<(i64, ChainRecord)>,
        next_offset: i64,
    }

    impl Builder {
        pub(crate) fn new(partition: u32) -> Self {
            Builder {
                partition,
                head: ChainHead::genesis(partition),
                range: CompactRange::new(),
                hashes: Vec::new(),
                last_time: 0,
                signer: LocalKeySigner::random().unwrap(),
                records: Vec::new(),
                next_offset: 0,
            }
        }

        pub(crate) fn registry(&self) -> SignerRegistry {
            let mut r = SignerRegistry::new();
            r.add(
                SignerEntry::new(
                    self.signer.kid(),
                    SignerKind::Local,
                    self.signer.public_key_spki_der(),
                    0,
                )
                .unwrap(),
            )
            .unwrap();
            r
        }

        fn push(&mut self, body: ChainRecordBody) {
            let offset = self.next_offset;
            // Every other record is followed by a transaction marker: offsets have gaps.
            self.next_offset += if self.records.len().is_multiple_of(2) { 1 } else { 2 };
            self.records.push((offset, ChainRecord { partition: self.partition, body }));
        }

        pub(crate) fn entry(&mut self) -> ChainEntry {
            let seq = self.head.next_seq;
            let event = AuditEventJson {
                event_id: format!("evt-{}-{seq}", self.partition),
                event_type: "eval.submission_accepted".into(),
                actor: "eval-engine".into(),
                subject: format!("model-{seq}"),
                occurred_at: 1_763_424_000_000 + seq as i64 * 60_000,
                payload: format!(r#"{{"n":{seq}}}"#),
            };
            let canonical = event.canonical_bytes().unwrap();
            let appended = self.head.append(&canonical).unwrap();
            self.range.append(&appended.entry_hash).unwrap();
            self.hashes.push(appended.entry_hash);
            self.last_time = event.occurred_at;
            let e = ChainEntry::new(&appended, &event, canonical, self.partition, seq as i64);
            self.push(ChainRecordBody::Entry(e.clone()));
            e
        }

        pub(crate) fn pending(&mut self) -> Checkpoint {
            let cp = Checkpoint::pending(&self.range, self.head.head_hash, self.last_time);
            self.push(ChainRecordBody::Checkpoint(cp.clone()));
            cp
        }

        pub(crate) fn sign(&self, cp: &Checkpoint) -> Checkpoint {
            let sig = self.signer.sign(&cp.body(self.partition).unwrap()).unwrap();
            cp.clone().with_signature(self.signer.kid().into(), "local".into(), sig)
        }

        pub(crate) fn signed(&mut self) -> Checkpoint {
            let cp = Checkpoint::pending(&self.range, self.head.head_hash, self.last_time);
            let cp = self.sign(&cp);
            self.push(ChainRecordBody::Checkpoint(cp.clone()));
            cp
        }

        pub(crate) fn push_checkpoint(&mut self, cp: Checkpoint) {
            self.push(ChainRecordBody::Checkpoint(cp));
        }

        pub(crate) fn offset_of_seq(&self, seq: u64) -> i64 {
            self.records
                .iter()
                .find(|(_, r)| matches!(&r.body, ChainRecordBody::Entry(e) if e.seq == seq))
                .map(|(o, _)| *o)
                .unwrap()
        }
    }

    /// 50 entries, a signed checkpoint every 10, except that checkpoint 20 is pending at first
    /// and signed after entry 24.
    pub(crate) fn chain() -> Builder {
        let mut b = Builder::new(0);
        let mut late = None;
        for i in 1..=50u64 {
            b.entry();
            if i % 10 == 0 {
                if i == 20 {
                    late = Some(b.pending());
                } else {
                    b.signed();
                }
            }
            if i == 24 {
                let cp = b.sign(late.as_ref().unwrap());
                b.push_checkpoint(cp);
            }
        }
        b
    }

    fn window(b: &Builder) -> Vec<(i64, Option<ChainRecord>)> {
        b.records.iter().map(|(o, r)| (*o, Some(r.clone()))).collect()
    }

    /// Runs a check over the builder's records from the anchor choice on.
    fn check(
        b: &Builder,
        range: OffsetRange,
        registry: Option<&SignerRegistry>,
    ) -> PartitionReport {
        let w = window(b);
        let candidates = anchor_candidates(&w, range.start, true);
        let (mut check, from) = match candidates.first() {
            Some(&i) => {
                let Some(ChainRecord { body: ChainRecordBody::Checkpoint(c), .. }) = &w[i].1 else {
                    unreachable!()
                };
                (RangeCheck::from_anchor(0, range, w[i].0, c, registry).unwrap(), i + 1)
            }
            None => (RangeCheck::from_genesis(0, range, registry.is_some()), 0),
        };
        for (offset, record) in &b.records[from..] {
            if check.feed(*offset, Ok(record), registry) == Flow::Done {
                break;
            }
        }
        check.finish()
    }

    #[test]
    fn anchors_skip_late_signed_copies() {
        let b = chain();
        let w = window(&b);
        let tree_size = |i: usize| match &w[i].1 {
            Some(ChainRecord { body: ChainRecordBody::Checkpoint(c), .. }) => {
                (c.tree_size, c.status)
            }
            _ => unreachable!(),
        };
        // A range starting at entry 26: the late-signed copy of 20 (after entry 24) is the
        // nearest checkpoint, but the pending original of 20 is the anchor.
        let start = b.offset_of_seq(26);
        let c = anchor_candidates(&w, start, true);
        assert_eq!(tree_size(c[0]), (20, CheckpointStatus::PendingSignature));
        assert_eq!(tree_size(c[1]), (10, CheckpointStatus::Signed));
        // Without the entries before it in view, the entry after it decides.
        let i20 = c[0];
        let c = anchor_candidates(&w[i20..], start, false);
        assert_eq!(c, vec![0]);
        // Only a checkpoint in view, nothing to decide with: not an anchor.
        assert!(anchor_candidates(&w[i20..i20 + 1], start, false).is_empty());
        // A range at the very start has no anchor (genesis).
        assert!(anchor_candidates(&w, 0, true).is_empty());
    }

    #[test]
    fn a_mid_log_range_verifies_from_its_anchor_and_stops_at_the_covering_checkpoint() {
        let b = chain();
        let registry = b.registry();
        let range = OffsetRange { start: b.offset_of_seq(26), end: b.offset_of_seq(33) + 1 };
        let report = check(&b, range, Some(&registry));
        assert_eq!(report.status, RangeStatus::Ok, "{report:#?}");
        assert_eq!(report.range.from_seq, Some(26));
        assert_eq!(report.range.to_seq, Some(33));
        assert_eq!(report.range.entries, 8);
        assert_eq!(report.read.anchor.as_ref().unwrap().tree_size, 20);
        assert_eq!(report.read.covered_by.as_ref().unwrap().tree_size, 40);
        // Stopped at the covering checkpoint, not at the end of the log.
        assert_eq!(report.read.to_offset, Some(report.read.covered_by.unwrap().offset));
    }

    #[test]
    fn the_newest_entries_are_pending_and_a_missing_registry_is_not_a_failure() {
        let mut b = chain();
        b.entry();
        b.entry();
        let registry = b.registry();
        let report = check(&b, OffsetRange::ALL, Some(&registry));
        assert_eq!(report.status, RangeStatus::PendingSignature, "{report:#?}");
        assert!(report.failures.is_empty());
        assert_eq!(report.pending.len(), 1);
        assert_eq!((report.pending[0].from_seq, report.pending[0].to_seq), (50, 51));

        let b = chain();
        let report = check(&b, OffsetRange::ALL, None);
        assert_eq!(report.status, RangeStatus::PendingSignature, "{report:#?}");
        assert!(report.failures.is_empty());
        assert!(!report.signatures_checked);
        let report = check(&b, OffsetRange::ALL, Some(&b.registry()));
        assert_eq!(report.status, RangeStatus::Ok, "{report:#?}");
        assert_eq!(report.range.entries, 50);
    }

    #[test]
    fn a_changed_entry_is_named_as_the_earliest_failure() {
        let mut b = chain();
        let offset = b.offset_of_seq(33);
        for (o, r) in &mut b.records {
            if let (true, ChainRecordBody::Entry(e)) = (*o == offset, &mut r.body) {
                e.canonical = e
                    .canonical
                    .clone()
                    .into_iter()
                    .map(|c| if c == b'3' { b'4' } else { c })
                    .collect();
            }
        }
        let registry = b.registry();
        let range = OffsetRange { start: b.offset_of_seq(26), end: OffsetRange::OPEN };
        let report = check(&b, range, Some(&registry));
        assert_eq!(report.status, RangeStatus::Failed);
        let first = report.earliest_failure.unwrap();
        assert_eq!(first.first_failing_seq, Some(33));
        assert_eq!(first.event_id.as_deref(), Some("evt-0-33"));
        assert_eq!(first.offset, Some(offset));
        assert_eq!(first.status, "hash_mismatch");
    }

    #[test]
    fn a_forged_signature_names_the_first_entry_it_leaves_unproven() {
        let mut b = chain();
        let registry = b.registry();
        for (_, r) in &mut b.records {
            if let ChainRecordBody::Checkpoint(c) = &mut r.body {
                if c.tree_size == 40 {
                    c.signature = Some(b.signer.sign(b"something else").unwrap());
                }
            }
        }
        let range = OffsetRange { start: b.offset_of_seq(31), end: b.offset_of_seq(35) + 1 };
        let report = check(&b, range, Some(&registry));
        assert_eq!(report.status, RangeStatus::Failed, "{report:#?}");
        let first = report.earliest_failure.unwrap();
        assert_eq!(first.status, "signature_invalid");
        assert_eq!(first.first_failing_seq, Some(30));
        assert_eq!(first.event_id.as_deref(), Some("evt-0-30"));
        assert_eq!(first.event_offset, Some(b.offset_of_seq(30)));
    }

    #[test]
    fn an_anchor_with_a_bad_frontier_is_a_finding() {
        let b = chain();
        let mut cp = match &b
            .records
            .iter()
            .find(|(_, r)| matches!(&r.body, ChainRecordBody::Checkpoint(c) if c.tree_size == 30))
            .unwrap()
            .1
            .body
        {
            ChainRecordBody::Checkpoint(c) => c.clone(),
            _ => unreachable!(),
        };
        cp.frontier[0][0] ^= 1;
        let err = RangeCheck::from_anchor(0, OffsetRange::ALL, 7, &cp, None).unwrap_err();
        assert_eq!(err.status, VerificationStatus::HashMismatch);
        assert_eq!(err.offset, Some(7));
    }

    #[test]
    fn an_empty_range_is_done_at_once() {
        let b = chain();
        let start = b.offset_of_seq(3);
        let mut check = RangeCheck::from_genesis(0, OffsetRange { start, end: start }, true);
        assert_eq!(check.feed(b.records[0].0, Ok(&b.records[0].1), None), Flow::Continue);
        let report = check.finish();
        assert_eq!(report.status, RangeStatus::Ok);
        assert!(report.notes.iter().any(|n| n.contains("no entries")));
    }
}
