//! The instance's transactional producer: creation (fencing its predecessor), sending one record
//! into the open transaction, and noticing records the broker refuses for what they are.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::{debug, warn};

use super::commit::{retry_txn_call, TXN_TIMEOUT};
use super::failpoint::{FailPoints, Point};
use super::{lock, Core};
use crate::config::RuntimeConfig;
use crate::error::{is_record_specific, RuntimeError};
use crate::headers;
use crate::kafka;
use crate::metrics::Metrics;
use crate::processor::Processor;

/// A record the broker refused for what it is (its size, its format), from a delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejected {
    /// Topic that refused it.
    pub(super) topic: String,
    /// Its `evalstream.source` header: the input it was derived from.
    pub(super) input: Option<String>,
    /// The error.
    pub(super) message: String,
}

/// Records refused since they were last taken, shared with the producer's delivery callback
/// (which runs on the producer's polling thread).
#[derive(Debug, Clone, Default)]
pub(super) struct Rejections(Arc<Mutex<Vec<Rejected>>>);

impl Rejections {
    fn push(&self, r: Rejected) {
        lock(&self.0).push(r);
    }

    /// The first refused record, if any.
    pub(super) fn first(&self) -> Option<Rejected> {
        lock(&self.0).first().cloned()
    }

    /// Takes every refused record.
    pub(super) fn take(&self) -> Vec<Rejected> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// Records handed to the producer and delivery reports received, so that the engine can wait
/// for the last report of a transaction without sleeping. Every record librdkafka accepted gets
/// exactly one report (delivered, refused, timed out or purged by an abort), served on the
/// producer's polling thread, which wakes the waiting engine thread once nothing is left.
///
/// rust-rdkafka's own `flush` cannot do this on a `ThreadedProducer`: its `poll` competes with
/// the polling thread for the reports and sleeps 100 ms whenever it loses (issue 8).
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    /// Records accepted by `send` (counted on the engine thread).
    sent: AtomicU64,
    /// Delivery reports received (counted on the producer's polling thread).
    reported: AtomicU64,
    /// Held by the waiter while it checks the counts, and by a reporter that wakes it, so that
    /// no wake-up falls between the check and the wait. The counts themselves are atomics: two
    /// records per input cross between the threads, and a mutex taken for each one made both
    /// threads queue on it (futex wake-ups on the engine thread's profile).
    wake: Mutex<()>,
    all_reported: Condvar,
}

impl Deliveries {
    /// Counts one record librdkafka accepted.
    pub(super) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts one delivery report; wakes the waiter when it was the last one outstanding, or
    /// when `wake` (a refused record: fail fast).
    fn reported(&self, wake: bool) {
        let reported = self.reported.fetch_add(1, Ordering::SeqCst) + 1;
        if wake || reported >= self.sent.load(Ordering::SeqCst) {
            let _guard = lock(&self.wake);
            self.all_reported.notify_all();
        }
    }

    /// Whether every record counted as sent has its report.
    fn all_in(&self) -> bool {
        self.reported.load(Ordering::SeqCst) >= self.sent.load(Ordering::SeqCst)
    }

    /// Waits until every record sent so far has its delivery report, `stop()` holds (checked
    /// whenever a report wakes the waiter), or `deadline` passes. Returns true when every report
    /// is in. Records are sent on the waiting thread only, so the target does not move while it
    /// waits.
    pub(super) fn wait_all(&self, deadline: Instant, stop: impl Fn() -> bool) -> bool {
        let mut guard = lock(&self.wake);
        loop {
            if self.all_in() {
                return true;
            }
            if stop() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.all_reported.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Producer context: remembers records refused for what they are (a poison output must be
/// dead-lettered, not retried forever), logs other delivery failures (the transaction then
/// fails at commit and is aborted), and counts delivery reports ([`Deliveries`]).
pub(super) struct DeliveryContext {
    rejections: Rejections,
    pub(super) deliveries: Deliveries,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let refused = self.note_failure(result);
        self.deliveries.reported(refused);
    }
}

impl DeliveryContext {
    /// Records or logs a failed delivery; true when the broker refused the record for what it
    /// is.
    fn note_failure(&self, result: &rdkafka::message::DeliveryResult<'_>) -> bool {
        let Err((e, m)) = result else { return false };
        if is_record_specific(e) {
            let input = m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == headers::SOURCE)
                    .and_then(|x| x.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string)
            });
            warn!(topic = m.topic(), partition = m.partition(), ?input, error = %e, "the broker refused a record");
            self.rejections.push(Rejected {
                topic: m.topic().to_string(),
                input,
                message: e.to_string(),
            });
            return true;
        } else if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        ) {
            // Purged by an abort: expected, the transaction is being discarded.
            debug!(topic = m.topic(), error = %e, "delivery purged by an abort");
        } else {
            warn!(topic = m.topic(), partition = m.partition(), error = %e, "delivery failed");
        }
        false
    }
}

