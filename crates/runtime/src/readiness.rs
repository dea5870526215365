//! Dependency checks behind `/ready`: the runtime's own (the broker, the schema registry) and the
//! ones a processor registers through its [`crate::processor::Setup`] (the audit chain's signer,
//! the policy gate's feed, settlement's Finance feed).
//!
//! ```text
//!  Registration::build(setup) ── setup.checks.reported("signer", every, || …) ─┐
//!  evalstream run ─────────────── Checks::kafka(broker probe), gating(registry) ─┤
//!                                                                                ▼
//!                                 Checks::start ── one thread per check ── every `every`:
//!                                   Ok(detail) / Err(detail) ──► Health (kafka | gating | reported)
//!                                                                   └──► /ready, evalstream_ready
//! ```
//!
//! Why a thread per check and not a task on the ops runtime: checks make blocking calls (a
//! metadata request, a registry GET, KMS DescribeKey through the signer's own runtime), each
//! bounded by its own timeout; separate threads keep a hung KMS call from delaying the broker
//! probe, and the ops server's single worker from ever blocking. A check is cheap by contract:
//! it asks "could this work now?" (KMS `DescribeKey`/`GetPublicKey`, never `Sign`) or reads what
//! the processor already observed (the newest decision seen), so probing every few seconds costs
//! nothing that matters.
//!
//! Which dependencies gate readiness and which are only reported is decided where a check is
//! registered (see [`crate::ops`] for the reasoning, docs/operations.md#readiness for the table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::kafka::{self, ReaderContext};
use crate::ops::Health;

/// What a check returns: `Ok(detail)` when the dependency is usable, `Err(detail)` when not. The
/// detail is shown to the operator in `/ready`, so it says what was checked and what was seen.
pub type CheckResult = Result<String, String>;

/// A check function; called on its own thread, may block (bounded by its own timeouts).
pub type CheckFn = Box<dyn FnMut() -> CheckResult + Send + 'static>;

/// How often the runtime probes the broker and the schema registry.
pub const RUNTIME_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Bound on the broker probe's metadata request.
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a check's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `/ready`'s `kafka` field (the runtime's broker probe).
    Kafka,
    /// `dependencies.<name>`, gating readiness.
    Gating(String),
    /// `dependencies.<name>`, reported only.
    Reported(String),
}

struct Entry {
    target: Target,
    every: Duration,
    check: CheckFn,
}

/// The dependency checks of one processor instance, registered before the engine starts.
#[derive(Default)]
pub struct Checks {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let targets: Vec<&Target> = entries.iter().map(|e| &e.target).collect();
        f.debug_struct("Checks").field("targets", &targets).finish()
    }
}

impl Checks {
    /// No checks yet.
    pub fn new() -> Checks {
        Checks::default()
    }

    fn add(&self, target: Target, every: Duration, check: CheckFn) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|e| e.target != target);
        entries.push(Entry { target, every, check });
    }

    /// A dependency without which the instance cannot process its inputs: while `check` fails,
    /// `/ready` is 503. Registering a name again replaces the earlier check.
    pub fn gating(
        &self,
        name: &str,
        every: Duration,
        check: impl FnMut() -> CheckResult + Send + 'static,
    ) {
        self.add(Target::Gating(name.to_owned()), every, Box::new(check));
    }

    /// A dependency whose outage the instance rides out while still doing its job: shown in
    /// `/ready` (`dependencies`, `warnings`), never making it not ready. Its alert pages instead.
    pub fn reported(
        &self,
        name: &str,
        every: Duration,
        check: impl FnMut() -> CheckResult + Send + 'static,
    ) {
        self.add(Target::Reported(name.to_owned()), every, Box::new(check));
    }

    /// The broker probe, whose result is `/ready`'s `kafka` (see [`broker_probe`]).
    pub fn kafka(&self, every: Duration, check: impl FnMut() -> CheckResult + Send + 'static) {
        self.add(Target::Kafka, every, Box::new(check));
    }

    /// The names of the registered dependencies and whether each gates readiness (`kafka`
    /// included, gating).
    pub fn describe(&self) -> Vec<(String, bool)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .map(|e| match &e.target {
                Target::Kafka => ("kafka".to_owned(), true),
                Target::Gating(n) => (n.clone(), true),
                Target::Reported(n) => (n.clone(), false),
            })
            .collect()
    }

    /// Registers every dependency in `health` at once (as "not checked yet", so that a gating
    /// one counts from the start) and starts one thread per check, each running its check right
    /// away and then every `every` until `stop` is set. The checks are moved out: a second call
    /// starts nothing.
    pub fn start(&self, health: &Arc<Health>, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
        let entries =
            std::mem::take(&mut *self.entries.lock().unwrap_or_else(PoisonError::into_inner));
        let mut handles = Vec::new();
        for entry in entries {
            write(health, &entry.target, Err("not checked yet".to_owned()), true);
            let (health, stop) = (Arc::clone(health), Arc::clone(stop));
            let name = match &entry.target {
                Target::Kafka => "check-kafka".to_owned(),
                Target::Gating(n) | Target::Reported(n) => format!("check-{n}"),
            };
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || run_check(entry, &health, &stop));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => tracing::error!(check = %name, error = %e, "cannot start a check thread"),
            }
        }
        handles
    }
}

