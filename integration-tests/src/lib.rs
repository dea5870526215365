//! Helpers shared by the broker tests (`--features broker`): where the broker is, unique names,
//! topics, raw produce, an independent reader, and the `evalstream` binary as a subprocess.
//!
//! Every test makes its own randomly named topics (or a random `EVALSTREAM_TOPIC_PREFIX`), so
//! tests never see each other's records and can run in parallel against one broker. The helpers
//! are blocking and panic with a message that says what failed: they are test scaffolding, and a
//! panic is how a test reports. Do not call them from inside an async runtime (use
//! `spawn_blocking`): the admin calls drive their own small runtime.
//!
//! The reader here is deliberately independent of the product's reader (`evalstream consume`):
//! tests that prove exactly-once must not share the code they check.
#![warn(missing_docs)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Default address of the local development broker (`deploy/local/broker.sh start`).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// How long helpers wait for the broker before failing the test.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable naming the kind of broker under test: `kafka` (or unset) for Apache
/// Kafka and brokers that implement `read_committed` as it does, `tansu` for Tansu, which shows
/// aborted transactional records to `read_committed` readers. `deploy/local/test.sh` sets it.
pub const TEST_BROKER_ENV: &str = "EVALSTREAM_TEST_BROKER";

/// The kind of broker the tests run against (see [`TEST_BROKER_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBroker {
    /// Apache Kafka (or a broker with Kafka's transaction semantics): a `read_committed` reader
    /// never sees an aborted record.
    Kafka,
    /// Tansu: aborted transactional records are visible to `read_committed` readers, so only a
    /// reader that joins outputs against progress markers is exact.
    Tansu,
}

impl TestBroker {
    /// Whether `read_committed` readers can see aborted transactional records on this broker.
    pub fn leaks_aborted_records(self) -> bool {
        self == TestBroker::Tansu
    }
}

/// The kind of broker under test, from [`TEST_BROKER_ENV`]. Panics on an unknown value: a test
/// that guessed the broker's semantics would prove nothing.
pub fn test_broker() -> TestBroker {
    match std::env::var(TEST_BROKER_ENV).unwrap_or_default().trim() {
        "" | "kafka" => TestBroker::Kafka,
        "tansu" => TestBroker::Tansu,
        other => panic!("{TEST_BROKER_ENV}={other:?}: expected kafka or tansu"),
    }
}

/// The broker under test, decided once per test process:
///
/// 0. the broker set with [`use_bootstrap`] (a test that runs a broker of its own);
/// 1. `KAFKA_BOOTSTRAP_SERVERS` when set (what `deploy/local/test.sh` and CI do);
/// 2. else, when a Docker engine answers, an `apache/kafka` container started for this test
///    process through testcontainers (see [`container`]), removed when the process exits;
/// 3. else the local development broker, [`DEFAULT_BOOTSTRAP`].
pub fn bootstrap_servers() -> String {
    if let Some(b) = BOOTSTRAP_OVERRIDE.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return b;
    }
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            if let Some(servers) =
                std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|s| !s.trim().is_empty())
            {
                return servers;
            }
            #[cfg(feature = "broker")]
            if let Some(servers) = container::start() {
                return servers;
            }
            DEFAULT_BOOTSTRAP.to_string()
        })
        .clone()
}

/// Apache Kafka in Docker for machines with a Docker engine and no broker of their own, through
/// `testcontainers-modules`' Apache Kafka module (KRaft, one node, the JVM image).
///
/// Not run on our development and CI machines (they have no Docker engine; `deploy/local/test.sh`
/// starts Kafka as a plain JVM instead): it is compiled and linted there, and exercised where
/// Docker exists.
///
/// Single node: the image's defaults are replaced by the module's environment, so the
/// transaction state log's replication factor and `min.insync.replicas` are set to 1 here, or
/// the transaction coordinator never loads and `init_transactions` hangs.
#[cfg(feature = "broker")]
pub mod container {
    use std::sync::Mutex;

    use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::{Container, ImageExt};

    /// Overrides the `apache/kafka` image tag (default: the module's tested tag).
    pub const IMAGE_TAG_ENV: &str = "EVALSTREAM_TEST_KAFKA_IMAGE_TAG";