/// Creates the transactional producer and initialises transactions. `init_transactions` fences
/// any previous producer with the same `transactional.id` and completes or aborts its pending
/// transaction (KIP-98): after it returns, the log says how that transaction ended.
pub(super) fn new_producer(
    cfg: &RuntimeConfig,
    transactional_id: &str,
    rejections: &Rejections,
) -> Result<ThreadedProducer<DeliveryContext>, RuntimeError> {
    let producer: ThreadedProducer<DeliveryContext> =
        kafka::transactional_producer(cfg, transactional_id)
            .create_with_context(DeliveryContext {
                rejections: rejections.clone(),
                deliveries: Deliveries::default(),
            })
            .map_err(|e| RuntimeError::kafka("create producer", e))?;
    retry_txn_call("init_transactions", || producer.init_transactions(TXN_TIMEOUT))?;
    Ok(producer)
}

/// Fault injection and its metric, shared by the engine thread and the commit thread.
#[derive(Clone)]
pub(super) struct Faults {
    points: Arc<Mutex<FailPoints>>,
    metrics: Arc<Metrics>,
}

impl Faults {
    pub(super) fn new(points: FailPoints, metrics: Arc<Metrics>) -> Self {
        Faults { points: Arc::new(Mutex::new(points)), metrics }
    }

    /// Passes fail point `point`: crashes there if a rule says so, returns true if this call
    /// must fail (and counts the injected fault).
    pub(super) fn at(&self, point: Point) -> bool {
        let fail = lock(&self.points).reach(point);
        if fail {
            self.metrics.fault_injected(point.as_str());
        }
        fail
    }
}

/// One record for the producer: [`Core::send`] produces it now or, while its transaction is
/// not begun, keeps it ([`Deferred`]); [`produce`] sends it. Key and value are borrowed or
/// owned: an owned value (an encoded output, a changelog value) is moved into a deferred
/// record, not copied.
#[derive(Debug)]
pub(super) struct Outgoing<'a> {
    pub(super) topic: Cow<'a, str>,
    pub(super) partition: Option<i32>,
    pub(super) key: Option<Cow<'a, [u8]>>,
    pub(super) value: Option<Cow<'a, [u8]>>,
    pub(super) headers: OwnedHeaders,
    /// The `evalstream.source` of the input the record derives from (`None` for changelog
    /// records and markers): a record the local producer refuses for what it is becomes
    /// [`RuntimeError::OutputRejected`] naming it.
    pub(super) input: Option<Cow<'a, str>>,
}

impl<'a> Outgoing<'a> {
    /// A record to `partition` (or the partitioner's choice) of `topic`, without key or value.
    pub(super) fn to(
        topic: impl Into<Cow<'a, str>>,
        partition: Option<i32>,
        headers: OwnedHeaders,
    ) -> Self {
        Outgoing { topic: topic.into(), partition, key: None, value: None, headers, input: None }
    }

    pub(super) fn key(mut self, key: Option<impl Into<Cow<'a, [u8]>>>) -> Self {
        self.key = key.map(Into::into);
        self
    }

    pub(super) fn value(mut self, value: Option<impl Into<Cow<'a, [u8]>>>) -> Self {
        self.value = value.map(Into::into);
        self
    }

    pub(super) fn input(mut self, input: &'a str) -> Self {
        self.input = Some(Cow::Borrowed(input));
        self
    }

    fn into_owned(self) -> Deferred {
        Outgoing {
            topic: Cow::Owned(self.topic.into_owned()),
            partition: self.partition,
            key: self.key.map(|k| Cow::Owned(k.into_owned())),
            value: self.value.map(|v| Cow::Owned(v.into_owned())),
            headers: self.headers,
            input: self.input.map(|i| Cow::Owned(i.into_owned())),
        }
    }
}

/// A record of a transaction the producer has not begun yet (see `OpenTxn::deferred`).
pub(super) type Deferred = Outgoing<'static>;

