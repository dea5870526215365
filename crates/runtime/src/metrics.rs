//! Prometheus metrics of the runtime and of the processors running on it.
//!
//! ```text
//!   engine thread ──record_in / txn_committed / set_lag …──► Metrics (atomics, no await)
//!   processor     ──Metrics::counter("eval_engine.…")──────►    │  one Registry behind a Mutex
//!                                                               ▼
//!   ops server  GET /metrics ──────────────────────────► Metrics::encode() (OpenMetrics text)
//! ```
//!
//! Why it looks like this:
//!
//! * **Fixed label sets.** Every series carries `processor` (a constant label of the registry) plus
//!   at most the labels its family declares (`topic`, `class`, `reason`, `kind`, `partition`).
//!   Label sets are typed structs, so a call site cannot invent a new label and explode the
//!   cardinality of a dashboard. Callers pass *values from a small vocabulary* (error classes,
//!   abort reasons, rebalance kinds), never free-form error messages.
//! * **Cheap on the hot path.** Recording is an atomic add behind a read-locked map lookup; the
//!   registry mutex is only taken to register a metric or to encode a scrape, never per record.
//! * **Runbook names kept.** Processors register their own counters and gauges under the names the
//!   operational runbook uses. Prometheus names cannot contain `.`, so the runbook's
//!   `eval_engine.eval_submissions_total` is exposed as `eval_engine_eval_submissions_total`;
//!   [`prometheus_name`] performs exactly that mapping and [`Metrics::counter`] applies it.
//! * **OpenMetrics exposition.** `prometheus-client` writes the OpenMetrics 1.0 text format
//!   (counter samples end in `_total`, the exposition ends in `# EOF`), so the ops server serves it
//!   with [`CONTENT_TYPE`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The handle types [`Metrics::counter`] and [`Metrics::gauge`] return, re-exported so that
/// processors and the binary can hold them without depending on `prometheus-client` themselves.
pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// The HTTP `Content-Type` of [`Metrics::encode`]'s output. `prometheus-client` encodes the
/// OpenMetrics 1.0 text format (not the older `text/plain; version=0.0.4`), and Prometheus picks
/// its parser from this header, so it must say OpenMetrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every runtime-owned metric, so that they group together and cannot collide with the
/// runbook names processors register at the top level.
pub const PREFIX: &str = "evalstream";

/// Upper bounds (seconds) of the commit-latency histogram buckets: a 1-2.5-5 series from 1 ms to
/// 10 s. A healthy transactional commit takes a few milliseconds; hundreds of milliseconds point at
/// a slow coordinator; seconds mean `transaction.timeout.ms` is getting close. Anything beyond
/// 10 s lands in `+Inf`, which is itself the signal.
pub const COMMIT_LATENCY_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Names of the runtime's metric families without the [`PREFIX`] and without the `_total` suffix
/// the encoder adds to counters. Kept in one place so that processor-registered names can be
/// checked against them.
const BUILTIN_FAMILIES: [&str; 14] = [
    "records_in",
    "records_out",
    "records_dead_lettered",
    "records_retried",
    "transactions_committed",
    "transactions_aborted",
    "commit_latency_seconds",
    "consumer_lag",
    "rebalances",
    "build_info",
    "faults_injected",
    "restores",
    "ready",
    "mode",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    topic: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PointLabels {
    point: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A metric registered by a processor, remembered so that registering the same name again hands
/// back the same handle instead of a second, invisible series.
#[derive(Debug, Clone)]
enum Custom {
    Counter(Counter),
    Gauge(Gauge),
    CounterVec(CounterVec),
    GaugeVec(GaugeVec),
}

impl Custom {
    fn kind(&self) -> &'static str {
        match self {
            Custom::Counter(_) => "counter",
            Custom::Gauge(_) => "gauge",
            Custom::CounterVec(_) => "labelled counter",
            Custom::GaugeVec(_) => "labelled gauge",
        }
    }

    /// Label names of a labelled family (empty for plain metrics).
    fn labels(&self) -> &'static [&'static str] {
        match self {
            Custom::CounterVec(c) => c.labels,
            Custom::GaugeVec(g) => g.labels,
            _ => &[],
        }
    }
}

