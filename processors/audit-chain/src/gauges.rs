//! Gauges of the `audit-chain` processor, read from the processor's own signing queue.
//!
//! ```text
//!   engine ─► PendingSignatures<AuditChain> ─► AuditChain::process / punctuate / on_assign / on_revoke
//!                      │  after each call
//!                      ▼
//!   AuditChain::pending_signatures()  (checkpoints queued for signing, all owned partitions)
//!                      ▼
//!   audit_checkpoints_pending_signature  (gauge, this instance's partitions)
//! ```
//!
//! Why a wrapper: the chain's logic stays free of metrics plumbing; it only answers how many
//! checkpoints wait for a signature. Why the queue and not the emitted records: the queue holds
//! the checkpoints restored `pending_signature` from `audit.chain` when a partition is assigned
//! (a previous owner's outage), which no output of this instance shows until they are signed;
//! and reading it costs nothing per event, where decoding every output to find the checkpoints
//! rebuilt a value tree per entry once entries were written straight to bytes (about 7 % of the
//! engine thread's samples in `perf`).

use evalstream_runtime::error::ProcessError;
use evalstream_runtime::metrics::{Gauge, Metrics};
use evalstream_runtime::processor::{
    CommittedReader, Context, Input, Processor, ResumeHint, State,
};

/// The contract name (CONTRACTS.md, docs/operations.md).
pub const PENDING_GAUGE: &str = "audit_checkpoints_pending_signature";

/// A processor that queues checkpoints for signing.
pub trait PendingQueue {
    /// Checkpoints of the partitions this instance owns that were emitted (or restored)
    /// `pending_signature` and are not signed yet.
    fn pending_signatures(&self) -> usize;
}

/// `audit-chain` (or any processor with a [`PendingQueue`]) with the
/// `audit_checkpoints_pending_signature` gauge kept from its queue.
pub struct PendingSignatures<P> {
    inner: P,
    gauge: Gauge,
}