    /// The container of this test process, dropped (stopped and removed) at exit.
    static RUNNING: Mutex<Option<Container<Kafka>>> = Mutex::new(None);

    /// Whether a Docker engine is configured: `DOCKER_HOST`, or the default socket.
    fn docker_configured() -> bool {
        std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty())
            || std::path::Path::new("/var/run/docker.sock").exists()
    }

    /// Starts the broker container and returns its bootstrap address, or `None` (with the
    /// reason on stderr) when no Docker engine answers.
    pub fn start() -> Option<String> {
        if !docker_configured() {
            return None;
        }
        let request = Kafka::default()
            .with_jvm_image()
            .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0");
        let request = match std::env::var(IMAGE_TAG_ENV) {
            Ok(tag) if !tag.is_empty() => request.with_tag(tag),
            _ => request,
        };
        let container = match request.start() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("testcontainers: no Kafka container ({e}); using the local broker");
                return None;
            }
        };
        let port = match container.get_host_port_ipv4(KAFKA_PORT) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("testcontainers: Kafka container has no mapped port ({e})");
                return None;
            }
        };
        let servers = format!("127.0.0.1:{port}");
        eprintln!("testcontainers: Apache Kafka container at {servers}");
        if let Ok(mut slot) = RUNNING.lock() {
            *slot = Some(container);
            // Statics are never dropped; remove the container when the test process exits.
            // SAFETY: registers a plain `extern "C" fn()` with no captured state.
            unsafe { libc::atexit(remove_at_exit) };
        }
        Some(servers)
    }

    extern "C" fn remove_at_exit() {
        if let Ok(mut slot) = RUNNING.lock() {
            drop(slot.take());
        }
    }
}

static BOOTSTRAP_OVERRIDE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Points every helper (and every `evalstream` subprocess started afterwards) of this test
/// process at `bootstrap`: for a test that runs a broker of its own. Process-wide, so such a
/// test lives in a test file of its own.
pub fn use_bootstrap(bootstrap: &str) {
    *BOOTSTRAP_OVERRIDE.lock().unwrap_or_else(|p| p.into_inner()) = Some(bootstrap.to_string());
}

/// A name that no other test (or earlier run against the same broker) uses:
/// `<prefix>-<16 hex digits>`. Valid as a topic name, group id and transactional id as long as
/// `prefix` is (letters, digits, `.`, `_`, `-`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Client properties every helper starts from: the bootstrap servers.
pub fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers());
    c
}

/// Deletes every topic whose name starts with `prefix` (what a test created under it); errors
/// are ignored: this is clean-up.
pub fn delete_topics_under(prefix: &str) {
    let meta: BaseConsumer = client_config().create().unwrap();
    let md = meta.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _ = rt.block_on(admin.delete_topics(&refs, &AdminOptions::new()));
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting a tokio runtime for the admin client")
        .block_on(f)
}

/// Creates `name` with `partitions` partitions (replication 1) and waits until its metadata shows
/// every partition, so the next produce or assign does not race the creation.
pub fn create_topic(name: &str, partitions: i32) {
    create_topic_with_config(name, partitions, &[]);
}

