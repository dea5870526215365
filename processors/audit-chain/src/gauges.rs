//! Gauges of the `audit-chain` processor derived from what the processor emits.
//!
//! ```text
//!   engine ─► PendingSignatures<AuditChain> ─► AuditChain::process / punctuate
//!                      │  after each successful call: the checkpoints it emitted
//!                      ▼
//!   pending_signature checkpoint (partition, tree_size) ─► counted
//!   signed checkpoint with the same (partition, tree_size) ─► no longer counted
//!                      ▼
//!   audit_checkpoints_pending_signature  (gauge, this instance's partitions)
//! ```
//!
//! Why a wrapper and not a call inside the processor: the outputs already say everything the
//! gauge needs (a checkpoint is emitted once as `pending_signature` and again, with the same tree
//! size, when it is signed), so the chain's logic stays free of metrics plumbing.
//!
//! Known gap, until the processor exposes its queue: checkpoints left pending by a *previous*
//! owner of a partition (restored from `audit.chain` on assignment) are not counted until this
//! instance emits them again. During an outage that spans a restart, `audit_signing_failures_total`
//! (counted on every failed retry of the oldest pending checkpoint) still reports the outage.

use std::collections::{BTreeSet, HashMap};

use evalstream_audit::records::{ChainRecord, ChainRecordBody, CheckpointStatus};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::metrics::{Gauge, Metrics};
use evalstream_runtime::processor::{
    CommittedReader, Context, Input, Output, Processor, ResumeHint, State,
};

/// The contract name (CONTRACTS.md, docs/operations.md).
pub const PENDING_GAUGE: &str = "audit_checkpoints_pending_signature";

/// `audit-chain` (or any processor emitting chain records to `output`) with the
/// `audit_checkpoints_pending_signature` gauge kept from its outputs.
pub struct PendingSignatures<P> {
    inner: P,
    output: &'static str,
    gauge: Gauge,
    pending: HashMap<i32, BTreeSet<u64>>,
}

impl<P: Processor> PendingSignatures<P> {
    /// Wraps `inner`, whose chain records go to logical topic `output`.
    pub fn new(inner: P, output: &'static str, metrics: &Metrics) -> Self {
        let gauge = metrics.gauge(
            PENDING_GAUGE,
            "Checkpoints emitted pending_signature and not yet signed, in this instance's partitions",
        );
        gauge.set(0);
        PendingSignatures { inner, output, gauge, pending: HashMap::new() }
    }

    fn observe(&mut self, outputs: &[Output]) {
        for out in outputs.iter().filter(|o| o.topic == self.output) {
            // Entries never move the gauge: skip them before decoding (one field lookup instead
            // of conforming and deserializing ~1 KiB per chained event).
            // A record that does not decode is the processor's bug, reported by the verifier; the
            // gauge only follows checkpoints.
            let Ok(value) = out.value() else { continue };
            if ChainRecord::value_is_entry(&value) {
                continue;
            }
            let Ok(record) = ChainRecord::from_avro(&value) else { continue };
            let ChainRecordBody::Checkpoint(cp) = record.body else { continue };
            let set = self.pending.entry(record.partition as i32).or_default();
            match cp.status {
                CheckpointStatus::PendingSignature => {
                    set.insert(cp.tree_size);
                }
                CheckpointStatus::Signed => {
                    set.remove(&cp.tree_size);
                }
            }
        }
        self.publish();
    }

    fn forget(&mut self, partition: i32) {
        self.pending.remove(&partition);
        self.publish();
    }

    fn publish(&self) {
        let total: usize = self.pending.values().map(BTreeSet::len).sum();
        self.gauge.set(i64::try_from(total).unwrap_or(i64::MAX));
    }
}