/// Produces one record into the producer's open transaction, waiting while the local queue is
/// full.
pub(super) fn produce(
    producer: &ThreadedProducer<DeliveryContext>,
    out: Outgoing<'_>,
) -> Result<(), RuntimeError> {
    let Outgoing { topic, partition, key, value, headers, input } = out;
    let topic: &str = &topic;
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
    if let Some(k) = key.as_deref() {
        record = record.key(k);
    }
    if let Some(v) = value.as_deref() {
        record = record.payload(v);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.context().deliveries.sent();
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) if is_record_specific(&e) => {
                return Err(RuntimeError::OutputRejected {
                    topic: topic.to_string(),
                    input: input.map(Cow::into_owned),
                    message: e.to_string(),
                    local: true,
                })
            }
            Err((e, _)) => return Err(RuntimeError::kafka("produce", e)),
        }
    }
}

/// Waits until every produced record is acknowledged, failing fast when the broker refused one
/// for what it is. It waits on the delivery reports themselves ([`Deliveries`]), which wake it
/// the moment the last one arrives: rust-rdkafka's `flush` on a `ThreadedProducer` sleeps in
/// 100 ms steps instead (its poll competes with the polling thread). `flush_error` is injected
/// here.
pub(super) fn deliver_all(
    producer: &ThreadedProducer<DeliveryContext>,
    rejections: &Rejections,
    faults: &Faults,
) -> Result<(), RuntimeError> {
    if faults.at(Point::FlushError) {
        return Err(RuntimeError::kafka(
            "flush (injected fault)",
            KafkaError::Flush(RDKafkaErrorCode::MessageTimedOut),
        ));
    }
    let deadline = Instant::now() + TXN_TIMEOUT;
    let all = producer.context().deliveries.wait_all(deadline, || rejections.first().is_some());
    if let Some(r) = rejections.first() {
        return Err(RuntimeError::OutputRejected {
            topic: r.topic,
            input: r.input,
            message: r.message,
            local: false,
        });
    }
    // librdkafka frees a batch's records right after their reports: wait for that too, so that
    // `commit_transaction`'s own flush finds nothing in flight and returns at once.
    while all && producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    if !all || producer.in_flight_count() > 0 {
        return Err(RuntimeError::kafka(
            "flush",
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
        ));
    }
    Ok(())
}

impl<P: Processor> Core<P> {
    /// Produces one record in the open transaction ([`produce`]); while that transaction is not
    /// begun yet (the previous one is still committing), keeps it for [`Core::begin_deferred`].
    pub(super) fn send(&mut self, out: Outgoing<'_>) -> Result<(), RuntimeError> {
        if let Some(t) = self.txn.as_mut().filter(|t| !t.begun) {
            t.deferred.push(out.into_owned());
            return Ok(());
        }
        produce(&self.producer, out)
    }

    /// Begins the open transaction if the producer has not yet, and produces the records it
    /// deferred, in order.
    pub(super) fn begin_deferred(&mut self) -> Result<(), RuntimeError> {
        let Some(t) = self.txn.as_mut().filter(|t| !t.begun) else { return Ok(()) };
        retry_txn_call("begin_transaction", || self.producer.begin_transaction())?;
        t.begun = true;
        for d in std::mem::take(&mut t.deferred) {
            produce(&self.producer, d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn wait_all_returns_when_the_last_report_arrives_on_another_thread() {
        let d = Arc::new(Deliveries::default());
        for _ in 0..3 {
            d.sent();
        }
        let reporter = {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(5));
                    d.reported(false);
                }
            })
        };
        // Woken by the third report, long before the deadline.
        assert!(d.wait_all(Instant::now() + LONG, || false));
        assert_eq!((d.sent.load(Ordering::SeqCst), d.reported.load(Ordering::SeqCst)), (3, 3));
        reporter.join().expect("reporter thread");
    }

    #[test]
    fn wait_all_stops_early_when_a_refusal_is_reported() {
        let d = Arc::new(Deliveries::default());
        d.sent();
        d.sent();
        let refused = Arc::new(Mutex::new(false));
        let reporter = {
            let (d, refused) = (Arc::clone(&d), Arc::clone(&refused));
            std::thread::spawn(move || {
                *lock(&refused) = true;
                d.reported(true);
            })
        };
        // One report of two: not all delivered, but the refusal ends the wait.
        assert!(!d.wait_all(Instant::now() + LONG, || *lock(&refused)));
        reporter.join().expect("reporter thread");
    }

    #[test]
    fn wait_all_gives_up_at_the_deadline_and_needs_nothing_when_nothing_was_sent() {
        let d = Deliveries::default();
        assert!(d.wait_all(Instant::now(), || false), "nothing sent: nothing to wait for");
        d.sent();
        assert!(!d.wait_all(Instant::now() + Duration::from_millis(20), || false));
        // A report that arrives before its `sent` is counted (the callback thread can win the
        // race) still balances.
        d.reported(false);
        d.reported(false);
        d.sent();
        assert!(d.wait_all(Instant::now(), || false));
    }
}
