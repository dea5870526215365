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
//! **Resuming from the outputs.** On assignment the processor reads the tail of its own
//! `audit.chain` partition: the last checkpoint (its frontier restores the Merkle tree) plus the
//! entries after it restore the head; the last window of entries restores the duplicate filter;
//! checkpoints still `pending_signature` are queued for signing; and the largest source offset
//! tells the runtime where to resume `audit.events`. Because the chain is rebuilt from what is
//! visible in `audit.chain`, it stays a single linear chain even on a broker that exposes
//! aborted records: whatever a reader sees is what the next entry links to.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{
    Context, Input, Output, Processor, ResumeHint, State, TopicReader,
};
use tracing::{error, info, warn};

use evalstream_audit::chain::{AuditEventJson, ChainHead, AUDIT_EVENT_SCHEMA};
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
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
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
            recent_set: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    fn remember(&mut self, event_id: &str, window: usize) {
        if window == 0 {
            return;
        }
        self.recent.push_back(event_id.to_string());
        self.recent_set.insert(event_id.to_string());
        while self.recent.len() > window {
            if let Some(old) = self.recent.pop_front() {
                // The same id may be in the window twice only if it was chained twice (older
                // than a previous window); keep it while any copy remains.
                if !self.recent.contains(&old) {
                    self.recent_set.remove(&old);
                }
            }
        }
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
        let event = AuditEventJson::from_avro(input.value)
            .map_err(|e| ProcessError::Invalid(format!("audit event: {e}")))?;
        let canonical = event
            .canonical_bytes()
            .map_err(|e| ProcessError::Invalid(format!("canonical form: {e}")))?;
        let window = self.settings.dedup_window;
        let every = self.settings.checkpoint_every;
        let partition = input.partition;
        let chain = self.chain(partition);
        if chain.recent_set.contains(&event.event_id) {
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
        chain.remember(&event.event_id, window);
        let due = chain.since_checkpoint >= every;
        let entry = ChainEntry::new(&appended, &event, canonical, partition as u32, input.offset);
        emit(ctx, partition, ChainRecordBody::Entry(entry), Some(event.event_id.into_bytes()))?;
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
        reader: &TopicReader<'_>,
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

/// Rebuilds a partition's chain state from the tail of `audit.chain` and returns the next
/// `audit.events` offset the tail proves.
fn restore_tail(
    partition: i32,
    settings: &ChainSettings,
    reader: &TopicReader<'_>,
) -> Result<(PartitionChain, Option<i64>), ProcessError> {
    let kafka = |e: evalstream_runtime::error::RuntimeError| ProcessError::Fatal(e.to_string());
    let (low, high) = reader.watermarks(OUTPUT, partition).map_err(kafka)?;
    // Enough to find the last checkpoint (one every `checkpoint_every` entries at most, more
    // often when idle) and the deduplication window; fall back to the whole partition.
    let span = (settings.dedup_window as i64) + 2 * (settings.checkpoint_every as i64) + 1024;
    let mut from = (high - span).max(low);
    loop {
        let records = read_chain(reader, partition, from)?;
        let last_cp =
            records.iter().rposition(|(_, r)| matches!(r.body, ChainRecordBody::Checkpoint(_)));
        if last_cp.is_none() && from > low {
            from = low;
            continue;
        }
        return Ok(rebuild(partition, settings, &records, last_cp));
    }
}

fn read_chain(
    reader: &TopicReader<'_>,
    partition: i32,
    from: i64,
) -> Result<Vec<(i64, ChainRecord)>, ProcessError> {
    let mut out = Vec::new();
    let mut bad = 0usize;
    reader
        .scan(OUTPUT, partition, from, |r| {
            match r.value.as_deref().map(|v| ChainRecord::decode(reader.codec(), v)) {
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
