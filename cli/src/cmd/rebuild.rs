//! `evalstream rebuild <processor>`: rebuild a processor's state by replaying its inputs, and
//! compare it with the live state (the runbook's `rebuild_from_audit.sh`, "restore … rebuild").
//!
//! ```text
//!  live system (this config's prefix)              rebuilt system (fresh prefix, same cluster)
//!  1 apply                                          evalstream topology apply, leaders elected
//!  2 copy   inputs[p] [log start, end at start) ──► inputs[p] (same partition, key, value,
//!           (committed records, read_committed)     headers, timestamp; transactional)
//!  3 run                                            evalstream run <processor>: fresh group,
//!                                                   fresh changelog, fresh outputs
//!  4 wait   until the rebuilt group has consumed every copied record and its retry topics
//!  5 align  live changelog's progress markers ──► live consumed input up to offset P[p];
//!           copy more while P[p] is past the copy; wait while live has not reached the copy
//!  6 digest live changelog (committed view) vs rebuilt changelog: SHA-256 of the sorted
//!           (partition, key) → value (rebuild/digest.rs); the difference, first N keys
//!  7 cleanup  rebuilt processor stopped; rebuilt topics deleted (unless --keep)
//!  (--cutover) live group empty, positions aligned ──► the difference written into the live
//!           changelog in one transaction, then the live state read back and digested again
//! ```
//!
//! **Why a fresh prefix, and copied inputs.** The runtime names a processor's group, changelog
//! and outputs from one topic prefix. Replaying under the live prefix with only a new group would
//! write the rebuilt outputs into the live output topics, and every downstream consumer would see
//! each result twice. Under a fresh prefix nothing the rebuild writes is visible to the live
//! system; the price is one copy of the inputs (bounded by retention, deleted afterwards). The
//! copy preserves partition, order, key, value, headers and timestamp; offsets differ (the live
//! log's transaction markers are not copied), so a processor whose state records *input offsets*
//! cannot be compared this way (none of ours does: the runtime keeps offsets in progress markers,
//! which the digest leaves out).
//!
//! **Why alignment.** The live processor keeps consuming while the rebuild runs. Its progress
//! markers say exactly which input offsets its committed state reflects, and markers and state
//! commit in one transaction: the comparison is made only when live and rebuilt state reflect
//! the same committed input records, so a difference is a real one, never a timing artefact.
//!
//! **Why `--cutover` corrects the live changelog instead of switching changelogs.** The
//! rebuilt changelog's progress markers name offsets of the *copied* inputs, which mean nothing
//! to the live inputs, so a live processor cannot be pointed at it. Once the live processor is
//! stopped (its group has no member, so nothing else writes the live changelog and no transaction
//! of it is open) and the two states reflect the same inputs, making the live state equal to the
//! rebuilt one is: write each differing or missing key's rebuilt value, and a tombstone for each
//! key only live, into the live changelog partition, in one transaction (all or nothing). The live
//! progress markers stay valid: the corrected state is what those inputs produce. The next start
//! restores the corrected state and resumes where the live processor stopped; nothing is
//! re-emitted to the outputs. Outputs already emitted from the wrong state are not rewritten: that
//! is a domain decision (reconciliation), not a state repair. Only on brokers whose
//! `read_committed` is exact (`committed_view = broker`).
//!
//! Exit codes, as `audit verify`'s so that a scheduled job tells "the state is wrong" from "the
//! job could not run": 0 the states are equal (after `--cutover`: equal now); 1 they differ; 2 a
//! usage error (from the argument parser); 4 the rebuild could not run or compare (broker,
//! configuration, a timeout, `--cutover` refused).

mod digest;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::{CommittedView, RuntimeConfig};
use evalstream_runtime::engine::{restore_changelog, Restored};
use evalstream_runtime::kafka;
use evalstream_runtime::reader::{CommittedReader, PartitionRead};
use evalstream_runtime::state::state_changelog_key;
use evalstream_runtime::topology::{ProcessorSpec, Topology};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use self::digest::{diff, show_key, Diff, State};
use super::common::delete_prefixed;
use super::common::{load_config, send_blocking};
use super::drill::{ready, wait_for_leaders, Proc};
use crate::progress::{Progress, ProgressArg};