/// As [`create_topic`], with topic configs such as `("cleanup.policy", "compact")`.
/// A topic that already exists is accepted as is.
pub fn create_topic_with_config(name: &str, partitions: i32, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        client_config().create().expect("creating an admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = block_on(admin.create_topics([&topic], &opts))
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => panic!("creating topic {t}: {code}"),
        }
    }
    let deadline = Instant::now() + BROKER_TIMEOUT;
    while partition_count(name) < partitions as usize {
        assert!(Instant::now() < deadline, "topic {name} did not appear in metadata in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many partitions `topic` has (0 when it does not exist).
pub fn partition_count(topic: &str) -> usize {
    let consumer: BaseConsumer = client_config().create().expect("creating a metadata client");
    let md = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

/// A record to produce as raw bytes (no codec): how tests write hand-made DLQ records, garbage
/// for the codec, or inputs whose exact bytes matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers in order; repeated names allowed.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Partition; `None` lets the partitioner choose (by key).
    pub partition: Option<i32>,
}

impl RawRecord {
    /// A record with this value and nothing else.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        RawRecord { value: Some(value.into()), ..RawRecord::default() }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), Some(value.into())));
        self
    }

    /// Pins the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Produces `records` to `topic` in order with an idempotent, non-transactional producer and waits
/// for every acknowledgement. Returns the `(partition, offset)` of each record, in input order.
pub fn produce_raw(topic: &str, records: &[RawRecord]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("creating a producer");
    let futures: Vec<_> = records
        .iter()
        .map(|r| {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(k) = &r.key {
                rec = rec.key(&k[..]);
            }
            if let Some(v) = &r.value {
                rec = rec.payload(&v[..]);
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            if !r.headers.is_empty() {
                let mut hs = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in &r.headers {
                    hs = hs.insert(Header { key: k.as_str(), value: v.as_deref() });
                }
                rec = rec.headers(hs);
            }
            loop {
                match producer.send_result(rec) {
                    Ok(f) => break f,
                    // The local queue is full (large inputs): the producer's own thread drains it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("enqueueing a record for {topic}: {e}"),
                }
            }
        })
        .collect();
    producer.flush(BROKER_TIMEOUT).unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
    block_on(async {
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            let delivery = f.await.expect("delivery report channel closed");
            let d = delivery.unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
            out.push((d.partition, d.offset));
        }
        out
    })
}

/// A record as read back, owned, with the accessors tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms since the epoch, when the record has one.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers in order; repeated names kept.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }

    /// [`Record::header`] as UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The key as UTF-8 text.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// Transaction isolation of [`read_topic_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only committed transactional records (what our processors and operators see).
    ReadCommitted,
    /// Everything, aborted transactional records included (to count what an abort left behind).
    ReadUncommitted,
}

/// Every record of `topic` (all partitions) that is there now, read committed: the independent
/// check a test makes after driving the system. Empty when the topic has no records.
pub fn read_topic(topic: &str) -> Vec<Record> {
    read_topic_with(topic, Isolation::ReadCommitted)
}

/// How long [`read_topic_stable`] waits for open transactions to end. A dead instance's
/// transaction ends when the broker's `transaction.timeout.ms` (the tests use at most 30 s)
/// expires and its abort check runs (every 10 s by default).
pub const VERDICT_STABLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits (bounded by [`VERDICT_STABLE_TIMEOUT`]) until no transaction is open on any partition of
/// `topic`: the last stable offset (what a `read_committed` reader can reach) equals the high
/// watermark. librdkafka answers a watermark query with the client's isolation level, so one
/// `read_committed` and one `read_uncommitted` client give the two.
pub fn wait_stable(topic: &str) {
    let client = |isolation: &str| -> BaseConsumer {
        client_config().set("isolation.level", isolation).create().expect("creating a client")
    };
    let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
    let partitions = partition_count(topic) as i32;
    let started = Instant::now();
    for p in 0..partitions {
        loop {
            let lso = committed.fetch_watermarks(topic, p, BROKER_TIMEOUT).map(|(_, h)| h);
            let hw = uncommitted.fetch_watermarks(topic, p, BROKER_TIMEOUT).map(|(_, h)| h);
            if let (Ok(lso), Ok(hw)) = (lso, hw) {
                if lso >= hw {
                    break;
                }
            }
            assert!(
                started.elapsed() < VERDICT_STABLE_TIMEOUT,
                "{topic}[{p}] still has an open transaction after {VERDICT_STABLE_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// [`read_topic`] once no transaction is open on `topic` ([`wait_stable`]): the complete
/// committed content, what a verdict must rest on. A `read_committed` reader stops at the first
/// open transaction, so without the wait a dead instance's dangling transaction would hide
/// everything committed after it.
pub fn read_topic_stable(topic: &str) -> Vec<Record> {
    wait_stable(topic);
    read_topic(topic)
}

/// As [`read_topic`] with a chosen isolation. Reads each non-empty partition from its start until
/// librdkafka reports its end; records are in partition order, then offset order.
///
/// The end is the end-of-partition event, not a high-watermark snapshot: the development broker
/// (Tansu) answers ListOffsets(latest) with the base offset of the last record batch + 1, which
/// would cut a multi-record batch short, while the event (derived from fetch responses) is right.
/// Call it once writers have stopped: on a topic still being written it reads until it catches up.
/// On Apache Kafka a `read_committed` read first waits for transactions in flight to settle (see
/// [`wait_until_stable`]).
pub fn read_topic_with(topic: &str, isolation: Isolation) -> Vec<Record> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", unique_name("it-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            match isolation {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            },
        )
        .create()
        .expect("creating a reader");
    let md = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_else(|| panic!("topic {topic} does not exist"));
    let mut tpl = TopicPartitionList::new();
    let mut pending = BTreeSet::new();
    for p in partitions {
        if isolation == Isolation::ReadCommitted && test_broker() == TestBroker::Kafka {
            wait_until_stable(topic, p);
        }
        // Good enough to tell an empty partition (high == low) from a non-empty one. A
        // read_committed client's "high" is the last stable offset (librdkafka asks ListOffsets
        // with the client's isolation level).
        let (low, high) = consumer
            .fetch_watermarks(topic, p, BROKER_TIMEOUT)
            .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"));
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("assignment");
            pending.insert(p);
        }
    }
    let mut out = Vec::new();
    if pending.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assigning partitions");
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        assert!(
            last_progress.elapsed() < BROKER_TIMEOUT,
            "reading {topic}: no progress for {BROKER_TIMEOUT:?}; partitions not at end: {pending:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                last_progress = Instant::now();
                out.push(Record {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                pending.remove(&p);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e} (retrying)"),
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// How long [`read_topic`] waits for a transaction in flight to settle before reading.
pub const STABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits (at most [`STABLE_TIMEOUT`]) until no transaction is in flight on `topic`[`partition`]:
/// its last stable offset (LSO) equals its high watermark.
///
/// Why: on Apache Kafka, `commit_transaction` returns once the coordinator has logged the commit;
/// the commit markers reach the data partitions a moment later, and until then a
/// `read_committed` reader's end of the partition is the LSO, before the committed records. A
/// test that reads right after a writer exits would otherwise miss a partition's last
/// transaction (Tansu has no such window). If the LSO stays behind (an open transaction of a
/// producer that died, aborted only by fencing or `transaction.timeout.ms`), the read goes on:
/// those records are not committed.
fn wait_until_stable(topic: &str, partition: i32) {
    let stable: BaseConsumer = client_config()
        .set("isolation.level", "read_committed")
        .create()
        .expect("creating a watermark client");
    let all: BaseConsumer = client_config()
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("creating a watermark client");
    let deadline = Instant::now() + STABLE_TIMEOUT;
    loop {
        let lso = stable.fetch_watermarks(topic, partition, BROKER_TIMEOUT).map(|w| w.1);
        let hw = all.fetch_watermarks(topic, partition, BROKER_TIMEOUT).map(|w| w.1);
        match (lso, hw) {
            (Ok(lso), Ok(hw)) if lso >= hw => return,
            (Ok(lso), Ok(hw)) if Instant::now() >= deadline => {
                eprintln!(
                    "reading {topic}[{partition}]: a transaction is still open after \
                     {STABLE_TIMEOUT:?} (last stable offset {lso}, high watermark {hw}); \
                     reading what is committed"
                );
                return;
            }
            (Err(e), _) | (_, Err(e)) if Instant::now() >= deadline => {
                panic!("watermarks of {topic}[{partition}]: {e}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Path of the `evalstream` binary, built (once per test process) if needed.
///
/// `EVALSTREAM_BIN` wins when set (CI may build once and point every test at it). Otherwise the
/// binary is looked for next to this test executable (`<target>/<profile>/deps/<test>` →
/// `<target>/<profile>/evalstream`), which honours `CARGO_TARGET_DIR` and the profile without
/// guessing, and `cargo build -p evalstream` runs first for that target dir and profile: cargo
/// does nothing when it is fresh, and a test never runs against a stale binary. (Cargo only
/// provides `CARGO_BIN_EXE_*` to tests of the binary's own package.)
pub fn evalstream_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("EVALSTREAM_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("locating the test executable");
        let profile_dir = exe
            .parent()
            .filter(|d| d.ends_with("deps"))
            .and_then(Path::parent)
            .expect("test executable is not in <target>/<profile>/deps; set EVALSTREAM_BIN")
            .to_path_buf();
        build_evalstream(&profile_dir);
        let built = profile_dir.join(format!("evalstream{}", std::env::consts::EXE_SUFFIX));
        assert!(built.exists(), "{} missing after cargo build", built.display());
        private_copy(&built)
    })
    .clone()
}

/// Copies the freshly built binary to a path of this test process's own, so that every instance a
/// test starts (restarts after a kill included) runs the same build. Several checkouts may share
/// one `CARGO_TARGET_DIR`; `<target>/<profile>/evalstream` is then whichever built last and can
/// change in the middle of a test. A hard link costs nothing and keeps this build's file alive
/// when cargo replaces the shared path (it unlinks and links anew); a copy is the fallback where
/// links are not possible.
fn private_copy(built: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evalstream-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a directory for the evalstream binary");
    let bin = dir.join(built.file_name().expect("binary has a file name"));
    let _ = std::fs::remove_file(&bin);
    if std::fs::hard_link(built, &bin).is_err() {
        std::fs::copy(built, &bin).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
    bin
}

fn build_evalstream(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("profile directory has a parent");
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let profile = if profile == "debug" { "dev" } else { profile };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", "evalstream", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("running cargo build -p evalstream");
    assert!(
        out.status.success(),
        "cargo build -p evalstream failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `Command` for the `evalstream` binary pointed at the test broker, with no configuration
/// file, no topic prefix and no ops server inherited from the caller's environment (tests set
/// those explicitly, e.g. `.env("EVALSTREAM_TOPIC_PREFIX", ...)`), and the committed view of
/// the broker under test ([`committed_view`]).
pub fn evalstream() -> Command {
    let mut cmd = Command::new(evalstream_bin());
    cmd.env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
        .env_remove("EVALSTREAM_BOOTSTRAP_SERVERS")
        .env_remove("EVALSTREAM_CONFIG")
        .env_remove("EVALSTREAM_TOPIC_PREFIX")
        .env("EVALSTREAM_COMMITTED_VIEW", committed_view())
        .env("EVALSTREAM_OPS_LISTEN", "off");
    cmd
}

/// The `committed_view` every process under test uses: `markers` on a broker that leaks
/// aborted records, else `broker`.
pub fn committed_view() -> &'static str {
    if broker_leaks_aborted() {
        "markers"
    } else {
        "broker"
    }
}

/// What a finished subprocess printed.
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CmdOutput {
    /// Panics (showing both streams) unless the command exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "command failed: {self}");
        self
    }

    /// Panics (showing both streams) unless the command exited non-zero.
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.status.success(), "command unexpectedly succeeded: {self}");
        self
    }

    /// Standard output parsed as JSON lines (blank lines skipped).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- stdout\n{}--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion, feeding `stdin` (or nothing: stdin is closed), and captures output.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> CmdOutput {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A writer thread, so a child that prints a lot before reading cannot deadlock us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `contents` to a fresh file in the system temp dir and returns its path (tests that pass
/// `--file PATH` to the binary).
pub fn temp_file(name_prefix: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(unique_name(name_prefix));
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Whether the broker under test exposes aborted transactional records to `read_committed`
/// readers (`EVALSTREAM_TEST_BROKER=tansu`). On Apache Kafka (the default) every verdict comes
/// from a plain `read_committed` consumer; on such a broker the tests must reconstruct
/// `read_committed` from the runtime's progress markers instead, and say so.
pub fn broker_leaks_aborted() -> bool {
    test_broker().leaks_aborted_records()
}

/// A TCP port that was free a moment ago (for an ops server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// `GET path` on `127.0.0.1:port`: the whole HTTP response (status line, headers, body), or
/// `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Sum of a metric's samples (OpenMetrics text) whose line contains every `filter` string.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
