//! Shared machinery of the exactly-once tests: input generation, processor instances as OS
//! processes, and the independent verifier.
//!
//! The verifier reads the output topics with its own plain `read_committed` consumer. On Apache
//! Kafka (the default) that is the whole verdict: every visible output counts, and the verifier
//! knows nothing of the runtime's progress markers. On a broker that shows aborted records to
//! `read_committed` readers (`EVALSTREAM_TEST_BROKER=tansu`) the verifier instead reconstructs
//! `read_committed` from the progress markers (see docs/exactly-once.md) and counts everything
//! else as "aborted but visible"; that tier's verdict rests on the markers, and says so.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::headers;
use evalstream_totals::{TotalsInput, TotalsUpdate};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// One input record as produced.
#[derive(Debug, Clone)]
pub struct InputRec {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub amount: i64,
}

/// Encodes a `TotalsInput` value.
pub fn encode_input(codec: &Codec, topic: &str, key: &str, amount: i64, payload: &str) -> Vec<u8> {
    let input = TotalsInput { key: key.into(), amount, payload: payload.into() };
    codec.encode_record(topic, &input).expect("encode TotalsInput")
}

/// Deterministic input `i`: 1000 keys, amounts 1..=97.
pub fn input_for(i: u64) -> (String, i64) {
    (format!("k{}", i % 1000), (i % 97) as i64 + 1)
}

/// Produces inputs `range` to `topic` in batches, sleeping `pause` between batches.
pub fn produce_inputs(
    codec: &Codec,
    topic: &str,
    range: std::ops::Range<u64>,
    batch: usize,
    pause: Duration,
) -> Vec<InputRec> {
    let mut out = Vec::new();
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(batch) {
        let recs: Vec<it::RawRecord> = chunk
            .iter()
            .map(|i| {
                let (k, a) = input_for(*i);
                it::RawRecord::new(encode_input(codec, topic, &k, a, "")).key(k)
            })
            .collect();
        let coords = it::produce_raw(topic, &recs);
        for (i, (p, o)) in chunk.iter().zip(coords) {
            let (key, amount) = input_for(*i);
            out.push(InputRec { partition: p, offset: o, key, amount });
        }
        std::thread::sleep(pause);
    }
    out
}

/// A processor instance running as a separate OS process.
pub struct Instance {
    pub id: String,
    prefix: String,
    processor: String,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    ops_port: Option<u16>,
}

impl Instance {
    pub fn new(processor: &str, prefix: &str, id: &str) -> Self {
        Instance {
            id: id.into(),
            prefix: prefix.into(),
            processor: processor.into(),
            extra_env: Vec::new(),
            child: None,
            ops_port: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "instance {} already running", self.id);
        let mut cmd: Command = it::evalstream();
        cmd.args(["run", &self.processor])
            .env("EVALSTREAM_TOPIC_PREFIX", &self.prefix)
            .env("EVALSTREAM_INSTANCE_ID", &self.id)
            .env("EVALSTREAM_SESSION_TIMEOUT_MS", "6000")
            .env(
                "EVALSTREAM_LOG",
                std::env::var("EVALSTREAM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("EVALSTREAM_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawning evalstream run"));
    }

    /// SIGKILL: no shutdown hook runs, the open transaction dangles.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_free_sigterm(c.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still alive (a processor must never exit on bad input).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Serves `/health`, `/ready`, `/metrics` on a free port from the next start on.
    pub fn with_ops(mut self) -> Self {
        let port = it::free_port();
        self.ops_port = Some(port);
        self.env("EVALSTREAM_OPS_LISTEN", &format!("127.0.0.1:{port}"))
    }

    /// `HOST:PORT` of the ops endpoints (for `evalstream control read-only --ops`).
    pub fn ops_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ops_port.expect("instance started without with_ops()"))
    }

