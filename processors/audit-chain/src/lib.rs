//! The `audit-chain` processor: `audit.events` partition `p` → chain `p` on `audit.chain`.
//!
//! ```text
//!  AuditEvent ─► canonical bytes (RFC 8785) ─► duplicate id in window? ── yes ─► skipped
//!                                                   │ no
//!                              ChainHead::append ──► ChainRecord::Entry  ─► audit.chain[p]
//!                              CompactRange::append
//!         every `checkpoint_every` entries, and on idle punctuation:
//!                              Checkpoint (root, head, frontier) ─ sign ─► ChainRecord::Checkpoint
//!                                              signer down? ─► pending_signature, signed later in order
//! ```
//!
//! **Resuming from the outputs.** On assignment, and after every failed transaction (the runtime
//! rebuilds processor memory from the log instead of undoing it), the processor reads the tail of
//! its own `audit.chain` partition through the runtime's committed reader: the last checkpoint
//! (its frontier restores the Merkle tree) plus the entries after it restore the head; the last
//! `dedup_window` entries restore the duplicate filter (read back until the window is full, not
//! a span of offsets); checkpoints still `pending_signature` are queued for signing; and the
//! largest source offset tells the runtime where to resume `audit.events`. "Committed" is the
//! runtime's one definition: `read_committed` on Kafka, and on a broker that shows aborted
//! records only the records whose progress marker commits them, so the chain never links to an
//! aborted entry.
//!
//! **Deduplication.** Upstream producers are often at-least-once. An event whose `event_id` is
//! among the last `dedup_window` entries of its partition is not chained again. Older duplicates
//! are chained (and visible as such to auditors); the window is documented in
//! docs/audit-chain.md.
//!
//! **Signing never stops hashing.** A signer failure leaves the checkpoint `pending_signature`,
//! counts a `SIGNING_FAILURE`, and backs off; later checkpoints and the idle punctuation retry the
//! pending ones oldest first and re-emit them signed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod gauges;
mod registration;

pub use registration::{SignerHealth, REGISTRATION};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{
    CommittedReader, Context, Input, Output, Processor, ResumeHint, State,
};
use evalstream_runtime::reader::PartitionRead;
use tracing::{error, info, warn};

use evalstream_audit::chain::{AuditEventJson, AuditEventRef, ChainHead, AUDIT_EVENT_SCHEMA};
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus, CHAIN_RECORD_SCHEMA,
};
use evalstream_audit::signer::{SignError, Signer};

/// Input topic.
pub const INPUT: &str = evalstream_audit::EVENTS_TOPIC;
/// Output topic.
pub const OUTPUT: &str = evalstream_audit::CHAIN_TOPIC;

/// Settings of the audit-chain processor.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// Emit a checkpoint after this many entries (besides idle checkpoints).
    pub checkpoint_every: u64,
    /// Number of most recent entries per partition whose event ids are deduplicated.
    pub dedup_window: usize,
    /// How often idle punctuation checkpoints uncovered entries and retries pending signatures.
    pub punctuate_every: Duration,
}

impl Default for ChainSettings {
    fn default() -> Self {
        ChainSettings {
            checkpoint_every: 1000,
            dedup_window: 10_000,
            punctuate_every: Duration::from_secs(1),
        }
    }
}

/// Called on every signing failure (the runbook's `SIGNING_FAILURE`): the binary counts it in
/// `audit_signing_failures_total`.
pub type FailureHook = Arc<dyn Fn(&SignError) + Send + Sync>;

/// Per-partition chain state, rebuilt from `audit.chain` on assignment.
#[derive(Debug)]
struct PartitionChain {
    head: ChainHead,
    range: CompactRange,
    last_time: i64,
    since_checkpoint: u64,
    /// The last `dedup_window` chained event ids, oldest first. One shared allocation per id
    /// for both collections: two owned copies per event were ~4 % of the engine thread.
    recent: VecDeque<Arc<str>>,
    /// How many times each id occurs in `recent` (an id older than a window can be chained
    /// again, so it may occur twice).
    recent_count: HashMap<Arc<str>, u32>,
    pending: VecDeque<Checkpoint>,
}