/// Label values of a processor family, paired with its fixed label names.
type LabelValues = Vec<(String, String)>;

fn label_pairs(names: &'static [&'static str], values: &[&str]) -> LabelValues {
    debug_assert_eq!(names.len(), values.len(), "label values for {names:?}");
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let v = values.get(i).copied().unwrap_or("");
            ((*n).to_owned(), escape_label_value(v).into_owned())
        })
        .collect()
}

/// A processor-owned counter family with a fixed list of label names (e.g. `outcome`), from
/// [`Metrics::counter_vec`]. Callers pass label *values from a small vocabulary*: the label names
/// are fixed at registration, so a call site cannot add a dimension.
#[derive(Debug, Clone)]
pub struct CounterVec {
    labels: &'static [&'static str],
    family: Family<LabelValues, Counter>,
}

impl CounterVec {
    /// The counter for these label values, in the order of the registered label names.
    pub fn with(&self, values: &[&str]) -> Counter {
        self.family.get_or_create(&label_pairs(self.labels, values)).clone()
    }

    /// Adds one to the counter for these label values.
    pub fn inc(&self, values: &[&str]) {
        self.with(values).inc();
    }
}

/// A processor-owned gauge family with fixed label names, from [`Metrics::gauge_vec`].
#[derive(Debug, Clone)]
pub struct GaugeVec {
    labels: &'static [&'static str],
    family: Family<LabelValues, Gauge>,
}

impl GaugeVec {
    /// The gauge for these label values, in the order of the registered label names.
    pub fn with(&self, values: &[&str]) -> Gauge {
        self.family.get_or_create(&label_pairs(self.labels, values)).clone()
    }

    /// Sets the gauge for these label values.
    pub fn set(&self, values: &[&str], value: i64) {
        self.with(values).set(value);
    }
}

/// What registration and encoding need exclusive access to.
#[derive(Debug)]
struct Inner {
    registry: Registry,
    custom: HashMap<String, Custom>,
}

/// The metrics of one processor instance.
///
/// Shared as `Arc<Metrics>` between the engine's OS thread (which records) and the ops server
/// (which encodes). All recording methods take `&self` and never block on a scrape.
#[derive(Debug)]
pub struct Metrics {
    processor: String,
    inner: Mutex<Inner>,
    records_in: Family<TopicLabels, Counter>,
    records_out: Family<TopicLabels, Counter>,
    dead_lettered: Family<DeadLetterLabels, Counter>,
    retried: Family<TopicLabels, Counter>,
    txn_committed: Counter,
    txn_aborted: Family<ReasonLabels, Counter>,
    commit_latency: Histogram,
    consumer_lag: Family<LagLabels, Gauge>,
    rebalances: Family<KindLabels, Counter>,
    faults_injected: Family<PointLabels, Counter>,
    restores: Family<ReasonLabels, Counter>,
    ready: Gauge,
    mode: Family<ModeLabels, Gauge>,
    /// The mode last set to 1, so that a switch sets it back to 0 (also for a mode outside
    /// [`KNOWN_MODES`]).
    current_mode: Mutex<Option<String>>,
}

/// The modes whose `evalstream_mode` series exist from the start (at 0 until current), so that
/// `evalstream_mode{mode="read-only"} == 0` is an answer rather than an absent series.
const KNOWN_MODES: [crate::config::Mode; 2] =
    [crate::config::Mode::Normal, crate::config::Mode::ReadOnly];