    /// The `/ready` body as JSON (whatever the status), `None` when it does not answer.
    pub fn ready_body(&self) -> Option<serde_json::Value> {
        let port = self.ops_port.expect("instance started without with_ops()");
        let response = it::http_get(port, "/ready")?;
        serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()
    }

    /// The instance's `/metrics` text (empty when it does not answer).
    pub fn metrics(&self) -> String {
        let port = self.ops_port.expect("instance started without with_ops()");
        it::http_get(port, "/metrics").unwrap_or_default()
    }

    /// Sum of the samples of one metric of this instance (see [`it::metric_sum`]).
    pub fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        it::metric_sum(&self.metrics(), name, filters)
    }

    /// Whether `/ready` answers 200.
    pub fn ready(&self) -> bool {
        let port = self.ops_port.expect("instance started without with_ops()");
        it::http_get(port, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    }

    /// Partitions assigned to the instance once it is ready (`/ready` answers 200 with its
    /// `assignment`), `None` while it is not ready.
    pub fn ready_partitions(&self) -> Option<u64> {
        let port = self.ops_port.expect("instance started without with_ops()");
        let response = it::http_get(port, "/ready")?;
        if !response.starts_with("HTTP/1.1 200") {
            return None;
        }
        let body = response.split("\r\n\r\n").nth(1)?;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        json["assignment"]["assigned_partitions"].as_u64()
    }

    /// The process id (for SIGSTOP / SIGCONT), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("instance is not running");
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid} failed");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

/// The next offset after the last data record of every partition that has records, read with
/// an independent consumer. (Not the high watermark: after a transaction it points past the
/// commit marker, which consumers never commit past, and our local broker reports it wrongly
/// for multi-record batches.)
pub fn next_offsets(topic: &str) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for r in it::read_topic(topic) {
        let e = next.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next
}