impl PartitionChain {
    fn genesis(partition: u32) -> Self {
        PartitionChain {
            head: ChainHead::genesis(partition),
            range: CompactRange::new(),
            last_time: 0,
            since_checkpoint: 0,
            recent: VecDeque::new(),
            recent_count: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn remember(&mut self, event_id: &str, window: usize) {
        if window == 0 {
            return;
        }
        let id: Arc<str> = Arc::from(event_id);
        *self.recent_count.entry(Arc::clone(&id)).or_default() += 1;
        self.recent.push_back(id);
        while self.recent.len() > window {
            let Some(old) = self.recent.pop_front() else { break };
            if let Some(n) = self.recent_count.get_mut(&*old) {
                *n -= 1;
                if *n == 0 {
                    self.recent_count.remove(&*old);
                }
            }
        }
    }

    /// Whether `event_id` is among the last `dedup_window` entries.
    fn seen(&self, event_id: &str) -> bool {
        self.recent_count.contains_key(event_id)
    }
}

/// The audit-chain processor.
pub struct AuditChain {
    settings: ChainSettings,
    signer: Option<Arc<dyn Signer>>,
    on_failure: Option<FailureHook>,
    chains: HashMap<i32, PartitionChain>,
    /// After a transient signing failure, no signing attempt before this instant.
    sign_paused_until: Option<Instant>,
    sign_backoff: Duration,
}

impl AuditChain {
    /// A processor signing with `signer` (`None`: every checkpoint stays `pending_signature`).
    pub fn new(
        settings: ChainSettings,
        signer: Option<Arc<dyn Signer>>,
        on_failure: Option<FailureHook>,
    ) -> Self {
        AuditChain {
            settings,
            signer,
            on_failure,
            chains: HashMap::new(),
            sign_paused_until: None,
            sign_backoff: Duration::ZERO,
        }
    }

    fn chain(&mut self, partition: i32) -> &mut PartitionChain {
        self.chains.entry(partition).or_insert_with(|| PartitionChain::genesis(partition as u32))
    }

    /// Tries to sign `cp` of chain `partition`; `None` if the signer is missing, paused or failed.
    fn try_sign(&mut self, partition: i32, cp: &Checkpoint) -> Option<Checkpoint> {
        let signer = self.signer.clone()?;
        if self.sign_paused_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let body = match cp.body(partition as u32) {
            Ok(b) => b,
            Err(e) => {
                error!(partition, error = %e, "cannot build checkpoint body");
                return None;
            }
        };
        match signer.sign(&body) {
            Ok(sig) => {
                self.sign_paused_until = None;
                self.sign_backoff = Duration::ZERO;
                Some(cp.clone().with_signature(
                    signer.kid().to_string(),
                    signer.kind().as_str().to_string(),
                    sig,
                ))
            }
            Err(e) => {
                // The runbook's symptom string, so existing log alerts keep working.
                error!(partition, tree_size = cp.tree_size, error = %e, "SIGNING_FAILURE: KMS Sign failed; checkpoint left pending_signature");
                if let Some(hook) = &self.on_failure {
                    hook(&e);
                }
                self.sign_backoff = (self.sign_backoff * 2)
                    .clamp(Duration::from_millis(500), Duration::from_secs(30));
                self.sign_paused_until = Some(Instant::now() + self.sign_backoff);
                None
            }
        }
    }

    /// Signs pending checkpoints of `partition` oldest first, emitting each signed version;
    /// stops at the first failure so they are signed in order.
    fn sign_pending(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        while let Some(cp) = self.chain(partition).pending.front().cloned() {
            match self.try_sign(partition, &cp) {
                Some(signed) => {
                    info!(partition, tree_size = signed.tree_size, "pending checkpoint signed");
                    emit(ctx, partition, ChainRecordBody::Checkpoint(signed), None)?;
                    self.chain(partition).pending.pop_front();
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Emits a checkpoint over everything chained so far in `partition`.
    fn checkpoint(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        self.sign_pending(partition, ctx)?;
        let chain = self.chain(partition);
        let cp = Checkpoint::pending(&chain.range, chain.head.head_hash, chain.last_time);
        chain.since_checkpoint = 0;
        let pending_before = !chain.pending.is_empty();
        let signed = if pending_before { None } else { self.try_sign(partition, &cp) };
        match signed {
            Some(s) => emit(ctx, partition, ChainRecordBody::Checkpoint(s), None),
            None => {
                self.chain(partition).pending.push_back(cp.clone());
                emit(ctx, partition, ChainRecordBody::Checkpoint(cp), None)
            }
        }
    }
}

fn emit(
    ctx: &mut Context<'_>,
    partition: i32,
    body: ChainRecordBody,
    key: Option<Vec<u8>>,
) -> Result<(), ProcessError> {
    let record = ChainRecord { partition: partition as u32, body };
    let value = record
        .to_avro()
        .map_err(|e| ProcessError::Fatal(format!("chain record does not encode: {e}")))?;
    ctx.emit(Output::new(OUTPUT, key, CHAIN_RECORD_SCHEMA, value).with_partition(partition));
    Ok(())
}

impl Processor for AuditChain {
    fn name(&self) -> &str {
        "audit-chain"
    }

    fn inputs(&self) -> Vec<String> {
        vec![INPUT.to_string()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![OUTPUT.to_string()]
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        if input.schema != AUDIT_EVENT_SCHEMA {
            return Err(ProcessError::Invalid(format!(
                "expected {AUDIT_EVENT_SCHEMA}, got {}",
                input.schema
            )));
        }
        // The event's strings, borrowed: the payload is copied only into the canonical bytes.
        // Straight from the record's bytes when the runtime can read them so; otherwise from
        // the decoded value, and any other shape takes the strict path, which accepts it or
        // says why not.
        let owned;
        let event = match input.decode_borrowed::<AuditEventRef>() {
            Some(Ok(event)) => event,
            _ => {
                let value = input.value()?;
                match AuditEventRef::from_decoded(value) {
                    Some(event) => event,
                    None => {
                        owned = AuditEventJson::from_avro(value)
                            .map_err(|e| ProcessError::Invalid(format!("audit event: {e}")))?;
                        owned.as_ref()
                    }
                }
            }
        };
        let canonical = event
            .canonical_bytes()
            .map_err(|e| ProcessError::Invalid(format!("canonical form: {e}")))?;
        let window = self.settings.dedup_window;
        let every = self.settings.checkpoint_every;
        let partition = input.partition;
        let chain = self.chain(partition);
        if chain.seen(event.event_id) {
            // At-least-once upstream: the same event again. Chaining it twice would make the
            // audit trail claim it happened twice.
            return Ok(());
        }
        let appended = chain
            .head
            .append(&canonical)
            .map_err(|e| ProcessError::Fatal(format!("chain {partition}: {e}")))?;
        chain
            .range
            .append(&appended.entry_hash)
            .map_err(|e| ProcessError::Fatal(format!("merkle {partition}: {e}")))?;
        chain.last_time = event.occurred_at;
        chain.since_checkpoint += 1;
        chain.remember(event.event_id, window);
        let due = chain.since_checkpoint >= every;
        let entry =
            ChainEntry::of_event(&appended, event, canonical, partition as u32, input.offset);
        let record = ChainRecord::entry_record(partition as u32, entry)
            .map_err(|e| ProcessError::Fatal(format!("chain record does not encode: {e}")))?;
        ctx.emit(Output::record(OUTPUT, event.event_id, &record)?.with_partition(partition));
        if due {
            self.checkpoint(partition, ctx)?;
        }
        Ok(())
    }

    fn punctuate_interval(&self) -> Option<Duration> {
        Some(self.settings.punctuate_every)
    }

    fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        if !self.chains.contains_key(&partition) {
            return Ok(());
        }
        if self.chain(partition).since_checkpoint > 0 {
            // Idle: cover what was chained since the last checkpoint, so a quiet partition's
            // newest entries are signed within about a second.
            self.checkpoint(partition, ctx)
        } else {
            self.sign_pending(partition, ctx)
        }
    }

    fn on_revoke(&mut self, partition: i32) {
        self.chains.remove(&partition);
    }

    fn on_assign(
        &mut self,
        partition: i32,
        _state: &mut State<'_>,
        reader: &CommittedReader,
    ) -> Result<ResumeHint, ProcessError> {
        let (chain, next_offset) = restore_tail(partition, &self.settings, reader)?;
        info!(
            partition,
            next_seq = chain.head.next_seq,
            pending = chain.pending.len(),
            ?next_offset,
            "audit chain resumed from the tail of audit.chain"
        );
        self.chains.insert(partition, chain);
        let mut hint = ResumeHint::new();
        if let Some(next) = next_offset {
            hint.insert(INPUT.to_string(), next);
        }
        Ok(hint)
    }
}

/// Checkpoints queued for signing in the partitions this instance owns (restored ones
/// included): what `audit_checkpoints_pending_signature` reports.
impl gauges::PendingQueue for AuditChain {
    fn pending_signatures(&self) -> usize {
        self.chains.values().map(|c| c.pending.len()).sum()
    }
}

/// The committed records of one `audit.chain` partition, as the restore reads them.
trait ChainLog {
    /// `(log start, end)` offsets of the partition.
    fn bounds(&self, partition: i32) -> Result<(i64, i64), ProcessError>;
    /// The chain records of `partition` in `[from, until)` (`until` `None`: to the end), in
    /// offset order.
    fn read(
        &self,
        partition: i32,
        from: i64,
        until: Option<i64>,
    ) -> Result<Vec<(i64, ChainRecord)>, ProcessError>;
}

impl ChainLog for CommittedReader {
    fn bounds(&self, partition: i32) -> Result<(i64, i64), ProcessError> {
        self.watermarks(OUTPUT, partition).map_err(|e| ProcessError::Fatal(e.to_string()))
    }

    fn read(
        &self,
        partition: i32,
        from: i64,
        until: Option<i64>,
    ) -> Result<Vec<(i64, ChainRecord)>, ProcessError> {
        let mut out = Vec::new();
        let mut bad = 0usize;
        self.scan_range(OUTPUT, PartitionRead { partition, from, until }, |r| {
            match r.value.as_deref().map(|v| ChainRecord::decode(self.codec(), v)) {
                Some(Ok(rec)) if rec.partition == partition as u32 => out.push((r.offset, rec)),
                _ => bad += 1,
            }
            true
        })
        .map_err(|e| ProcessError::Fatal(e.to_string()))?;
        if bad > 0 {
            warn!(partition, bad, "audit.chain tail has records that are not chain records of this partition; ignored (the verifier reports them)");
        }
        Ok(out)
    }
}

/// Rebuilds a partition's chain state from the tail of `audit.chain` and returns the next
/// `audit.events` offset the tail proves.
///
/// Reads back from the end in growing chunks until what was read holds the deduplication window
/// (`dedup_window` entries) and a checkpoint (its frontier restores the Merkle tree), or the log
/// starts. The window is counted in entries, not offsets: checkpoints and transaction markers
/// take offsets too, so a span of offsets would restore a smaller window after every restart.
fn restore_tail(
    partition: i32,
    settings: &ChainSettings,
    log: &impl ChainLog,
) -> Result<(PartitionChain, Option<i64>), ProcessError> {
    let (low, end) = log.bounds(partition)?;
    // A first guess: about two offsets per entry plus the checkpoints between them.
    let mut span = 2 * (settings.dedup_window as i64 + settings.checkpoint_every as i64) + 64;
    let mut from = end.saturating_sub(span).max(low);
    // The first chunk reads to the true end (waiting for open transactions); earlier chunks
    // are bounded by where the previous one started.
    let mut records = log.read(partition, from, None)?;
    loop {
        let entries =
            records.iter().filter(|(_, r)| matches!(r.body, ChainRecordBody::Entry(_))).count();
        let checkpoint =
            records.iter().any(|(_, r)| matches!(r.body, ChainRecordBody::Checkpoint(_)));
        if from <= low || (entries >= settings.dedup_window && checkpoint) {
            break;
        }
        span = span.saturating_mul(2);
        let earlier_from = from.saturating_sub(span).max(low);
        let mut earlier = log.read(partition, earlier_from, Some(from))?;
        earlier.append(&mut records);
        records = earlier;
        from = earlier_from;
    }
    let last_cp =
        records.iter().rposition(|(_, r)| matches!(r.body, ChainRecordBody::Checkpoint(_)));
    Ok(rebuild(partition, settings, &records, last_cp))
}

fn rebuild(
    partition: i32,
    settings: &ChainSettings,
    records: &[(i64, ChainRecord)],
    last_cp: Option<usize>,
) -> (PartitionChain, Option<i64>) {
    let mut chain = PartitionChain::genesis(partition as u32);
    let mut start = 0;
    let mut covered_by_cp = 0;
    // The last checkpoint: the largest tree size seen (a late-signed pending checkpoint can
    // come after a newer one).
    let best = records
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| match &r.body {
            ChainRecordBody::Checkpoint(c) => Some((i, c)),
            _ => None,
        })
        .max_by_key(|(i, c)| (c.tree_size, *i));
    if let (Some(_), Some((idx, cp))) = (last_cp, best) {
        match cp.compact_range() {
            Ok(range) => {
                chain.range = range;
                chain.head.next_seq = cp.tree_size;
                chain.head.head_hash = cp.head_hash;
                chain.last_time = cp.time_ms;
                covered_by_cp = cp.tree_size;
                start = idx + 1;
                // Entries of the tree that were written after this checkpoint record in log
                // order cannot exist (a checkpoint covers everything before it), but a
                // late-signed copy may sit after newer entries: scan all entries by seq.
                start = start.min(
                    records
                        .iter()
                        .position(|(_, r)| matches!(&r.body, ChainRecordBody::Entry(e) if e.seq >= cp.tree_size))
                        .unwrap_or(start),
                );
            }
            Err(e) => {
                error!(partition, error = %e, "last checkpoint's frontier does not match its root; rebuilding from the partition start is required");
            }
        }
    }
    let mut next_offset: Option<i64> = None;
    for (_, r) in &records[start..] {
        if let ChainRecordBody::Entry(e) = &r.body {
            if e.seq < chain.head.next_seq {
                continue;
            }
            if e.seq > chain.head.next_seq {
                warn!(
                    partition,
                    expected = chain.head.next_seq,
                    found = e.seq,
                    "gap in audit.chain tail; continuing after it"
                );
            }
            chain.head.next_seq = e.seq + 1;
            chain.head.head_hash = e.entry_hash;
            if chain.range.append(&e.entry_hash).is_err() {
                error!(partition, "merkle range overflow while restoring");
            }
            chain.last_time = e.occurred_at;
        }
    }
    chain.since_checkpoint = chain.head.next_seq.saturating_sub(covered_by_cp);
    // Deduplication window and resume offset from every entry read.
    let mut signed: HashSet<u64> = HashSet::new();
    for (_, r) in records {
        match &r.body {
            ChainRecordBody::Entry(e) => {
                chain.remember(&e.event_id, settings.dedup_window);
                if e.source_partition == partition as u32 {
                    next_offset = Some(next_offset.unwrap_or(0).max(e.source_offset + 1));
                }
            }
            ChainRecordBody::Checkpoint(c) if c.status == CheckpointStatus::Signed => {
                signed.insert(c.tree_size);
            }
            _ => {}
        }
    }
    for (_, r) in records {
        if let ChainRecordBody::Checkpoint(c) = &r.body {
            if c.status == CheckpointStatus::PendingSignature
                && !signed.contains(&c.tree_size)
                && !chain.pending.iter().any(|p| p.tree_size == c.tree_size)
            {
                chain.pending.push_back(c.clone());
            }
        }
    }
    (chain, next_offset)
}

/// The Avro value of an `audit.emergency_signer` audit event, recorded when the emergency
/// signing proxy is chosen (the runbook: "record audit event audit/emergency_signer").
pub fn emergency_signer_event(event_id: &str, actor: &str, detail: &str, at_ms: i64) -> Value {
    let payload = serde_json::json!({
        "signer": detail,
        "reason": "SIGNING_PROXY_URL set with REQUIRE_KMS=false",
    });
    Value::Record(vec![
        ("event_id".into(), Value::String(event_id.to_string())),
        ("type".into(), Value::String("audit.emergency_signer".into())),
        ("actor".into(), Value::String(actor.to_string())),
        ("subject".into(), Value::String("audit-chain".into())),
        ("occurred_at".into(), Value::TimestampMillis(at_ms)),
        ("payload".into(), Value::String(payload.to_string())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gauges::PendingQueue;
    use evalstream_runtime::state::StateView;

    /// An in-memory `audit.chain` partition: records at increasing offsets with `gap` offsets
    /// after each entry, as transaction markers take offsets in a real log.
    struct FakeLog {
        records: Vec<(i64, ChainRecord)>,
        end: i64,
    }

    impl ChainLog for FakeLog {
        fn bounds(&self, _: i32) -> Result<(i64, i64), ProcessError> {
            Ok((0, self.end))
        }
        fn read(
            &self,
            _: i32,
            from: i64,
            until: Option<i64>,
        ) -> Result<Vec<(i64, ChainRecord)>, ProcessError> {
            Ok(self
                .records
                .iter()
                .filter(|(o, _)| *o >= from && until.is_none_or(|u| *o < u))
                .cloned()
                .collect())
        }
    }

    fn event(i: u64) -> Value {
        Value::Record(vec![
            ("event_id".into(), Value::String(format!("ev-{i}"))),
            ("type".into(), Value::String("eval.submission_accepted".into())),
            ("actor".into(), Value::String("svc".into())),
            ("subject".into(), Value::String(format!("model-{}", i % 7))),
            ("occurred_at".into(), Value::TimestampMillis(1_790_000_000_000 + i as i64)),
            ("payload".into(), Value::String(format!("{{\"n\":{i}}}"))),
        ])
    }

    /// Events read straight from their bytes (`Input::decode_borrowed`, as the engine hands
    /// them over) chain exactly what the decoded values chain, awkward strings included.
    #[test]
    fn events_read_from_bytes_chain_as_decoded_values() {
        let codec = evalstream_runtime::testkit::codec();
        let settings = ChainSettings { checkpoint_every: 100, ..ChainSettings::default() };
        let mut by_value = AuditChain::new(settings.clone(), None, None);
        let mut by_bytes = AuditChain::new(settings, None, None);
        let (mut from_value, mut from_bytes) = (Vec::new(), Vec::new());
        for i in 0..1200u64 {
            let mut value = event(i);
            if let Value::Record(fields) = &mut value {
                fields[2].1 = Value::String(format!("act\u{2028}or-{i}-\"é\\\u{1f600}"));
                fields[5].1 =
                    Value::String(format!(r#"{{"z":[{i},1e3,"\u00e9"],"a":"\ud83d\ude00"}}"#));
            }
            let bytes = codec.encode(INPUT, AUDIT_EVENT_SCHEMA, &value).unwrap();
            let framed = codec.frame(&bytes).unwrap();
            let borrowed = Input::framed(INPUT, 0, i as i64, &framed);
            assert!(
                matches!(borrowed.decode_borrowed::<AuditEventRef>(), Some(Ok(_))),
                "read straight from the bytes"
            );
            for (chain, input, out) in [
                (
                    &mut by_value,
                    Input::new(INPUT, 0, i as i64, AUDIT_EVENT_SCHEMA, &value),
                    &mut from_value,
                ),
                (&mut by_bytes, borrowed, &mut from_bytes),
            ] {
                let mut state = StateView::new();
                let mut ctx = Context::for_test(&mut state);
                chain.process(&input, &mut ctx).expect("processes");
                out.extend(ctx.take_outputs().iter().map(|o| o.encode(codec, "t").unwrap()));
            }
        }
        assert!(from_value.len() > 1200, "entries and checkpoints");
        assert_eq!(from_bytes, from_value);
    }

    /// Feeds `event(i)` for `ids` through `chain` (partition 0, input offset = i) and returns the
    /// outputs as chain records.
    fn feed(chain: &mut AuditChain, ids: impl Iterator<Item = u64>) -> Vec<ChainRecord> {
        let mut out = Vec::new();
        for i in ids {
            let mut state = StateView::new();
            let mut ctx = Context::for_test(&mut state);
            let value = event(i);
            let input = Input::new(INPUT, 0, i as i64, AUDIT_EVENT_SCHEMA, &value);
            chain.process(&input, &mut ctx).expect("processes");
            for o in ctx.take_outputs() {
                out.push(ChainRecord::from_avro(&o.value().unwrap()).expect("a chain record"));
            }
        }
        out
    }

    fn log_of(records: Vec<ChainRecord>, gap: i64) -> FakeLog {
        let mut offset = 0;
        let mut out = Vec::new();
        for r in records {
            let is_entry = matches!(r.body, ChainRecordBody::Entry(_));
            out.push((offset, r));
            offset += 1 + if is_entry { gap } else { 0 };
        }
        FakeLog { records: out, end: offset }
    }

    /// Defect 8: the deduplication window restored after a restart must hold `dedup_window`
    /// entries, however many offsets (checkpoints, transaction markers) lie between them.
    #[test]
    fn the_restored_dedup_window_holds_dedup_window_entries() {
        let settings = ChainSettings {
            checkpoint_every: 1000,
            dedup_window: 2000,
            punctuate_every: Duration::from_secs(1),
        };
        let mut chain = AuditChain::new(settings.clone(), None, None);
        let log = log_of(feed(&mut chain, 0..3000), 2);
        let (restored, next) = restore_tail(0, &settings, &log).expect("restores");
        assert_eq!(next, Some(3000));
        assert_eq!(restored.head.next_seq, 3000);
        let mut resumed = AuditChain::new(settings, None, None);
        resumed.chains.insert(0, restored);
        // ev-1100 is 1900 entries back: inside the window, so a duplicate of it is not chained.
        let again = feed(&mut resumed, [1100].into_iter());
        assert!(again.is_empty(), "a duplicate inside the window was chained again");
        // ev-900 is 2100 entries back: outside the window, chained again (documented).
        assert_eq!(feed(&mut resumed, [900].into_iter()).len(), 1);
    }

    /// Checkpoints a previous owner left `pending_signature` are in the restored signing queue,
    /// which `audit_checkpoints_pending_signature` reports (gauges.rs), before this instance
    /// emits anything.
    #[test]
    fn checkpoints_left_pending_are_queued_again_on_restore() {
        let settings = ChainSettings { checkpoint_every: 100, ..ChainSettings::default() };
        let mut unsigned = AuditChain::new(settings.clone(), None, None);
        let records = feed(&mut unsigned, 0..350);
        let pending = records
            .iter()
            .filter(|r| {
                matches!(&r.body, ChainRecordBody::Checkpoint(cp)
                    if cp.status == CheckpointStatus::PendingSignature)
            })
            .count();
        assert_eq!(pending, 3, "no signer: every checkpoint waits");
        assert_eq!(unsigned.pending_signatures(), 3);
        let (restored, _) = restore_tail(0, &settings, &log_of(records, 2)).expect("restores");
        let mut next_owner = AuditChain::new(settings, None, None);
        assert_eq!(next_owner.pending_signatures(), 0);
        next_owner.chains.insert(0, restored);
        assert_eq!(next_owner.pending_signatures(), 3);
    }
}