impl<P: Processor + PendingQueue> PendingSignatures<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, metrics: &Metrics) -> Self {
        let gauge = metrics.gauge(
            PENDING_GAUGE,
            "Checkpoints emitted pending_signature and not yet signed, in this instance's partitions",
        );
        gauge.set(0);
        PendingSignatures { inner, gauge }
    }

    fn publish(&self) {
        let pending = self.inner.pending_signatures();
        self.gauge.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

impl<P: Processor + PendingQueue> Processor for PendingSignatures<P> {
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
        let result = self.inner.process(input, ctx);
        self.publish();
        result
    }

    fn on_assign(
        &mut self,
        partition: i32,
        state: &mut State<'_>,
        reader: &CommittedReader,
    ) -> Result<ResumeHint, ProcessError> {
        let result = self.inner.on_assign(partition, state, reader);
        self.publish();
        result
    }

    fn on_revoke(&mut self, partition: i32) {
        self.inner.on_revoke(partition);
        self.publish();
    }

    fn punctuate_interval(&self) -> Option<std::time::Duration> {
        self.inner.punctuate_interval()
    }

    fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let result = self.inner.punctuate(partition, ctx);
        self.publish();
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use apache_avro::types::Value;
    use evalstream_audit::records::{ChainRecord, ChainRecordBody, CheckpointStatus};
    use evalstream_audit::signer::{SignError, Signer, SignerKind};
    use evalstream_runtime::state::StateView;

    use super::*;
    use crate::{AuditChain, ChainSettings, AUDIT_EVENT_SCHEMA, INPUT};

    /// Signs while `up` is set, else fails as an unreachable KMS would.
    #[derive(Debug)]
    struct Switch {
        up: AtomicBool,
    }

    impl Signer for Switch {
        fn kid(&self) -> &str {
            "test"
        }
        fn kind(&self) -> SignerKind {
            SignerKind::Local
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignError> {
            if self.up.load(Ordering::SeqCst) {
                Ok(vec![0x30, 0x00])
            } else {
                Err(SignError::Unavailable { context: "test".into(), reason: "down".into() })
            }
        }
    }

    fn chain(signer: Option<Arc<dyn Signer>>) -> AuditChain {
        let settings = ChainSettings { checkpoint_every: 2, ..ChainSettings::default() };
        AuditChain::new(settings, signer, None)
    }

    /// Feeds event `i` to partition `partition` and returns the checkpoints emitted, as
    /// `(tree_size, signed)`.
    fn feed(p: &mut PendingSignatures<AuditChain>, partition: i32, i: u64) -> Vec<(u64, bool)> {
        let value = Value::Record(vec![
            ("event_id".into(), Value::String(format!("ev-{i}"))),
            ("type".into(), Value::String("eval.submission_accepted".into())),
            ("actor".into(), Value::String("svc".into())),
            ("subject".into(), Value::String("model".into())),
            ("occurred_at".into(), Value::TimestampMillis(1_790_000_000_000)),
            ("payload".into(), Value::String("{}".into())),
        ]);
        let input = Input::new(INPUT, partition, i as i64, AUDIT_EVENT_SCHEMA, &value);
        let mut state = StateView::new();
        let mut ctx = Context::for_test(&mut state);
        p.process(&input, &mut ctx).unwrap();
        ctx.take_outputs()
            .iter()
            .filter_map(|o| match ChainRecord::from_avro(&o.value().unwrap()).unwrap().body {
                ChainRecordBody::Checkpoint(cp) => {
                    Some((cp.tree_size, cp.status == CheckpointStatus::Signed))
                }
                ChainRecordBody::Entry(_) => None,
            })
            .collect()
    }

    fn gauge(m: &Metrics) -> Option<f64> {
        m.encode().lines().find_map(|l| {
            l.strip_prefix(r#"audit_checkpoints_pending_signature{processor="audit-chain"} "#)?
                .parse()
                .ok()
        })
    }

    #[test]
    fn counts_the_pending_checkpoints_of_the_owned_partitions() {
        let m = Metrics::new("audit-chain");
        let signer = Arc::new(Switch { up: AtomicBool::new(false) });
        let mut p = PendingSignatures::new(chain(Some(signer.clone())), &m);
        assert_eq!(gauge(&m), Some(0.0), "exposed at 0 from the start");
        let mut emitted = Vec::new();
        for i in 0..4 {
            emitted.extend(feed(&mut p, 0, i));
        }
        for i in 10..12 {
            emitted.extend(feed(&mut p, 1, i));
        }
        assert_eq!(emitted, [(2, false), (4, false), (2, false)], "the signer is down");
        assert_eq!(gauge(&m), Some(3.0));
        p.on_revoke(1);
        assert_eq!(gauge(&m), Some(2.0), "a revoked partition is another instance's now");
        // The signer is back but the chain still backs off after its failures: nothing is
        // signed yet, so the count stays (signed checkpoints: the next test).
        signer.up.store(true, Ordering::SeqCst);
        let later = feed(&mut p, 0, 4);
        assert!(later.is_empty(), "no checkpoint is due after one more entry");
        assert_eq!(gauge(&m), Some(2.0));
    }

    #[test]
    fn stays_at_zero_while_every_checkpoint_is_signed() {
        let m = Metrics::new("audit-chain");
        let signer = Arc::new(Switch { up: AtomicBool::new(true) });
        let mut p = PendingSignatures::new(chain(Some(signer)), &m);
        let emitted: Vec<_> = (0..6).flat_map(|i| feed(&mut p, 0, i)).collect();
        assert_eq!(emitted, [(2, true), (4, true), (6, true)]);
        assert_eq!(gauge(&m), Some(0.0));
        let mut unsigned = PendingSignatures::new(chain(None), &Metrics::new("audit-chain"));
        assert_eq!((0..6).flat_map(|i| feed(&mut unsigned, 0, i)).count(), 3);
        assert_eq!(unsigned.inner.pending_signatures(), 3, "no signer: every checkpoint waits");
    }
}