/// [`next_offsets`] of the inputs a test produced.
pub fn next_offsets_of(inputs: &[InputRec]) -> BTreeMap<i32, i64> {
    let mut next = BTreeMap::new();
    for r in inputs {
        let e = next.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next
}

/// Whether `group` has committed at least `expected` on every partition of `topic`. On a broker
/// leaking aborted records the progress markers in `<group>.changelog` count too: there a
/// transaction whose commit failed after its marker is committed by definition (its outputs are
/// visible and the marker says so), while the broker did not commit its offsets.
pub fn group_committed(group: &str, topic: &str, expected: &BTreeMap<i32, i64>) -> bool {
    if it::broker_leaks_aborted() {
        let codec = Codec::from_env().expect("codec");
        let changelog = format!("{group}.changelog");
        if it::partition_count(&changelog) > 0 {
            let markers = MarkerJoin::read(&codec, &changelog);
            if expected
                .iter()
                .all(|(p, want)| markers.position(topic, *p).is_some_and(|o| o >= *want))
            {
                return true;
            }
        }
    }
    let c: BaseConsumer = it::client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in expected.keys() {
        tpl.add_partition(topic, *p);
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(10)) else { return false };
    expected.iter().all(|(p, want)| {
        matches!(committed.find_partition(topic, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *want)
    })
}

/// Sum of `group`'s committed offsets on `topic` (0 when none): grows whenever it commits work.
/// Asked as a `read_uncommitted` client, so the answer does not wait for a transaction whose
/// offsets are pending (librdkafka's `require_stable`): this is a progress probe, not a verdict.
pub fn committed_sum(group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = it::client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..it::partition_count(topic) as i32 {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|t| {
            t.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// What the independent verifier found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Outputs whose transaction committed.
    pub committed_outputs: usize,
    /// Outputs of transactions that did not commit but are visible (broker gap); not counted.
    pub aborted_visible: usize,
    /// Inputs with no committed output.
    pub missing: Vec<(i32, i64)>,
    /// Inputs with more than one committed output.
    pub duplicated: Vec<((i32, i64), usize)>,
    /// Keys whose running totals (in input order) or final total are wrong.
    pub wrong_totals: Vec<String>,
    /// Committed outputs whose source is not a produced input.
    pub unknown_sources: usize,
    /// Committed DLQ records.
    pub dead_lettered: usize,
}

impl Verification {
    pub fn assert_exact(&self) {
        assert!(
            self.missing.is_empty(),
            "{} inputs lost, e.g. {:?}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(5)]
        );
        assert!(
            self.duplicated.is_empty(),
            "{} inputs duplicated, e.g. {:?}",
            self.duplicated.len(),
            &self.duplicated[..self.duplicated.len().min(5)]
        );
        assert!(
            self.wrong_totals.is_empty(),
            "wrong totals for {:?}",
            &self.wrong_totals[..self.wrong_totals.len().min(5)]
        );
        assert_eq!(self.unknown_sources, 0, "outputs from unknown sources");
    }
}

/// The marker join, for the tier that runs on a broker leaking aborted records only
/// (`EVALSTREAM_TEST_BROKER=tansu`; on Kafka verdicts never use it). Written from the rule in
/// docs/exactly-once.md, independently of the runtime's code: a record carrying
/// `evalstream.progress = <changelog>/<p>/<k>` and `evalstream.txn = T` is committed iff the first
/// marker in changelog partition `p` with commit sequence `k` (markers with a sequence not above
/// the previous one are ignored) has transaction `T`. Records without those headers count.
pub struct MarkerJoin {
    first: HashMap<(i32, i64), String>,
    /// (input topic, partition) → next offset, from the latest accepted marker.
    positions: HashMap<(String, i32), i64>,
}

impl MarkerJoin {
    /// Reads every marker of `changelog`.
    pub fn read(codec: &Codec, changelog: &str) -> Self {
        let mut first = HashMap::new();
        let mut last: HashMap<i32, i64> = HashMap::new();
        let mut positions = HashMap::new();
        for r in it::read_topic(changelog) {
            if r.key.as_deref() != Some(&[0u8][..]) {
                continue;
            }
            let d = codec.decode(r.value.as_deref().expect("marker value")).expect("decodes");
            let (txn, seq) = match &d.value {
                Value::Record(f) => (
                    f.iter().find_map(|(n, v)| match (n.as_str(), v) {
                        ("txn", Value::String(s)) => Some(s.clone()),
                        _ => None,
                    }),
                    f.iter().find_map(|(n, v)| match (n.as_str(), v) {
                        ("commit_seq", Value::Long(k)) => Some(*k),
                        _ => None,
                    }),
                ),
                _ => (None, None),
            };
            let (Some(txn), Some(seq)) = (txn, seq) else { panic!("marker without txn/seq") };
            let l = last.entry(r.partition).or_insert(0);
            if seq > *l {
                *l = seq;
                first.insert((r.partition, seq), txn);
                if let Value::Record(f) = &d.value {
                    for (name, v) in f {
                        let (Value::Array(items), "positions") = (v, name.as_str()) else {
                            continue;
                        };
                        for item in items {
                            if let Value::Record(pf) = item {
                                let topic = pf.iter().find_map(|(n, v)| match (n.as_str(), v) {
                                    ("topic", Value::String(t)) => Some(t.clone()),
                                    _ => None,
                                });
                                let next = pf.iter().find_map(|(n, v)| match (n.as_str(), v) {
                                    ("next_offset", Value::Long(o)) => Some(*o),
                                    _ => None,
                                });
                                if let (Some(t), Some(o)) = (topic, next) {
                                    positions.insert((t, r.partition), o);
                                }
                            }
                        }
                    }
                }
            }
        }
        MarkerJoin { first, positions }
    }

    /// Where the latest accepted marker says `topic`'s partition `p` resumes.
    pub fn position(&self, topic: &str, p: i32) -> Option<i64> {
        self.positions.get(&(topic.to_string(), p)).copied()
    }

    /// Whether `r` is committed by the rule above.
    pub fn committed(&self, r: &it::Record) -> bool {
        let (Some(txn), Some(progress)) =
            (r.header_str(headers::TXN), r.header_str(headers::PROGRESS))
        else {
            return true;
        };
        let (_, p, k) = headers::parse_coordinate(progress).expect("progress header parses");
        self.first.get(&(p, k)).is_some_and(|t| t == txn)
    }
}

/// Whether each record is committed: on Kafka every record a `read_committed` reader returns;
/// on a broker leaking aborted records, the marker join of `changelog`.
pub fn committed_filter(codec: &Codec, changelog: &str) -> impl Fn(&it::Record) -> bool {
    let join = it::broker_leaks_aborted().then(|| MarkerJoin::read(codec, changelog));
    move |r| join.as_ref().is_none_or(|j| j.committed(r))
}

/// Verifies `totals.output` (and the DLQ) against the produced inputs.
pub fn verify_totals(codec: &Codec, prefix: &str, inputs: &[InputRec]) -> Verification {
    // On Kafka: nothing but read_committed. With a leaky broker: the marker join.
    let is_committed = committed_filter(codec, &format!("{prefix}evalstream.totals.changelog"));
    let mut v = Verification::default();
    let input_topic = format!("{prefix}totals.input");
    let by_coord: HashMap<(i32, i64), &InputRec> =
        inputs.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    // key -> [(source offset, total)]
    let mut totals: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for r in it::read_topic_stable(&format!("{prefix}totals.output")) {
        let src = r.header_str(headers::SOURCE).expect("output has a source header");
        let (topic, p, o) = headers::parse_coordinate(src).expect("source parses");
        assert_eq!(topic, input_topic);
        if !is_committed(&r) {
            v.aborted_visible += 1;
            continue;
        }
        v.committed_outputs += 1;
        if !by_coord.contains_key(&(p, o)) {
            v.unknown_sources += 1;
            continue;
        }
        *seen.entry((p, o)).or_default() += 1;
        let update: TotalsUpdate =
            codec.decode_record(r.value.as_deref().expect("value")).expect("output decodes");
        totals.entry(r.key_str().expect("key").to_string()).or_default().push((o, update.total));
    }
    for r in it::read_topic_stable(&format!("{prefix}totals.input.dlq")) {
        if is_committed(&r) {
            v.dead_lettered += 1;
        }
    }
    for rec in inputs {
        match seen.get(&(rec.partition, rec.offset)).copied().unwrap_or(0) {
            0 => v.missing.push((rec.partition, rec.offset)),
            1 => {}
            n => v.duplicated.push(((rec.partition, rec.offset), n)),
        }
    }
    // Running totals per key must be the prefix sums of its inputs in input order.
    let mut expected: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut sorted: Vec<&InputRec> = inputs.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut sums: HashMap<&str, i64> = HashMap::new();
    for r in sorted {
        let s = sums.entry(&r.key).or_default();
        *s += r.amount;
        expected.entry(r.key.clone()).or_default().push((r.offset, *s));
    }
    for (key, mut got) in totals {
        got.sort();
        got.dedup_by_key(|x| x.0);
        if expected.get(&key) != Some(&got) {
            v.wrong_totals.push(key);
        }
    }
    v
}

/// Waits (bounded) until the totals group has committed past every record now in its input.
pub fn wait_caught_up(prefix: &str, timeout: Duration) {
    let topic = format!("{prefix}totals.input");
    let expected = next_offsets(&topic);
    wait_committed(prefix, &expected, timeout);
}

/// Waits (bounded) until the totals group has committed at least `expected`.
pub fn wait_committed(prefix: &str, expected: &BTreeMap<i32, i64>, timeout: Duration) {
    let group = format!("{prefix}evalstream.totals");
    let topic = format!("{prefix}totals.input");
    it::wait_until("the totals group to commit its whole input", timeout, || {
        std::thread::sleep(Duration::from_millis(400));
        group_committed(&group, &topic, expected)
    });
}