impl Metrics {
    /// Creates the registry for one processor; every series it exposes carries
    /// `processor="<processor>"` so that several processors can share a Prometheus job.
    pub fn new(processor: &str) -> Arc<Self> {
        let label =
            (Cow::Borrowed("processor"), Cow::Owned(escape_label_value(processor).into_owned()));
        let mut registry = Registry::with_labels(std::iter::once(label));

        let m = Metrics {
            processor: processor.to_owned(),
            inner: Mutex::new(Inner { registry: Registry::default(), custom: HashMap::new() }),
            records_in: Family::default(),
            records_out: Family::default(),
            dead_lettered: Family::default(),
            retried: Family::default(),
            txn_committed: Counter::default(),
            txn_aborted: Family::default(),
            commit_latency: Histogram::new(COMMIT_LATENCY_BUCKETS),
            consumer_lag: Family::default(),
            rebalances: Family::default(),
            faults_injected: Family::default(),
            restores: Family::default(),
            ready: Gauge::default(),
            mode: Family::default(),
            current_mode: Mutex::new(None),
        };
        for known in KNOWN_MODES {
            m.mode.get_or_create(&ModeLabels { mode: known.as_str().to_owned() }).set(0);
        }

        let rt = registry.sub_registry_with_prefix(PREFIX);
        rt.register(
            "records_in",
            "Input records consumed by committed transactions, including dead-lettered and retried ones",
            m.records_in.clone(),
        );
        rt.register(
            "records_out",
            "Records written to output topics by committed transactions",
            m.records_out.clone(),
        );
        rt.register(
            "records_dead_lettered",
            "Input records written to the dead-letter topic, by source topic and error class",
            m.dead_lettered.clone(),
        );
        rt.register(
            "records_retried",
            "Input records sent to the retry topic for a later attempt",
            m.retried.clone(),
        );
        rt.register(
            "transactions_committed",
            "Kafka transactions committed",
            m.txn_committed.clone(),
        );
        rt.register(
            "transactions_aborted",
            "Kafka transactions aborted, by reason; their outputs are discarded and inputs re-read",
            m.txn_aborted.clone(),
        );
        rt.register_with_unit(
            "commit_latency",
            "Time taken to commit a Kafka transaction",
            Unit::Seconds,
            m.commit_latency.clone(),
        );
        rt.register(
            "consumer_lag",
            "Records between the committed position and the high watermark of an assigned partition",
            m.consumer_lag.clone(),
        );
        rt.register(
            "rebalances",
            "Consumer-group rebalance events seen by this instance, by kind (assign, revoke, lost)",
            m.rebalances.clone(),
        );
        rt.register(
            "restores",
            "State restores from the changelog, by reason: assign (new partitions) or abort (after a failed transaction or an unknown commit outcome, memory is rebuilt from the log)",
            m.restores.clone(),
        );
        rt.register(
            "faults_injected",
            "Faults injected by EVALSTREAM_FAIL_AT (tests only; always absent in production), by point",
            m.faults_injected.clone(),
        );
        rt.register(
            "ready",
            "1 when the instance is ready (GET /ready answers 200), else 0; mirrors /ready",
            m.ready.clone(),
        );
        rt.register(
            "mode",
            "1 for the instance's current operating mode (normal, read-only), 0 for the others",
            m.mode.clone(),
        );
        rt.register(
            "build",
            "Version of the evalstream runtime this processor runs on; always 1",
            Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION").to_owned() }),
        );

        m.lock().registry = registry;
        Arc::new(m)
    }

    /// The processor name given to [`Metrics::new`], for callers that log next to a metric.
    pub fn processor(&self) -> &str {
        &self.processor
    }

    /// Counts one record consumed from `topic`. Together with [`Metrics::records_out`] and
    /// [`Metrics::dead_lettered`] this is what the "in = out + dead-lettered" reconciliation reads,
    /// so it should be counted once the consuming transaction commits: a record re-read after an
    /// abort would otherwise be counted twice.
    pub fn record_in(&self, topic: &str) {
        self.records_in_n(topic, 1);
    }

    /// Counts `n` records read from `topic` at once, for callers that count a whole batch.
    pub fn records_in_n(&self, topic: &str, n: u64) {
        self.records_in.get_or_create(&topic_labels(topic)).inc_by(n);
    }

    /// Counts `n` records produced to output `topic` by a committed transaction (not including
    /// DLQ, retry or changelog writes, which have their own meaning).
    pub fn records_out(&self, topic: &str, n: u64) {
        self.records_out.get_or_create(&topic_labels(topic)).inc_by(n);
    }