/// Records per copy transaction: small enough to stay far inside the transaction timeout.
const COPY_BATCH: usize = 5_000;
/// Timeout of one transactional call.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Exit code: the states differ.
const DIFFERENT: u8 = 1;
/// Exit code: the rebuild could not run or compare.
const COULD_NOT_RUN: u8 = 4;

/// Arguments of `evalstream rebuild`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The processor to rebuild (as in `evalstream run`).
    pub processor: String,
    /// Topic prefix to rebuild under; must hold no topics yet. Default
    /// `rebuild-<time>-<random>.` under this configuration's prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many keys of each kind of difference to show.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Keep the rebuilt topics (default: delete them when the command ends).
    #[arg(long)]
    pub keep: bool,
    /// Make the live state equal to the rebuilt one (see the module doc / docs/operations.md):
    /// only when the live processor is stopped (its group has no member).
    #[arg(long)]
    pub cutover: bool,
    /// Bound on every wait (processor ready, caught up, live aligned), in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Directory for the rebuilt processor's log (default: a new temporary directory, removed
    /// when the rebuild succeeds).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// One copied input partition.
#[derive(Debug, Clone)]
struct Copied {
    /// Logical topic.
    topic: String,
    partition: i32,
    /// Every committed live record below this live offset is in the copy.
    live_until: i64,
    /// Records copied.
    records: u64,
}

/// Runs the rebuild.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    match run_inner(config, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("evalstream: {e:#}");
            Ok(ExitCode::from(COULD_NOT_RUN))
        }
    }
}

fn run_inner(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let registration = crate::processors::find(&args.processor)?;
    let topology = Topology::bundled()?;
    let spec = topology
        .processor(registration.name)
        .with_context(|| format!("processor {} is not in the topology", registration.name))?
        .clone();
    if cfg.group_id.is_some() && std::env::var_os("EVALSTREAM_GROUP_ID").is_none() {
        // The rebuilt processor would inherit the file's group id, i.e. the live group.
        bail!("the configuration file sets group_id; rebuild needs the topology's group names");
    }
    ensure!(
        !args.cutover || cfg.committed_view == CommittedView::Broker,
        "--cutover needs committed_view = broker (a broker whose read_committed is exact)"
    );
    let run_id = format!(
        "{}-{:06x}",
        evalstream_runtime::time::format_rfc3339_ms_aligned(
            evalstream_runtime::readiness::wall_clock_ms()
        )
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect::<String>(),
        rand::random::<u32>() & 0xff_ffff
    );
    let prefix =
        args.prefix.clone().unwrap_or_else(|| format!("{}rebuild-{run_id}.", cfg.topic_prefix));
    ensure!(
        !prefix.is_empty() && prefix != cfg.topic_prefix,
        "the rebuild prefix must differ from the live system's ({:?})",
        cfg.topic_prefix
    );
    if args.cutover {
        // Fail before any work; checked again right before the write.
        live_group_is_empty(&cfg, &spec)?;
    }
    let mut target = cfg.clone();
    target.topic_prefix = prefix.clone();
    target.group_id = None;
    ensure_no_topics(&target)?;
    let (work, temporary_work) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("evalstream-rebuild-{run_id}")), true),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let r = Rebuild { config, cfg: &cfg, target: &target, codec: &codec, spec: &spec, args: &args };
    let mut proc = None;
    let outcome = r.rebuild(&work, registration.name, &mut proc);
    if let Some(p) = proc.as_mut() {
        p.stop();
    }
    let keep = args.keep || outcome.is_err();
    let cleanup = if keep {
        format!("rebuilt topics kept under {prefix}")
    } else {
        match delete_prefixed(&target) {
            Ok(n) => format!("{n} rebuilt topic(s) under {prefix} deleted"),
            Err(e) => format!("deleting the rebuilt topics under {prefix} failed: {e:#}"),
        }
    };
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => {
            return Err(e.context(format!(
                "rebuild of {} failed ({cleanup}; processor log in {})",
                registration.name,
                work.display()
            )))
        }
    };
    report["cleanup"] = Value::String(cleanup);
    let equal = report["equal_now"].as_bool().unwrap_or(false);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        write!(out, "{}", text(&report))?;
    }
    if temporary_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(if equal { ExitCode::SUCCESS } else { ExitCode::from(DIFFERENT) })
}