fn run_check(mut entry: Entry, health: &Health, stop: &AtomicBool) {
    let mut last_ok: Option<bool> = None;
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let result = (entry.check)();
        let ok = result.is_ok();
        if last_ok != Some(ok) {
            let detail = match &result {
                Ok(d) | Err(d) => d.as_str(),
            };
            if ok {
                tracing::info!(dependency = ?entry.target, detail, "dependency check ok");
            } else {
                tracing::warn!(dependency = ?entry.target, detail, "dependency check failed");
            }
            last_ok = Some(ok);
        }
        write(health, &entry.target, result, false);
        let next = began + entry.every;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100).min(entry.every));
        }
    }
}

fn write(health: &Health, target: &Target, result: CheckResult, initial: bool) {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    match target {
        // The engine also reports Kafka (commits, "all brokers down"); the initial placeholder
        // must not overwrite what it may already have said.
        Target::Kafka if initial => {}
        Target::Kafka => health.set_kafka(ok, &detail),
        Target::Gating(name) => health.set_dependency(name, ok, &detail),
        Target::Reported(name) => health.report_dependency(name, ok, &detail),
    }
}

/// A broker probe: a metadata request over its own connection, bounded by a few seconds. The
/// engine's own view of Kafka (commits succeed; librdkafka's "all brokers down") only changes
/// when something happens; an idle instance learns from this probe that the brokers came back.
pub fn broker_probe(cfg: &RuntimeConfig) -> Result<CheckFn, String> {
    let client: BaseConsumer<ReaderContext> =
        kafka::base(cfg)
            .create_with_context(ReaderContext)
            .map_err(|e| format!("creating the broker probe client: {e}"))?;
    Ok(Box::new(move || {
        let began = Instant::now();
        match client.fetch_metadata(None, BROKER_PROBE_TIMEOUT) {
            Ok(md) if !md.brokers().is_empty() => Ok(format!(
                "metadata from {} broker(s) in {} ms",
                md.brokers().len(),
                began.elapsed().as_millis()
            )),
            Ok(_) => Err("metadata lists no broker".to_owned()),
            Err(e) => Err(format!("metadata request failed: {e}")),
        }
    }))
}

/// The schema registry check (`GET /subjects`), when the codec writes through one.
pub fn schema_registry_probe(codec: &Codec) -> Option<CheckFn> {
    let url = codec.registry_url()?.to_owned();
    let codec = codec.clone();
    Some(Box::new(move || match codec.check_registry() {
        Ok(()) => Ok(format!("{url} answers")),
        Err(e) => Err(format!("{url}: {e}")),
    }))
}

/// What a processor knows about a feed it waits on, for [`FeedStaleness::judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedView<'a> {
    /// Items waiting for the feed (pending requests, allocations in `pending_finance`).
    pub waiting: i64,
    /// Event time (ms) since which the oldest of them waits.
    pub oldest_ms: Option<i64>,
    /// Event time (ms) of the newest record consumed from the feed; 0 when none yet.
    pub last_seen_ms: i64,
    /// What waits, plural, for the detail ("requests").
    pub what: &'a str,
    /// What the feed delivers, for the detail ("decision").
    pub feed: &'a str,
}

/// "Is the feed this processor waits on flowing?": the judgement shared by the policy gate's
/// SentinelNet feed and settlement's Finance feed.
///
/// The feed is stale when work has waited longer than `stale_after` *and* nothing has arrived
/// from the feed for longer than `stale_after`. The newest record's event time (the same clock as
/// the processor's gauges and alerts) is raised to the instance's start: an instance that has
/// just started has not seen the feed yet, which is no evidence that it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStaleness {
    /// How long work may wait and the feed be silent before the feed counts as stale.
    pub stale_after: Duration,
}