    /// Counts one record from `topic` written to its DLQ. `class` is the error class also written
    /// to the DLQ header (e.g. `validation`, `not_ready`, `deserialization`), so a spike on the
    /// dashboard leads straight to `evalstream dlq list` filtered by the same class.
    pub fn dead_lettered(&self, topic: &str, class: &str) {
        let labels = DeadLetterLabels {
            topic: escape_label_value(topic).into_owned(),
            class: escape_label_value(class).into_owned(),
        };
        self.dead_lettered.get_or_create(&labels).inc();
    }

    /// Counts one record from `topic` routed to the retry topic.
    pub fn retried(&self, topic: &str) {
        self.retried.get_or_create(&topic_labels(topic)).inc();
    }

    /// Counts one committed transaction and observes how long the commit took.
    pub fn txn_committed(&self, latency: Duration) {
        self.txn_committed.inc();
        self.commit_latency.observe(latency.as_secs_f64());
    }

    /// Counts one aborted transaction. `reason` must come from a small fixed vocabulary (for
    /// example `abortable_error`, `fenced`, `rebalance`, `shutdown`), never an error message: each
    /// distinct value is a new time series forever.
    pub fn txn_aborted(&self, reason: &str) {
        let labels = ReasonLabels { reason: escape_label_value(reason).into_owned() };
        self.txn_aborted.get_or_create(&labels).inc();
    }

    /// Counts one rebalance event; `kind` is `assign`, `revoke` or `lost`. A steady rate of `lost`
    /// means the instance misses `max.poll.interval.ms` or session timeouts.
    pub fn rebalance(&self, kind: &str) {
        let labels = KindLabels { kind: escape_label_value(kind).into_owned() };
        self.rebalances.get_or_create(&labels).inc();
    }

    /// Counts one restore of the assigned partitions from the log; `reason` is `assign` or
    /// `abort`.
    pub fn restored(&self, reason: &str) {
        let labels = ReasonLabels { reason: escape_label_value(reason).into_owned() };
        self.restores.get_or_create(&labels).inc();
    }

    /// Counts one fault injected at `point` by the test-only fail points (`EVALSTREAM_FAIL_AT`).
    pub fn fault_injected(&self, point: &str) {
        let labels = PointLabels { point: escape_label_value(point).into_owned() };
        self.faults_injected.get_or_create(&labels).inc();
    }