impl<P: Processor> Processor for PendingSignatures<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn inputs(&self) -> Vec<String> {
        self.inner.inputs()
    }

    fn outputs(&self) -> Vec<String> {
        self.inner.outputs()
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let before = ctx.outputs().len();
        self.inner.process(input, ctx)?;
        self.observe(&ctx.outputs()[before..]);
        Ok(())
    }

    fn on_assign(
        &mut self,
        partition: i32,
        state: &mut State<'_>,
        reader: &CommittedReader,
    ) -> Result<ResumeHint, ProcessError> {
        self.forget(partition);
        self.inner.on_assign(partition, state, reader)
    }

    fn on_revoke(&mut self, partition: i32) {
        self.forget(partition);
        self.inner.on_revoke(partition);
    }

    fn punctuate_interval(&self) -> Option<std::time::Duration> {
        self.inner.punctuate_interval()
    }

    fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let before = ctx.outputs().len();
        self.inner.punctuate(partition, ctx)?;
        self.observe(&ctx.outputs()[before..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evalstream_audit::merkle::CompactRange;
    use evalstream_audit::records::{Checkpoint, CHAIN_RECORD_SCHEMA};

    /// Emits, per input, the checkpoint its value names: `pending N` or `signed N` (tree size N)
    /// on the input's partition, the way `audit-chain` emits them.
    struct Emitter;

    fn checkpoint(size: u64, signed: bool) -> Checkpoint {
        let mut range = CompactRange::new();
        for i in 0..size {
            range.append(&[i as u8; 32]).unwrap();
        }
        let cp = Checkpoint::pending(&range, [7; 32], 0);
        if signed {
            cp.with_signature("kid".into(), "local".into(), vec![1, 2, 3])
        } else {
            cp
        }
    }

    impl Processor for Emitter {
        fn name(&self) -> &str {
            "audit-chain"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["in".into()]
        }
        fn process(
            &mut self,
            input: &Input<'_>,
            ctx: &mut Context<'_>,
        ) -> Result<(), ProcessError> {
            let apache_avro::types::Value::String(what) = input.value()? else {
                return Err(ProcessError::Invalid("test input".into()));
            };
            let (kind, size) = what.split_once(' ').unwrap();
            let body =
                ChainRecordBody::Checkpoint(checkpoint(size.parse().unwrap(), kind == "signed"));
            let record = ChainRecord { partition: input.partition as u32, body };
            ctx.emit(Output::new(
                "audit.chain",
                None,
                CHAIN_RECORD_SCHEMA,
                record.to_avro().unwrap(),
            ));
            // Unrelated outputs are ignored.
            ctx.emit(Output::new("elsewhere", None, "x", apache_avro::types::Value::Null));
            Ok(())
        }
    }

    fn feed(p: &mut PendingSignatures<Emitter>, partition: i32, what: &str) {
        let value = apache_avro::types::Value::String(what.into());
        let input = Input::new("in", partition, 0, "s", &value);
        let mut state = evalstream_runtime::state::StateView::new();
        let mut ctx = Context::for_test(&mut state);
        p.process(&input, &mut ctx).unwrap();
    }

    fn gauge(m: &Metrics) -> Option<f64> {
        m.encode().lines().find_map(|l| {
            l.strip_prefix(r#"audit_checkpoints_pending_signature{processor="audit-chain"} "#)?
                .parse()
                .ok()
        })
    }

    #[test]
    fn counts_pending_checkpoints_until_each_is_signed() {
        let m = Metrics::new("audit-chain");
        let mut p = PendingSignatures::new(Emitter, "audit.chain", &m);
        assert_eq!(gauge(&m), Some(0.0), "exposed at 0 from the start");
        feed(&mut p, 0, "signed 2");
        assert_eq!(gauge(&m), Some(0.0));
        feed(&mut p, 0, "pending 4");
        feed(&mut p, 0, "pending 6");
        feed(&mut p, 1, "pending 6");
        feed(&mut p, 1, "pending 6"); // the same checkpoint again (a replay): counted once
        assert_eq!(gauge(&m), Some(3.0));
        feed(&mut p, 0, "signed 4");
        assert_eq!(gauge(&m), Some(2.0));
        feed(&mut p, 1, "signed 4"); // another partition's tree size does not match
        assert_eq!(gauge(&m), Some(2.0));
        p.on_revoke(1);
        assert_eq!(gauge(&m), Some(1.0), "a revoked partition is another instance's now");
        feed(&mut p, 0, "signed 6");
        assert_eq!(gauge(&m), Some(0.0));
    }
}