impl FeedStaleness {
    /// The verdict at `now_ms` for an instance started at `started_ms`.
    pub fn judge(&self, now_ms: i64, started_ms: i64, view: &FeedView<'_>) -> CheckResult {
        let limit = self.stale_after.as_millis() as i64;
        let seen = view.last_seen_ms.max(started_ms);
        let (what, feed, waiting) = (view.what, view.feed, view.waiting);
        let ago = |t: i64| (now_ms - t).max(0) / 1000;
        let seen_text = if view.last_seen_ms >= started_ms {
            format!("newest {feed} {} s ago", ago(view.last_seen_ms))
        } else if view.last_seen_ms > 0 {
            format!(
                "newest {feed} {} s ago, none since this instance started {} s ago",
                ago(view.last_seen_ms),
                ago(started_ms)
            )
        } else {
            format!("no {feed} since this instance started {} s ago", ago(started_ms))
        };
        match view.oldest_ms.map(|t| (now_ms - t).max(0) / 1000) {
            Some(age) if waiting > 0 && age * 1000 > limit && now_ms - seen > limit => {
                Err(format!(
                    "stale: {waiting} {what} waiting (oldest {age} s), {seen_text}; limit {} s",
                    limit / 1000
                ))
            }
            Some(age) if waiting > 0 => {
                Ok(format!("{waiting} {what} waiting (oldest {age} s), {seen_text}"))
            }
            _ => Ok(format!("nothing waiting, {seen_text}")),
        }
    }
}

/// Milliseconds since the epoch, for checks (never for outputs).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_is_stale_only_when_work_waits_and_the_feed_is_silent_past_the_limit() {
        let f = FeedStaleness { stale_after: Duration::from_secs(300) };
        let now = 10_000_000;
        let start = now - 3_600_000;
        let view = |last_seen_ms, waiting, oldest_ms| FeedView {
            waiting,
            oldest_ms,
            last_seen_ms,
            what: "requests",
            feed: "decision",
        };
        let j = |last, waiting, oldest| f.judge(now, start, &view(last, waiting, oldest));
        // Nothing waiting: never stale, however old the feed.
        assert!(j(0, 0, None).is_ok());
        // Waiting for long, feed silent for long: stale, and the detail says why.
        let e = j(now - 600_000, 2, Some(now - 900_000)).unwrap_err();
        assert!(e.contains("2 requests waiting (oldest 900 s)") && e.contains("600 s ago"), "{e}");
        // Waiting for long, but a decision arrived recently: ok (that one request is the
        // PolicyRequestWaitingTooLong case, not a stale feed).
        assert!(j(now - 10_000, 2, Some(now - 900_000)).is_ok());
        // Feed silent for long, but the work is fresh: not yet.
        assert!(j(now - 600_000, 1, Some(now - 5_000)).is_ok());
        // Never seen since start: the start counts as "seen".
        let recent_start = f.judge(now, now - 60_000, &view(0, 1, Some(now - 900_000)));
        assert!(recent_start.is_ok(), "{recent_start:?}");
        let e = j(0, 1, Some(now - 900_000)).unwrap_err();
        assert!(e.contains("no decision since this instance started 3600 s ago"), "{e}");
        let e = j(now - 7_200_000, 1, Some(now - 900_000)).unwrap_err();
        assert!(e.contains("newest decision 7200 s ago, none since this instance started"), "{e}");
    }

    #[test]
    fn checks_write_their_results_into_health_and_stop() {
        let health = Health::new("p");
        let checks = Checks::new();
        let flips = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flips);
        checks.gating("schema_registry", Duration::from_millis(20), || Ok("answers".into()));
        checks.reported("signer", Duration::from_millis(20), move || {
            if f.load(Ordering::SeqCst) {
                Ok("key usable".into())
            } else {
                Err("DescribeKey: unreachable".into())
            }
        });
        checks.kafka(Duration::from_millis(20), || Ok("metadata from 1 broker(s)".into()));
        assert_eq!(checks.describe().len(), 3);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = checks.start(&health, &stop);
        assert_eq!(handles.len(), 3);
        health.set_assignment(1);
        let wait = |cond: &dyn Fn(&serde_json::Value) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let body = health.ready_report().1;
                if cond(&body) {
                    return body;
                }
                assert!(Instant::now() < deadline, "timed out: {body}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let body = wait(&|b| {
            b["kafka"]["ok"] == true && b["dependencies"]["signer"]["detail"] != "not checked yet"
        });
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["warnings"][0], "signer not ok: DescribeKey: unreachable");
        flips.store(true, Ordering::SeqCst);
        wait(&|b| b["warnings"].as_array().is_some_and(Vec::is_empty));
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().unwrap();
        }
        assert!(checks.describe().is_empty(), "start moves the checks out");
    }
}