struct Rebuild<'a> {
    config: Option<&'a Path>,
    cfg: &'a RuntimeConfig,
    target: &'a RuntimeConfig,
    codec: &'a Codec,
    spec: &'a ProcessorSpec,
    args: &'a Args,
}

impl Rebuild<'_> {
    fn rebuild(
        &self,
        work: &Path,
        name: &'static str,
        proc: &mut Option<Proc>,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        let timeout = Duration::from_secs(self.args.timeout);
        let live = CommittedReader::new(self.cfg, self.codec)?;
        let rebuilt = CommittedReader::new(self.target, self.codec)?;

        // 1 apply
        let out = self
            .evalstream()
            .args(["topology", "apply"])
            .stdin(Stdio::null())
            .output()
            .context("running evalstream topology apply")?;
        ensure!(
            out.status.success(),
            "topology apply under {} failed: {}",
            self.target.topic_prefix,
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_leaders(self.target, timeout)?;

        // 2 copy, up to the end of each input as of now.
        let producer: BaseProducer = kafka::transactional_producer(
            self.target,
            &format!("evalstream-rebuild-copy-{:016x}", rand::random::<u64>()),
        )
        .create()
        .context("creating the copy producer")?;
        producer.init_transactions(TXN_TIMEOUT).context("initialising transactions")?;
        let mut copied = Vec::new();
        let mut ranges = Vec::new();
        for input in self.spec.input_topics() {
            for p in live.partitions(&live.physical(input))? {
                let (low, high) = live.watermarks(input, p)?;
                copied.push(Copied {
                    topic: input.to_string(),
                    partition: p,
                    live_until: low,
                    records: 0,
                });
                ranges.push(high);
            }
        }
        let total: i64 =
            copied.iter().zip(&ranges).map(|(c, high)| high - c.live_until).sum::<i64>();
        let mut progress = Progress::new(
            self.args.progress.progress,
            format!("rebuild {name}: copy inputs"),
            "records",
        )
        .with_total(total.max(0) as u64);
        for (c, high) in copied.iter_mut().zip(&ranges) {
            copy_range(&live, &producer, self.target, c, *high, &mut progress)?;
        }
        progress.finish();

        // 3 run
        *proc = Some(self.start(work, name, timeout)?);

        // 4 + 5: caught up, aligned with live (copying more when live is ahead).
        let group = format!("{}{}", self.target.topic_prefix, self.spec.group_id);
        let live_changelog = live_changelog(self.cfg, self.spec);
        let changelog_partitions = live.partitions(&live_changelog)?;
        let deadline = Instant::now() + timeout;
        let mut progress = Progress::new(
            self.args.progress.progress,
            format!("rebuild {name}: replay"),
            "records",
        );
        let mut waited_for_live = false;
        let live_state = loop {
            let copied_total: u64 = copied.iter().map(|c| c.records).sum();
            progress = progress.with_total(copied_total);
            self.wait_caught_up(&rebuilt, &group, &copied, deadline, proc, &mut progress)?;
            let restored = restore_changelog(&live, &live_changelog, &changelog_partitions)
                .context("reading the live state")?;
            let mut behind = Vec::new();
            let mut extended = false;
            for c in copied.iter_mut() {
                let physical = live.physical(&c.topic);
                let position =
                    match restored.get(&c.partition).and_then(|r| r.positions.get(&physical)) {
                        Some(p) => *p,
                        None => live.watermarks(&c.topic, c.partition)?.0,
                    };
                if position > c.live_until {
                    if count_committed(&live, &c.topic, c.partition, c.live_until, position)? > 0 {
                        copy_range(&live, &producer, self.target, c, position, &mut progress)?;
                        extended = true;
                    }
                    c.live_until = c.live_until.max(position);
                } else if position < c.live_until {
                    let n = count_committed(&live, &c.topic, c.partition, position, c.live_until)?;
                    if n > 0 {
                        behind.push(format!("{}[{}]: {n} record(s)", c.topic, c.partition));
                    }
                }
            }
            if extended {
                continue;
            }
            behind.extend(live_retries_pending(&live, self.spec, &copied, &restored)?);
            if behind.is_empty() {
                let mut state = State::new();
                for (p, r) in restored {
                    for (k, v) in r.state.iter() {
                        state.insert((p, k.to_vec()), v.to_vec());
                    }
                }
                break state;
            }
            ensure!(
                Instant::now() < deadline,
                "the live processor has not consumed the replayed inputs within {} s ({}); is it \
                 running?",
                self.args.timeout,
                behind.join(", ")
            );
            waited_for_live = true;
            std::thread::sleep(Duration::from_millis(500));
        };
        progress.finish();
        // The rebuilt processor is done: stop it so that its changelog is final.
        if let Some(p) = proc.as_mut() {
            p.stop();
        }
        *proc = None;

        // 6 digest and compare.
        let rebuilt_changelog = format!("{}{}", self.target.topic_prefix, self.spec.changelog);
        let rebuilt_partitions = rebuilt.partitions(&rebuilt_changelog)?;
        let mut rebuilt_state = State::new();
        for (p, r) in restore_changelog(&rebuilt, &rebuilt_changelog, &rebuilt_partitions)
            .context("reading the rebuilt state")?
        {
            for (k, v) in r.state.iter() {
                rebuilt_state.insert((p, k.to_vec()), v.to_vec());
            }
        }
        let d = diff(&live_state, &rebuilt_state);
        let mut report = json!({
            "processor": name,
            "rebuilt_prefix": self.target.topic_prefix,
            "inputs": copied.iter().map(|c| json!({
                "topic": c.topic, "partition": c.partition,
                "records": c.records, "live_offset": c.live_until,
            })).collect::<Vec<_>>(),
            "live": { "changelog": live_changelog, "keys": live_state.len(),
                      "sha256": digest::digest(&live_state) },
            "rebuilt": { "changelog": rebuilt_changelog, "keys": rebuilt_state.len(),
                         "sha256": digest::digest(&rebuilt_state) },
            "equal": d.is_empty(),
            "differences": differences(&d, self.args.show),
            "waited_for_live": waited_for_live,
            "duration_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        });
        report["equal_now"] = Value::Bool(d.is_empty());
        if self.args.cutover {
            report["cutover"] =
                self.cutover(&live, &live_changelog, &changelog_partitions, &rebuilt_state, &d)?;
            report["equal_now"] = report["cutover"]["equal_now"].clone();
        }
        Ok(report)
    }

    /// `evalstream` (this binary) under the rebuild prefix, with the live configuration.
    fn evalstream(&self) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| "evalstream".into());
        let mut cmd = Command::new(exe);
        if let Some(c) = self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("EVALSTREAM_TOPIC_PREFIX", &self.target.topic_prefix)
            .env_remove("EVALSTREAM_GROUP_ID")
            .env("EVALSTREAM_LOG_FORMAT", "text");
        cmd
    }

    /// Starts the processor under the rebuild prefix and waits until it is ready.
    fn start(&self, work: &Path, name: &'static str, timeout: Duration) -> anyhow::Result<Proc> {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = work.join(format!("{name}.log"));
        let child = self
            .evalstream()
            .args(["run", name])
            .env("EVALSTREAM_INSTANCE_ID", "rebuild-0")
            .env("EVALSTREAM_OPS_LISTEN", &addr)
            .env("EVALSTREAM_LOG_FORMAT", "json")
            .env("MODE", "normal")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut p = Proc { name, child, addr, log };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited ({status}); see {}", p.name, p.log.display());
            }
            if ready(&p.addr) {
                return Ok(p);
            }
            ensure!(
                Instant::now() < deadline,
                "{name} not ready after {} s; see {}",
                timeout.as_secs(),
                p.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the rebuilt group has consumed every committed record of the copied inputs
    /// and of their retry topics (inputs first: a record moved to a retry topic is committed in
    /// the same transaction as its input offset, so it is seen in the second check).
    fn wait_caught_up(
        &self,
        rebuilt: &CommittedReader,
        group: &str,
        copied: &[Copied],
        deadline: Instant,
        proc: &mut Option<Proc>,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let offsets: BaseConsumer =
            kafka::base(self.target).set("group.id", group).create().context("group client")?;
        let mut topics: Vec<(String, i32)> =
            copied.iter().map(|c| (c.topic.clone(), c.partition)).collect();
        for c in copied {
            if let Some(retry) = self.spec.input(&c.topic).and_then(|i| i.retry.clone()) {
                topics.push((retry, c.partition));
            }
        }
        loop {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &topics {
                tpl.add_partition(&rebuilt.physical(t), *p);
            }
            let committed = offsets.committed_offsets(tpl, Duration::from_secs(15))?;
            let mut pending = None;
            let mut done = 0u64;
            for (t, p) in &topics {
                let from =
                    match committed.find_partition(&rebuilt.physical(t), *p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => 0,
                    };
                if copied.iter().any(|c| &c.topic == t) {
                    done += from.max(0) as u64;
                }
                if pending.is_none() && count_committed(rebuilt, t, *p, from, i64::MAX)? > 0 {
                    pending = Some(format!("{t}[{p}] from offset {from}"));
                }
            }
            progress.set(done);
            let Some(what) = pending else { return Ok(()) };
            if let Some(Ok(Some(status))) = proc.as_mut().map(|p| p.child.try_wait()) {
                bail!("the rebuilt processor exited ({status}) with {what} not consumed");
            }
            ensure!(
                Instant::now() < deadline,
                "the rebuilt processor has not consumed {what} within {} s",
                self.args.timeout
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `--cutover`: the difference written into the live changelog in one transaction, when
    /// the live group has no member; then the live state is read back and digested again.
    fn cutover(
        &self,
        live: &CommittedReader,
        changelog: &str,
        partitions: &[i32],
        rebuilt_state: &State,
        d: &Diff,
    ) -> anyhow::Result<Value> {
        live_group_is_empty(self.cfg, self.spec)?;
        if d.is_empty() {
            return Ok(json!({ "performed": false, "written": 0, "equal_now": true,
                              "detail": "the states are equal: nothing to write" }));
        }
        let producer: BaseProducer = kafka::transactional_producer(
            self.cfg,
            &format!("evalstream-rebuild-cutover-{:016x}", rand::random::<u64>()),
        )
        .create()?;
        producer.init_transactions(TXN_TIMEOUT)?;
        producer.begin_transaction()?;
        let mut written = 0;
        let sent = (|| -> Result<(), rdkafka::error::KafkaError> {
            for (p, k) in d.differing.iter().chain(&d.only_rebuilt) {
                let key = state_changelog_key(k);
                let value = &rebuilt_state[&(*p, k.clone())];
                send_blocking(
                    &producer,
                    BaseRecord::<[u8], [u8]>::to(changelog).partition(*p).key(&key).payload(value),
                )?;
                written += 1;
            }
            for (p, k) in &d.only_live {
                let key = state_changelog_key(k);
                send_blocking(
                    &producer,
                    BaseRecord::<[u8], [u8]>::to(changelog).partition(*p).key(&key),
                )?;
                written += 1;
            }
            producer.flush(TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)
        })();
        if let Err(e) = sent {
            let _ = producer.abort_transaction(TXN_TIMEOUT);
            return Err(anyhow::Error::new(e).context("cutover aborted: nothing was written"));
        }
        let mut after = State::new();
        for (p, r) in restore_changelog(live, changelog, partitions)? {
            for (k, v) in r.state.iter() {
                after.insert((p, k.to_vec()), v.to_vec());
            }
        }
        let equal_now = diff(&after, rebuilt_state).is_empty();
        Ok(json!({ "performed": true, "written": written, "equal_now": equal_now,
                   "live_sha256_after": digest::digest(&after) }))
    }
}

/// Fails unless the live processor's group has no member: during a cutover nothing else may
/// write the live changelog, and no transaction of the live processor may be open.
fn live_group_is_empty(cfg: &RuntimeConfig, spec: &ProcessorSpec) -> anyhow::Result<()> {
    let group = live_group(cfg, spec);
    let client: BaseConsumer = kafka::base(cfg).create()?;
    let groups = client
        .fetch_group_list(Some(&group), Duration::from_secs(15))
        .with_context(|| format!("describing the live group {group}"))?;
    let members: usize = groups.groups().iter().map(|g| g.members().len()).sum();
    ensure!(
        members == 0,
        "--cutover refused: the live group {group} has {members} member(s); stop the live \
         processor first (nothing may write its changelog during the cutover)"
    );
    Ok(())
}

/// The live consumer group, as the engine derives it (engine/names.rs).
fn live_group(cfg: &RuntimeConfig, spec: &ProcessorSpec) -> String {
    match &cfg.group_id {
        None => format!("{}{}", cfg.topic_prefix, spec.group_id),
        Some(g) => g.clone(),
    }
}

/// Records waiting in the live processor's retry topics beyond what the live state reflects
/// (its progress markers name the next offset of every subscribed topic, retry topics
/// included): inputs it has consumed but not yet applied. A rebuild drains its own retry topics,
/// so the two states are comparable only when the live state has nothing waiting either.
fn live_retries_pending(
    live: &CommittedReader,
    spec: &ProcessorSpec,
    copied: &[Copied],
    restored: &HashMap<i32, Restored>,
) -> anyhow::Result<Vec<String>> {
    let mut pending = Vec::new();
    for c in copied {
        let Some(retry) = spec.input(&c.topic).and_then(|i| i.retry.clone()) else { continue };
        let physical = live.physical(&retry);
        let from = match restored.get(&c.partition).and_then(|r| r.positions.get(&physical)) {
            Some(p) => *p,
            None => live.watermarks(&retry, c.partition)?.0,
        };
        let n = count_committed(live, &retry, c.partition, from, i64::MAX)?;
        if n > 0 {
            pending.push(format!("{retry}[{}]: {n} record(s) waiting for a retry", c.partition));
        }
    }
    Ok(pending)
}

/// The live changelog's physical name, as the engine derives it (engine/names.rs).
fn live_changelog(cfg: &RuntimeConfig, spec: &ProcessorSpec) -> String {
    match &cfg.group_id {
        None => format!("{}{}", cfg.topic_prefix, spec.changelog),
        Some(g) => format!("{g}.changelog"),
    }
}

/// Fails when topics exist under `target`'s prefix (a rebuild must start from nothing).
fn ensure_no_topics(target: &RuntimeConfig) -> anyhow::Result<()> {
    let meta: BaseConsumer = kafka::base(target).create()?;
    let md = meta.fetch_metadata(None, Duration::from_secs(15)).context("cluster metadata")?;
    let n = md.topics().iter().filter(|t| t.name().starts_with(&target.topic_prefix)).count();
    ensure!(n == 0, "{n} topic(s) exist under the prefix {:?} already", target.topic_prefix);
    Ok(())
}

/// Committed records of a logical topic's partition in `[from, until)`.
fn count_committed(
    reader: &CommittedReader,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
) -> anyhow::Result<u64> {
    let mut n = 0;
    let until = (until != i64::MAX).then_some(until);
    reader.scan_range(topic, PartitionRead { partition, from, until }, |_| {
        n += 1;
        false
    })?;
    Ok(n)
}

/// Copies the committed live records of `c`'s partition from `c.live_until` to `until` into
/// the same partition under the rebuild prefix, in transactions of [`COPY_BATCH`] records.
/// Runtime-internal transaction headers are dropped: they name live transactions, which mean
/// nothing under the rebuild prefix.
fn copy_range(
    live: &CommittedReader,
    producer: &BaseProducer,
    target: &RuntimeConfig,
    c: &mut Copied,
    until: i64,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if until <= c.live_until {
        return Ok(());
    }
    let to = target.topic(&c.topic);
    let mut error = None;
    let mut in_txn = 0usize;
    let mut copied = 0u64;
    producer.begin_transaction()?;
    live.scan_range(
        &c.topic,
        PartitionRead { partition: c.partition, from: c.live_until, until: Some(until) },
        |r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                if k != evalstream_runtime::headers::TXN
                    && k != evalstream_runtime::headers::PROGRESS
                {
                    headers = headers.insert(Header { key: k, value: Some(v) });
                }
            }
            let mut rec = BaseRecord::<[u8], [u8]>::to(&to).partition(c.partition).headers(headers);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v);
            }
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            let step = send_blocking(producer, rec).and_then(|()| {
                in_txn += 1;
                if in_txn >= COPY_BATCH {
                    producer.commit_transaction(TXN_TIMEOUT)?;
                    producer.begin_transaction()?;
                    in_txn = 0;
                }
                Ok(())
            });
            match step {
                Ok(()) => {
                    copied += 1;
                    progress.inc(1);
                    true
                }
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = error {
        let _ = producer.abort_transaction(TXN_TIMEOUT);
        return Err(anyhow::Error::new(e).context(format!("copying {}[{}]", c.topic, c.partition)));
    }
    producer.commit_transaction(TXN_TIMEOUT).context("committing the copy")?;
    c.records += copied;
    c.live_until = until;
    Ok(())
}

/// The difference as JSON: count and the first `show` keys of each kind.
fn differences(d: &Diff, show: usize) -> Value {
    let list = |keys: &[(i32, Vec<u8>)]| {
        json!({
            "count": keys.len(),
            "first": keys.iter().take(show).map(|(p, k)| json!({
                "partition": p, "key": show_key(k),
            })).collect::<Vec<_>>(),
        })
    };
    json!({
        "differing": list(&d.differing),
        "only_live": list(&d.only_live),
        "only_rebuilt": list(&d.only_rebuilt),
    })
}

/// The report as text.
fn text(r: &Value) -> String {
    let mut s = String::new();
    let verdict = if r["equal"].as_bool() == Some(true) { "EQUAL" } else { "DIFFERENT" };
    s.push_str(&format!(
        "rebuild {}: {verdict} ({} s)\n",
        r["processor"].as_str().unwrap_or_default(),
        r["duration_s"]
    ));
    let inputs = r["inputs"].as_array().cloned().unwrap_or_default();
    let records: u64 = inputs.iter().filter_map(|i| i["records"].as_u64()).sum();
    s.push_str(&format!(
        "  replayed {records} input record(s) from {} partition(s) under {}\n",
        inputs.len(),
        r["rebuilt_prefix"].as_str().unwrap_or_default()
    ));
    for side in ["live", "rebuilt"] {
        s.push_str(&format!(
            "  {side:<8} {:>8} key(s)  sha256 {}  ({})\n",
            r[side]["keys"],
            r[side]["sha256"].as_str().unwrap_or_default(),
            r[side]["changelog"].as_str().unwrap_or_default()
        ));
    }
    for (kind, what) in [
        ("differing", "keys whose values differ"),
        ("only_live", "keys only in the live state"),
        ("only_rebuilt", "keys only in the rebuilt state"),
    ] {
        let k = &r["differences"][kind];
        let n = k["count"].as_u64().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let first: Vec<String> = k["first"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("p{}/{}", e["partition"], e["key"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        let more = if (first.len() as u64) < n { ", …" } else { "" };
        s.push_str(&format!("  {n} {what}: {}{more}\n", first.join(", ")));
    }
    if let Some(c) = r.get("cutover") {
        s.push_str(&format!(
            "  cutover: {} record(s) written to the live changelog; live equal to rebuilt now: {}\n",
            c["written"], c["equal_now"]
        ));
    }
    if let Some(c) = r["cleanup"].as_str() {
        s.push_str(&format!("  {c}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_names_each_difference() {
        let live: State =
            [((0, b"a".to_vec()), b"1".to_vec()), ((1, b"k5".to_vec()), b"7".to_vec())]
                .into_iter()
                .collect();
        let mut rebuilt = live.clone();
        rebuilt.insert((1, b"k5".to_vec()), b"8".to_vec());
        let d = diff(&live, &rebuilt);
        let r = json!({
            "processor": "totals", "duration_s": 1.5, "rebuilt_prefix": "rebuild-x.",
            "inputs": [{"topic": "totals.input", "partition": 0, "records": 10, "live_offset": 12}],
            "live": {"keys": 2, "sha256": digest::digest(&live), "changelog": "c"},
            "rebuilt": {"keys": 2, "sha256": digest::digest(&rebuilt), "changelog": "rebuild-x.c"},
            "equal": false, "differences": differences(&d, 20), "cleanup": "kept",
        });
        let t = text(&r);
        assert!(t.starts_with("rebuild totals: DIFFERENT"), "{t}");
        assert!(t.contains("1 keys whose values differ: p1/k5\n"), "{t}");
        assert!(!t.contains("only in the live"), "{t}");
        assert_eq!(differences(&d, 0)["differing"]["first"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn the_live_changelog_follows_the_engines_naming() {
        let spec = Topology::bundled().unwrap().processor("totals").unwrap().clone();
        let mut cfg = RuntimeConfig::load_with(None, &[]).unwrap();
        cfg.topic_prefix = "x.".into();
        assert_eq!(live_changelog(&cfg, &spec), "x.evalstream.totals.changelog");
        cfg.group_id = Some("g".into());
        assert_eq!(live_changelog(&cfg, &spec), "g.changelog");
    }
}
