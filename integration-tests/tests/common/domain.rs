//! Shared machinery of the domain tests (`domain_cli.rs`, `domain_scenario.rs`): a topology under
//! a random prefix, keys and a signer registry, the domain processors as OS processes, inputs
//! built as the wire contract's JSON (not with the processors' Rust types), settlements signed as
//! the ledger-proof format specifies (built here from the spec, not with the product's helper),
//! and an independent `read_committed` reader that decodes outputs to JSON.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use evalstream_audit::signer::{LocalKeySigner, Signer as _};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::{avro_to_json, Codec};
use evalstream_runtime::headers::{ERR_CLASS, ERR_MESSAGE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::eos::Instance;

/// One test's world: a topic prefix with the whole topology applied, and keys.
pub struct World {
    /// `EVALSTREAM_TOPIC_PREFIX`.
    pub prefix: String,
    /// Keys and registry live here.
    pub dir: PathBuf,
    /// `signers.json`: a local audit key and a finance key.
    pub signers: PathBuf,
    /// The audit-chain signing key.
    pub audit_key: PathBuf,
    /// The finance key (the development Finance stand-in signs with it).
    pub finance_key: PathBuf,
    /// A P-256 key that is in no registry (forged settlements).
    pub rogue_key: PathBuf,
    /// The codec.
    pub codec: Codec,
    probe: std::sync::OnceLock<Probe>,
    /// Whether dropping this value removes `dir` (not for a [`World::handle`]).
    owned: bool,
}

/// Kid of the finance key.
pub const FINANCE_KID: &str = "finance-test";
/// Kid of the audit key.
pub const AUDIT_KID: &str = "audit-test";

impl World {
    /// A fresh prefix with `evalstream topology apply` run under it, and keys.
    pub fn new(name: &str) -> World {
        let prefix = format!("{}.", it::unique_name(name));
        let dir = std::env::temp_dir().join(it::unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        let signers = dir.join("signers.json");
        let w = World {
            prefix,
            signers: signers.clone(),
            audit_key: dir.join("audit.pem"),
            finance_key: dir.join("finance.pem"),
            rogue_key: dir.join("rogue.pem"),
            dir,
            codec: Codec::from_env().expect("codec"),
            probe: std::sync::OnceLock::new(),
            owned: true,
        };
        w.cli(&["topology", "apply"]).assert_success();
        w.wait_for_leaders();
        let s = signers.to_str().unwrap();
        w.cli(&[
            "signers",
            "add",
            "--file",
            s,
            "--kid",
            AUDIT_KID,
            "--generate",
            w.audit_key.to_str().unwrap(),
            "--valid-from",
            "2000-01-01T00:00:00Z",
        ])
        .assert_success();
        w.cli(&[
            "signers",
            "add",
            "--file",
            s,
            "--kid",
            FINANCE_KID,
            "--kind",
            "finance",
            "--generate",
            w.finance_key.to_str().unwrap(),
            "--valid-from",
            "2000-01-01T00:00:00Z",
        ])
        .assert_success();
        LocalKeySigner::generate(&w.rogue_key).unwrap();
        w
    }

    /// Waits until every partition of every topic of the topology has a leader: right after
    /// `topology apply` a new topic's partitions can answer NotLeaderForPartition for a moment,
    /// and a processor's state restore treats that as fatal (the engine's restore is not ours to
    /// change here; reported to its owner).
    fn wait_for_leaders(&self) {
        let topology = evalstream_runtime::topology::Topology::bundled().unwrap();
        let client: BaseConsumer = it::client_config().create().unwrap();
        for t in topology.topics() {
            let topic = self.topic(&t.name);
            for p in 0..t.partitions {
                it::wait_until(
                    &format!("a leader for {topic}[{p}]"),
                    Duration::from_secs(60),
                    || client.fetch_watermarks(&topic, p, Duration::from_secs(5)).is_ok(),
                );
            }
        }
    }

    /// The same world for another thread (e.g. a producer): shares prefix and keys, owns nothing.
    pub fn handle(&self) -> World {
        World {
            prefix: self.prefix.clone(),
            dir: self.dir.clone(),
            signers: self.signers.clone(),
            audit_key: self.audit_key.clone(),
            finance_key: self.finance_key.clone(),
            rogue_key: self.rogue_key.clone(),
            codec: self.codec.clone(),
            probe: std::sync::OnceLock::new(),
            owned: false,
        }
    }

    /// The physical name of a logical topic.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// `evalstream <args>` under this prefix and registry.
    pub fn cli(&self, args: &[&str]) -> it::CmdOutput {
        let mut cmd = it::evalstream();
        cmd.env("EVALSTREAM_TOPIC_PREFIX", &self.prefix)
            .env("SIGNERS_FILE", &self.signers)
            .args(args);
        let began = Instant::now();
        let out = it::run(&mut cmd, None);
        if std::env::var_os("EVALSTREAM_TEST_TIMING").is_some() {
            eprintln!(
                "evalstream {} took {:?}",
                args[..args.len().min(2)].join(" "),
                began.elapsed()
            );
        }
        out
    }

    /// A processor instance with this world's prefix, registry, audit key and `extra` env.
    pub fn instance(&self, processor: &str, id: &str, extra: &[(&str, &str)]) -> Instance {
        let mut i = Instance::new(processor, &self.prefix, id)
            .env("SIGNERS_FILE", self.signers.to_str().unwrap())
            .env("AUDIT_SIGNING_KEY_FILE", self.audit_key.to_str().unwrap())
            .env("AUDIT_SIGNER_KID", AUDIT_KID)
            .env("EVALSTREAM_COMMIT_INTERVAL_MS", "100");
        for (k, v) in extra {
            i = i.env(k, v);
        }
        i
    }

    /// Encodes `value` (the wire contract's JSON form) for `logical` with `schema`.
    pub fn encode(&self, logical: &str, schema: &str, value: &Value) -> Vec<u8> {
        self.codec
            .encode_json(&self.topic(logical), schema, value)
            .unwrap_or_else(|e| panic!("{schema}: {e}: {value}"))
    }

    /// Produces `(key, value)` JSON records to `logical` with its schema, in order.
    pub fn produce(
        &self,
        logical: &str,
        schema: &str,
        records: &[(String, Value)],
    ) -> Vec<(i32, i64)> {
        let raws: Vec<it::RawRecord> = records
            .iter()
            .map(|(k, v)| {
                it::RawRecord::new(self.encode(logical, schema, v)).key(k.as_bytes().to_vec())
            })
            .collect();
        if raws.is_empty() {
            return Vec::new();
        }
        it::produce_raw(&self.topic(logical), &raws)
    }

    /// Every committed record of `logical`, decoded to JSON: (partition, offset, key, value).
    pub fn read(&self, logical: &str) -> Vec<(i32, i64, String, Value)> {
        it::read_topic(&self.topic(logical))
            .into_iter()
            .map(|r| {
                let d = self.codec.decode(r.value.as_deref().expect("value")).expect("decodes");
                (
                    r.partition,
                    r.offset,
                    r.key_str().unwrap_or_default().to_string(),
                    avro_to_json(&d.value),
                )
            })
            .collect()
    }

    /// Every committed DLQ record of `logical`: (key, class, reason).
    pub fn dlq(&self, logical: &str) -> Vec<(String, String, String)> {
        it::read_topic(&self.topic(&format!("{logical}.dlq")))
            .into_iter()
            .map(|r| {
                (
                    r.key_str().unwrap_or_default().to_string(),
                    r.header_str(ERR_CLASS).unwrap_or_default().to_string(),
                    r.header_str(ERR_MESSAGE).unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// A settlement in the wire JSON form, its proof built from the ledger-proof spec and signed
    /// with `key` as `kid`.
    pub fn settlement(&self, key: &std::path::Path, kid: &str, p: &Proof) -> Value {
        let signed = proof_bytes(p);
        let signature =
            LocalKeySigner::from_file(key, Some(kid.to_string())).unwrap().sign(&signed).unwrap();
        json!({
            "ledger_entry_id": p.ledger_entry_id,
            "allocation_id": p.allocation_id,
            "amount_minor": p.amount_minor,
            "currency": p.currency,
            "proof": {"base64": b64(&signed)},
            "kid": kid,
            "signature": {"base64": b64(&signature)},
            "settled_at": p.settled_at,
        })
    }

    /// A settlement signed with the finance key.
    pub fn good_settlement(&self, p: &Proof) -> Value {
        self.settlement(&self.finance_key, FINANCE_KID, p)
    }

    /// Waits (bounded) until every consumer group of `processors` has processed everything
    /// committed on its input, DLQ-bound and retry topics included (a record waiting on a retry
    /// topic keeps it busy), and no transaction is open on those topics, twice in a row.
    pub fn wait_quiescent(&self, processors: &[&str], timeout: Duration) {
        let began = Instant::now();
        let deadline = began + timeout;
        let mut calm = 0;
        while calm < 2 {
            if Instant::now() >= deadline {
                let why: Vec<String> = processors
                    .iter()
                    .filter_map(|p| self.lagging(p).err().map(|e| format!("{p}: {e}")))
                    .collect();
                panic!("processors {processors:?} did not catch up within {timeout:?}: {why:?}");
            }
            if processors.iter().all(|p| self.caught_up(p)) {
                calm += 1;
            } else {
                calm = 0;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if std::env::var_os("EVALSTREAM_TEST_TIMING").is_some() {
            eprintln!("quiescent after {:?}", began.elapsed());
        }
    }

    /// Whether `processor`'s group has processed everything committed on its inputs now.
    pub fn caught_up(&self, processor: &str) -> bool {
        self.lagging(processor).is_ok()
    }

    /// `Err(what)` while `processor`'s group has not processed everything committed on its
    /// inputs (or a transaction is open on one of them).
    pub fn lagging(&self, processor: &str) -> Result<(), String> {
        let inputs: &[&str] = match processor {
            "submissions" => &["eval.submissions"],
            "policy" => &[
                "policy.decisions",
                "eval.promotion-requests",
                "alloc.requests",
                "evalstream.switches",
            ],
            "settlement" => &[
                "finance.settlements",
                "finance.settlements.retry",
                "alloc.state",
                "alloc.corrections",
                "alloc.corrections.retry",
                "evalstream.switches",
            ],
            "audit-chain" => &["audit.events"],
            "totals" => &["totals.input", "totals.input.retry"],
            other => panic!("unknown processor {other}"),
        };
        let probe = self.probe.get_or_init(Probe::new);
        let group = format!("{}evalstream.{processor}", self.prefix);
        let mut tpl = TopicPartitionList::new();
        for t in inputs {
            for p in 0..PARTITIONS {
                tpl.add_partition(&self.topic(t), p);
            }
        }
        let committed = probe
            .group(&group)
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| format!("committed offsets: {e}"))?;
        let mut assign = TopicPartitionList::new();
        let mut pending = 0;
        let timeout = Duration::from_secs(10);
        for e in committed.elements() {
            let (t, p) = (e.topic().to_string(), e.partition());
            let (lo, hw) =
                probe.all.fetch_watermarks(&t, p, timeout).map_err(|e| format!("{t}[{p}]: {e}"))?;
            let (_, lso) = probe
                .stable
                .fetch_watermarks(&t, p, timeout)
                .map_err(|e| format!("{t}[{p}]: {e}"))?;
            if lso < hw {
                return Err(format!("{t}[{p}]: a transaction is open (stable {lso}, high {hw})"));
            }
            let start = match e.offset() {
                Offset::Offset(o) => o,
                _ => lo,
            };
            if hw == lo || start >= hw {
                continue;
            }
            assign.add_partition_offset(&t, p, Offset::Offset(start)).unwrap();
            pending += 1;
        }
        if pending == 0 {
            return Ok(());
        }
        // Between the group's position and the end there may be only transaction markers: read
        // committed from the position; any record means work not done.
        let reader: BaseConsumer = it::client_config()
            .set("group.id", it::unique_name("quiescence"))
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
            .unwrap();
        reader.assign(&assign).unwrap();
        let until = Instant::now() + timeout;
        while pending > 0 && Instant::now() < until {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    use rdkafka::message::Message;
                    return Err(format!(
                        "{}[{}]@{} not processed",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    ));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => pending -= 1,
                _ => {}
            }
        }
        if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} partition(s) gave no end within {timeout:?}"))
        }
    }

    /// A world over topics that exist already (to look at a previous run).
    pub fn existing(prefix: &str) -> World {
        World {
            prefix: prefix.into(),
            dir: std::env::temp_dir(),
            signers: PathBuf::new(),
            audit_key: PathBuf::new(),
            finance_key: PathBuf::new(),
            rogue_key: PathBuf::new(),
            codec: Codec::from_env().expect("codec"),
            probe: std::sync::OnceLock::new(),
            owned: false,
        }
    }
}

/// Partitions of every topology topic.
pub const PARTITIONS: i32 = 4;

/// Clients the quiescence check reuses.
pub struct Probe {
    stable: BaseConsumer,
    all: BaseConsumer,
    groups: std::sync::Mutex<BTreeMap<String, std::sync::Arc<BaseConsumer>>>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            stable: it::client_config().set("isolation.level", "read_committed").create().unwrap(),
            all: it::client_config().set("isolation.level", "read_uncommitted").create().unwrap(),
            groups: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// A client that can read `group`'s committed offsets (it never joins the group).
    fn group(&self, group: &str) -> std::sync::Arc<BaseConsumer> {
        let mut g = self.groups.lock().unwrap();
        g.entry(group.to_string())
            .or_insert_with(|| {
                std::sync::Arc::new(
                    it::client_config()
                        .set("group.id", group)
                        .set("enable.auto.commit", "false")
                        .create()
                        .unwrap(),
                )
            })
            .clone()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The signed content of a ledger proof.
#[derive(Debug, Clone)]
pub struct Proof {
    /// Ledger entry.
    pub ledger_entry_id: String,
    /// Allocation.
    pub allocation_id: String,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Booking time.
    pub settled_at: i64,
}

/// The proof bytes as docs/domain.md specifies them: RFC 8785 canonical JSON of the six members
/// (keys in code-point order, no whitespace, integers as written). Built by hand so that the
/// test does not share the product's serializer.
pub fn proof_bytes(p: &Proof) -> Vec<u8> {
    let s = |v: &str| serde_json::to_string(v).unwrap();
    format!(
        r#"{{"allocation_id":{},"amount_minor":{},"currency":{},"format":"evalstream.finance.ledger_proof.v1","ledger_entry_id":{},"settled_at":{}}}"#,
        s(&p.allocation_id),
        p.amount_minor,
        s(&p.currency),
        s(&p.ledger_entry_id),
        p.settled_at
    )
    .into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    evalstream_runtime::b64::encode(bytes)
}

/// The code of a domain DLQ reason (`invalid record: <code>: ...`), else the class.
pub fn reason_code(class: &str, reason: &str) -> String {
    let rest = reason.strip_prefix("invalid record: ").unwrap_or(reason);
    match rest.split_once(": ") {
        Some((code, _))
            if class == "validation"
                && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            code.to_string()
        }
        _ => class.to_string(),
    }
}

/// Groups `(key, value)` records by key, keeping order.
pub fn by_key(records: &[(i32, i64, String, Value)]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, _, k, v) in records {
        m.entry(k.clone()).or_default().push(v.clone());
    }
    m
}