    /// Sets the consumer lag of one assigned partition (high watermark minus position).
    /// Read-only mode shows up here as steadily growing lag with nothing lost.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        let labels = LagLabels { topic: escape_label_value(topic).into_owned(), partition };
        self.consumer_lag.get_or_create(&labels).set(lag);
    }

    /// Drops the lag series of a partition this instance no longer owns. Without this a revoked
    /// partition would keep reporting its last lag forever and page someone for a partition that
    /// another instance is happily consuming.
    pub fn remove_lag(&self, topic: &str, partition: i32) {
        let labels = LagLabels { topic: escape_label_value(topic).into_owned(), partition };
        self.consumer_lag.remove(&labels);
    }

    /// Drops every lag series, for a lost assignment where the instance cannot tell which
    /// partitions went away.
    pub fn clear_lag(&self) {
        self.consumer_lag.clear();
    }

    /// Sets `evalstream_ready` (1 ready, 0 not). [`crate::ops::Health`] calls it whenever its
    /// state changes, from the same evaluation that `/ready` answers with, so that an alert on
    /// the gauge and a probe of `/ready` never disagree.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets `evalstream_mode{mode}` to 1 for `mode` and to 0 for the mode that was current
    /// before (the known modes are always exposed, at 0 unless current).
    pub fn set_mode(&self, mode: &str) {
        let mut current = self.current_mode.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == Some(mode) {
            return;
        }
        if let Some(previous) = current.take() {
            self.mode.get_or_create(&ModeLabels { mode: previous }).set(0);
        }
        let label = escape_label_value(mode).into_owned();
        self.mode.get_or_create(&ModeLabels { mode: label.clone() }).set(1);
        *current = Some(label);
    }

    /// A processor-owned counter, registered once under `name` and shared by every caller that
    /// asks for the same name (so a processor can fetch its handle wherever it is convenient).
    ///
    /// `name` may be the runbook's dotted form (`eval_engine.eval_submissions_total`); it is mapped
    /// with [`prometheus_name`], and the series is exposed as
    /// `eval_engine_eval_submissions_total{processor="…"}`. The `_total` suffix is optional.
    ///
    /// A name already taken by a gauge or by a runtime metric is a programming error; rather than
    /// crash a data-plane process over a metric, it is logged at `error` level and the returned
    /// counter is detached (it counts, but is not exposed).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let family = family_name(name, true);
        match self.register_custom(&family, help, || Custom::Counter(Counter::default())) {
            Some(Custom::Counter(c)) => c,
            _ => Counter::default(),
        }
    }

    /// A processor-owned gauge (for example "signer configured: 0/1"), registered once under
    /// `name` with the same naming and conflict rules as [`Metrics::counter`].
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let family = family_name(name, false);
        match self.register_custom(&family, help, || Custom::Gauge(Gauge::default())) {
            Some(Custom::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    /// A processor-owned counter family with the label names `labels` (besides `processor`),
    /// registered once under `name` with the naming and conflict rules of [`Metrics::counter`].
    /// Registering the same name with other label names is a conflict (logged, detached).
    ///
    /// ```
    /// # let m = evalstream_runtime::metrics::Metrics::new("submissions");
    /// let submissions = m.counter_vec("eval_engine.eval_submissions_total", "Submissions", &["outcome"]);
    /// submissions.inc(&["accepted"]);
    /// assert!(m.encode().contains(r#"eval_engine_eval_submissions_total{processor="submissions",outcome="accepted"} 1"#));
    /// ```
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        let family = family_name(name, true);
        let make = || Custom::CounterVec(CounterVec { labels, family: Family::default() });
        match self.register_custom(&family, help, make) {
            Some(Custom::CounterVec(c)) => c,
            _ => CounterVec { labels, family: Family::default() },
        }
    }

    /// A processor-owned gauge family with the label names `labels`, like
    /// [`Metrics::counter_vec`].
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &'static [&'static str]) -> GaugeVec {
        let family = family_name(name, false);
        let make = || Custom::GaugeVec(GaugeVec { labels, family: Family::default() });
        match self.register_custom(&family, help, make) {
            Some(Custom::GaugeVec(g)) => g,
            _ => GaugeVec { labels, family: Family::default() },
        }
    }

    /// Registers `make()` under `family` unless the name is taken; returns the registered metric
    /// (new or existing), or `None` when the name conflicts with another kind or a runtime metric.
    fn register_custom(
        &self,
        family: &str,
        help: &str,
        make: impl FnOnce() -> Custom,
    ) -> Option<Custom> {
        let wanted = make();
        let reserved = family
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| BUILTIN_FAMILIES.contains(&rest));
        if reserved {
            tracing::error!(
                metric = family,
                "metric name is reserved for the runtime; the processor's metric is not exposed"
            );
            return None;
        }
        let mut inner = self.lock();
        if let Some(existing) = inner.custom.get(family) {
            if existing.kind() == wanted.kind() && existing.labels() == wanted.labels() {
                return Some(existing.clone());
            }
            tracing::error!(
                metric = family,
                registered = existing.kind(),
                requested = wanted.kind(),
                "metric name already registered as another type; the new metric is not exposed"
            );
            return None;
        }
        let help = escape_help(help);
        match &wanted {
            Custom::Counter(c) => inner.registry.register(family, help, c.clone()),
            Custom::Gauge(g) => inner.registry.register(family, help, g.clone()),
            Custom::CounterVec(c) => inner.registry.register(family, help, c.family.clone()),
            Custom::GaugeVec(g) => inner.registry.register(family, help, g.family.clone()),
        }
        inner.custom.insert(family.to_owned(), wanted.clone());
        Some(wanted)
    }

    /// The whole registry in the OpenMetrics text format (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        if let Err(e) = text::encode(&mut out, &inner.registry) {
            // Writing into a String cannot fail; if the encoder ever reports an error, a partial
            // scrape with a log line beats a panic in the ops server.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, but if something ever did, the registry is still
        // consistent (registration is a single push), so keep serving it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Maps a runbook metric name to a valid Prometheus name: every character outside
/// `[A-Za-z0-9_:]` (notably the runbook's `.`) becomes `_`, and a leading digit gets a `_` in front.
/// `eval_engine.eval_submissions_total` → `eval_engine_eval_submissions_total`.
pub fn prometheus_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// The family name under which a custom metric is registered: the Prometheus name, and for
/// counters without the `_total` suffix, because the encoder appends it (registering
/// `x_total` would expose `x_total_total`).
fn family_name(name: &str, counter: bool) -> String {
    let name = prometheus_name(name);
    match name.strip_suffix("_total") {
        Some(base) if counter && !base.is_empty() => base.to_owned(),
        _ => name,
    }
}

fn topic_labels(topic: &str) -> TopicLabels {
    TopicLabels { topic: escape_label_value(topic).into_owned() }
}

/// Escapes a label value for the exposition format. `prometheus-client` writes label values
/// verbatim, so a `"` or newline in a value would corrupt the whole scrape. Kafka topic names
/// cannot contain these, but classes and reasons are caller-supplied.
fn escape_label_value(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes help text the same way (OpenMetrics escapes `\`, `"` and line feeds in `# HELP`), and
/// drops a trailing full stop because the encoder appends one.
fn escape_help(help: &str) -> String {
    escape_label_value(help.trim_end().trim_end_matches('.')).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line that starts with `series` (name plus labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    #[test]
    fn encodes_every_runtime_metric_with_fixed_labels() {
        let m = Metrics::new("totals");
        m.record_in("orders");
        m.record_in("orders");
        m.records_in_n("orders", 3);
        m.records_out("totals", 4);
        m.dead_lettered("orders", "validation");
        m.retried("orders");
        m.txn_committed(Duration::from_millis(3));
        m.txn_aborted("abortable_error");
        m.rebalance("assign");
        m.rebalance("revoke");
        m.set_lag("orders", 2, 17);
        let t = m.encode();

        let p = r#"processor="totals""#;
        let expect = [
            (format!(r#"evalstream_records_in_total{{{p},topic="orders"}}"#), 5.0),
            (format!(r#"evalstream_records_out_total{{{p},topic="totals"}}"#), 4.0),
            (
                format!(
                    r#"evalstream_records_dead_lettered_total{{{p},topic="orders",class="validation"}}"#
                ),
                1.0,
            ),
            (format!(r#"evalstream_records_retried_total{{{p},topic="orders"}}"#), 1.0),
            (format!(r#"evalstream_transactions_committed_total{{{p}}}"#), 1.0),
            (
                format!(r#"evalstream_transactions_aborted_total{{{p},reason="abortable_error"}}"#),
                1.0,
            ),
            (format!(r#"evalstream_rebalances_total{{{p},kind="assign"}}"#), 1.0),
            (format!(r#"evalstream_rebalances_total{{{p},kind="revoke"}}"#), 1.0),
            (format!(r#"evalstream_consumer_lag{{{p},topic="orders",partition="2"}}"#), 17.0),
            (format!(r#"evalstream_commit_latency_seconds_count{{{p}}}"#), 1.0),
            (
                format!(r#"evalstream_build_info{{{p},version="{}"}}"#, env!("CARGO_PKG_VERSION")),
                1.0,
            ),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&t, &series), Some(value), "{series} in\n{t}");
        }
        assert!(t.contains("# TYPE evalstream_commit_latency_seconds histogram"), "{t}");
        assert!(t.contains("# TYPE evalstream_consumer_lag gauge"), "{t}");
        assert!(t.ends_with("# EOF\n"), "OpenMetrics exposition must end with # EOF");
    }

    #[test]
    fn ready_and_mode_gauges() {
        let m = Metrics::new("p");
        let t = m.encode();
        assert_eq!(sample(&t, r#"evalstream_ready{processor="p"}"#), Some(0.0), "{t}");
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="normal"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="read-only"}"#), Some(0.0));

        m.set_ready(true);
        m.set_mode("normal");
        let t = m.encode();
        assert_eq!(sample(&t, r#"evalstream_ready{processor="p"}"#), Some(1.0), "{t}");
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="normal"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="read-only"}"#), Some(0.0));

        m.set_mode("read-only");
        m.set_mode("read-only");
        let t = m.encode();
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="normal"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"evalstream_mode{processor="p",mode="read-only"}"#), Some(1.0));
        assert_eq!(t.matches("evalstream_mode{").count(), 2, "{t}");
        assert!(t.contains("# TYPE evalstream_ready gauge"), "{t}");

        // A processor cannot shadow them.
        m.gauge("evalstream_ready", "shadow").set(5);
        assert_eq!(sample(&m.encode(), r#"evalstream_ready{processor="p"}"#), Some(1.0));
    }

    #[test]
    fn commit_latency_buckets_span_1ms_to_10s() {
        let m = Metrics::new("p");
        m.txn_committed(Duration::from_micros(500)); // below the first bucket
        m.txn_committed(Duration::from_millis(7)); // (5ms, 10ms]
        m.txn_committed(Duration::from_secs(30)); // only +Inf
        let t = m.encode();
        let bucket = |le: &str| {
            sample(
                &t,
                &format!(r#"evalstream_commit_latency_seconds_bucket{{le="{le}",processor="p"}}"#),
            )
            .or_else(|| {
                sample(
                    &t,
                    &format!(
                        r#"evalstream_commit_latency_seconds_bucket{{processor="p",le="{le}"}}"#
                    ),
                )
            })
        };
        assert_eq!(bucket("0.001"), Some(1.0), "{t}");
        assert_eq!(bucket("0.005"), Some(1.0));
        assert_eq!(bucket("0.01"), Some(2.0));
        assert_eq!(bucket("10.0"), Some(2.0));
        assert_eq!(bucket("+Inf"), Some(3.0));
        assert_eq!(
            t.lines().filter(|l| l.starts_with("evalstream_commit_latency_seconds_bucket")).count(),
            COMMIT_LATENCY_BUCKETS.len() + 1
        );
        let sum = sample(&t, r#"evalstream_commit_latency_seconds_sum{processor="p"}"#).unwrap();
        assert!((sum - 30.0075).abs() < 1e-9, "{sum}");
        assert!(t.contains("# UNIT evalstream_commit_latency_seconds seconds"));
    }

    #[test]
    fn revoked_partitions_stop_reporting_lag() {
        let m = Metrics::new("p");
        m.set_lag("t", 0, 5);
        m.set_lag("t", 1, 6);
        m.remove_lag("t", 0);
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"evalstream_consumer_lag{processor="p",topic="t",partition="0"}"#),
            None
        );
        assert_eq!(
            sample(&t, r#"evalstream_consumer_lag{processor="p",topic="t",partition="1"}"#),
            Some(6.0)
        );
        m.clear_lag();
        assert!(!m.encode().contains("evalstream_consumer_lag{"));
    }

    #[test]
    fn runbook_names_map_dots_to_underscores() {
        assert_eq!(
            prometheus_name("eval_engine.eval_submissions_total"),
            "eval_engine_eval_submissions_total"
        );
        assert_eq!(
            prometheus_name("allocator.settlement-failures"),
            "allocator_settlement_failures"
        );
        assert_eq!(prometheus_name("9lives"), "_9lives");
        assert_eq!(family_name("audit.signing_failures_total", true), "audit_signing_failures");
        assert_eq!(family_name("x_total", false), "x_total");
        assert_eq!(family_name("_total", true), "_total");
    }

    #[test]
    fn processor_counters_are_registered_once_under_runbook_names() {
        let m = Metrics::new("eval-engine");
        let a = m.counter("eval_engine.eval_submissions_total", "Eval submissions accepted.");
        let b = m.counter("eval_engine_eval_submissions_total", "ignored: already registered");
        let c = m.counter("eval_engine_eval_submissions", "same family without the suffix");
        a.inc();
        b.inc();
        c.inc_by(2);
        let g = m.gauge("audit.signer_configured", "1 when a signing key is configured");
        g.set(1);
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"eval_engine_eval_submissions_total{processor="eval-engine"}"#),
            Some(4.0),
            "{t}"
        );
        assert_eq!(t.matches("# TYPE eval_engine_eval_submissions counter").count(), 1, "{t}");
        assert!(
            t.contains("# HELP eval_engine_eval_submissions Eval submissions accepted.\n"),
            "{t}"
        );
        assert_eq!(sample(&t, r#"audit_signer_configured{processor="eval-engine"}"#), Some(1.0));
    }

    #[test]
    fn labelled_processor_metrics_have_fixed_label_names() {
        let m = Metrics::new("policy");
        let denials = m.counter_vec(
            "eval_engine.promotion_policy_denials_total",
            "Denials",
            &["subject_kind", "policy_version", "reason"],
        );
        denials.inc(&["promotion", "v7", "toxicity"]);
        denials.with(&["promotion", "v7", "toxicity"]).inc();
        let again = m.counter_vec(
            "eval_engine_promotion_policy_denials",
            "again",
            &["subject_kind", "policy_version", "reason"],
        );
        again.inc(&["allocation", "v\"8", "x"]);
        let pending =
            m.gauge_vec("eval_engine.policy_pending_requests", "Pending", &["subject_kind"]);
        pending.set(&["promotion"], 3);
        pending.set(&["promotion"], 2);
        let t = m.encode();
        assert_eq!(
            sample(
                &t,
                r#"eval_engine_promotion_policy_denials_total{processor="policy",subject_kind="promotion",policy_version="v7",reason="toxicity"}"#
            ),
            Some(2.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                r#"eval_engine_promotion_policy_denials_total{processor="policy",subject_kind="allocation",policy_version="v\"8",reason="x"}"#
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                r#"eval_engine_policy_pending_requests{processor="policy",subject_kind="promotion"}"#
            ),
            Some(2.0)
        );
        // Other label names under the same family: detached, the original stays exposed.
        let other = m.counter_vec("eval_engine.promotion_policy_denials", "x", &["reason"]);
        other.inc(&["y"]);
        assert!(!m.encode().contains(r#"reason="y""#));
        assert_eq!(
            m.encode().matches("# TYPE eval_engine_promotion_policy_denials counter").count(),
            1
        );
    }

    #[test]
    fn conflicting_processor_metrics_are_detached_not_exposed() {
        let m = Metrics::new("p");
        m.gauge("dual", "a gauge").set(7);
        let detached = m.counter("dual_total", "a counter with the gauge's family name");
        detached.inc();
        let shadow = m.counter("evalstream_records_in_total", "shadowing a runtime metric");
        shadow.inc_by(100);
        let t = m.encode();
        assert_eq!(t.matches("# TYPE dual ").count(), 1, "{t}");
        assert_eq!(sample(&t, r#"dual{processor="p"}"#), Some(7.0));
        assert!(!t.contains("evalstream_records_in_total{processor=\"p\"} 100"), "{t}");
    }

    #[test]
    fn label_values_cannot_break_the_exposition() {
        let m = Metrics::new("p\"x");
        m.txn_aborted("bad \"reason\"\nsecond line");
        let t = m.encode();
        assert!(
            t.contains(r#"evalstream_transactions_aborted_total{processor="p\"x",reason="bad \"reason\"\nsecond line"} 1"#),
            "{t}"
        );
        assert!(t.lines().all(|l| l.starts_with('#') || l.contains(' ')), "{t}");
    }

    #[test]
    fn recording_from_many_threads_is_exact() {
        let m = Metrics::new("p");
        std::thread::scope(|s| {
            for _ in 0..4 {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..1000 {
                        m.record_in("t");
                    }
                });
            }
        });
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"evalstream_records_in_total{processor="p",topic="t"}"#),
            Some(4000.0)
        );
    }
}
