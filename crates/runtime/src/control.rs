//! Cluster-wide read-only mode: the `evalstream.control` topic and the side reader every
//! processor instance runs to follow it.
//!
//! ```text
//!  evalstream control read-only on|off [--processor P | --all] --reason R
//!        │ one transaction: ModeCommand on evalstream.control (key read-only/P or read-only/*)
//!        │                  + ops.read_only audit event on audit.events
//!        ▼
//!  evalstream.control (compacted, 1 partition) ──► ControlFollower (side thread, read_committed,
//!        from the beginning)  ──► ModeControl::current() ──► engine loop pauses / resumes
//! ```
//!
//! Why a compacted topic read from the beginning: the latest command per key survives compaction,
//! so an instance that (re)starts comes up in the mode last set, before it consumes anything. Why
//! not the processors' inputs (as `evalstream.switches` is): read-only changes *whether* a
//! processor consumes, never *what* it outputs, so it needs no definite position in the input
//! stream, and it must reach every processor, including those without domain inputs.
//!
//! Which command wins: of the two keys that concern a processor (`read-only/<name>` and
//! `read-only/*`), the one written last (highest offset). So `--all off` after `--processor P on`
//! brings P back too, and `--processor P off` after `--all on` exempts P: the last command an
//! operator gave is what holds. When neither key holds a command, the configured `MODE` (env or
//! config file) applies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::{Mode, RuntimeConfig};
use crate::error::RuntimeError;
use crate::kafka;

/// Logical name of the control topic (compacted, one partition; declared in topology.toml).
pub const CONTROL_TOPIC: &str = "evalstream.control";

/// Key of a read-only command addressed to every processor.
pub const READ_ONLY_ALL: &str = "read-only/*";

/// Key of a read-only command addressed to `processor`.
pub fn read_only_key(processor: &str) -> String {
    format!("read-only/{processor}")
}

/// The value of a record on the control topic (JSON): what an operator asked, who, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeCommand {
    /// `read-only` or `normal`.
    pub mode: String,
    /// Why (the incident ticket).
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When the command was issued (epoch milliseconds).
    pub issued_at: i64,
    /// Unique id, also the subject of its `ops.read_only` audit event.
    pub command_id: String,
}

impl ModeCommand {
    /// The mode it asks for; `None` for a mode this version does not know.
    pub fn parsed_mode(&self) -> Option<Mode> {
        match self.mode.as_str() {
            "read-only" => Some(Mode::ReadOnly),
            "normal" => Some(Mode::Normal),
            _ => None,
        }
    }
}

/// Where the current mode came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSource {
    /// The configured start-up default (`MODE` / `mode` in the config file).
    Config,
    /// A command on the control topic.
    Control {
        /// Its key (`read-only/<processor>` or `read-only/*`).
        key: String,
        /// The command.
        command: ModeCommand,
    },
}

/// The mode an instance should be in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMode {
    /// The mode.
    pub mode: Mode,
    /// Where it came from.
    pub source: ModeSource,
}

impl EffectiveMode {
    /// The `mode_source` object of `/health` and `/ready`.
    pub fn source_json(&self) -> Value {
        match &self.source {
            ModeSource::Config => json!({ "from": "config" }),
            ModeSource::Control { key, command } => json!({
                "from": "control",
                "key": key,
                "reason": command.reason,
                "actor": command.actor,
                "issued_at_ms": command.issued_at,
                "command_id": command.command_id,
            }),
        }
    }
}

/// The latest command seen under one key, with its offset (what decides which key wins).
#[derive(Debug, Clone)]
struct Seen {
    offset: i64,
    command: ModeCommand,
}

/// The mode `processor` should be in, given the latest command under its own key and under
/// [`READ_ONLY_ALL`]: the one written last wins; without either, `default` from the config.
fn effective(
    default: Mode,
    own: Option<(&str, &Seen)>,
    all: Option<(&str, &Seen)>,
) -> EffectiveMode {
    let latest = match (own, all) {
        (Some(o), Some(a)) => Some(if o.1.offset >= a.1.offset { o } else { a }),
        (o, a) => o.or(a),
    };
    match latest.and_then(|(k, s)| s.command.parsed_mode().map(|m| (k, s, m))) {
        Some((key, seen, mode)) => EffectiveMode {
            mode,
            source: ModeSource::Control { key: key.to_owned(), command: seen.command.clone() },
        },
        None => EffectiveMode { mode: default, source: ModeSource::Config },
    }
}

#[derive(Debug)]
struct Inner {
    own: Option<Seen>,
    all: Option<Seen>,
    current: EffectiveMode,
}

/// The mode one processor instance should be in: fed by [`ControlFollower`], read by the engine
/// on every loop iteration.
#[derive(Debug)]
pub struct ModeControl {
    own_key: String,
    default: Mode,
    inner: Mutex<Inner>,
}

impl ModeControl {
    /// Starts at `default` (the configured mode) until a command for `processor` is seen.
    pub fn new(processor: &str, default: Mode) -> Arc<Self> {
        Arc::new(ModeControl {
            own_key: read_only_key(processor),
            default,
            inner: Mutex::new(Inner {
                own: None,
                all: None,
                current: EffectiveMode { mode: default, source: ModeSource::Config },
            }),
        })
    }

    /// The mode the instance should be in now.
    pub fn current(&self) -> EffectiveMode {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).current.clone()
    }

    /// Takes in one record of the control topic. Records for other processors or other kinds of
    /// control are ignored; an undecodable value is an error (logged by the follower, skipped:
    /// the previous command stays in force). Returns whether the effective mode changed.
    pub fn observe(&self, key: &str, offset: i64, value: &[u8]) -> Result<bool, String> {
        let slot_is_own = key == self.own_key;
        if !slot_is_own && key != READ_ONLY_ALL {
            return Ok(false);
        }
        let command: ModeCommand = serde_json::from_slice(value)
            .map_err(|e| format!("undecodable control record {key}@{offset}: {e}"))?;
        if command.parsed_mode().is_none() {
            return Err(format!(
                "unknown mode {:?} in control record {key}@{offset}",
                command.mode
            ));
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = Some(Seen { offset, command });
        if slot_is_own {
            inner.own = seen;
        } else {
            inner.all = seen;
        }
        let next = effective(
            self.default,
            inner.own.as_ref().map(|s| (self.own_key.as_str(), s)),
            inner.all.as_ref().map(|s| (READ_ONLY_ALL, s)),
        );
        let changed = next != inner.current;
        inner.current = next;
        Ok(changed)
    }
}

/// The side reader: follows the control topic on its own thread until dropped.
pub struct ControlFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlFollower {
    /// Creates the control topic if missing, reads it from the beginning to its committed end
    /// (bounded by `catch_up`, so that an instance restarted during a read-only period comes up
    /// read-only before it consumes anything), then keeps following it on a thread.
    pub fn start(
        cfg: &RuntimeConfig,
        control: Arc<ModeControl>,
        catch_up: Duration,
    ) -> Result<Self, RuntimeError> {
        let topic = cfg.topic(CONTROL_TOPIC);
        // Not fatal: where the principal may not create topics, the topic comes from
        // `topology apply`; if it is missing too, the reader below says so, and the configured
        // mode holds.
        if let Err(e) = ensure_control_topic(cfg, &topic) {
            warn!(%topic, error = %e, "could not make sure the control topic exists");
        }
        // ReaderContext: reaching the end of the topic is how the catch-up ends, not an error.
        let consumer: BaseConsumer<kafka::ReaderContext> = kafka::reader(cfg)
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| RuntimeError::kafka("create control reader", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| RuntimeError::kafka("control reader assignment", e))?;
        consumer.assign(&tpl).map_err(|e| RuntimeError::kafka("assign control topic", e))?;

        let deadline = Instant::now() + catch_up;
        let mut caught_up = false;
        while Instant::now() < deadline {
            if poll_once(&consumer, &control, Duration::from_millis(200)) == Polled::End {
                caught_up = true;
                break;
            }
        }
        let now = control.current();
        if caught_up {
            info!(%topic, mode = now.mode.as_str(), source = %now.source_json(), "control topic read");
        } else {
            warn!(%topic, "control topic not read to its end in time; starting in the configured \
                  mode and following it");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control-follower".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    poll_once(&consumer, &control, Duration::from_millis(100));
                }
            })
            .map_err(|e| RuntimeError::Config(format!("spawn control follower: {e}")))?;
        Ok(ControlFollower { stop, thread: Some(thread) })
    }
}

impl Drop for ControlFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, PartialEq)]
enum Polled {
    Record,
    End,
    Nothing,
}

fn poll_once(
    consumer: &BaseConsumer<kafka::ReaderContext>,
    control: &ModeControl,
    wait: Duration,
) -> Polled {
    match consumer.poll(wait) {
        None => Polled::Nothing,
        Some(Ok(m)) => {
            let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
            match m.payload() {
                // A tombstone (an operator clearing a key by hand) leaves the last command.
                None => {}
                Some(value) => match control.observe(&key, m.offset(), value) {
                    Ok(true) => {
                        let now = control.current();
                        info!(mode = now.mode.as_str(), source = %now.source_json(), "mode command");
                    }
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "ignoring a control record"),
                },
            }
            Polled::Record
        }
        Some(Err(KafkaError::PartitionEOF(_))) => Polled::End,
        Some(Err(e)) => {
            warn!(error = %e, "reading the control topic");
            Polled::Nothing
        }
    }
}

/// Creates the control topic (compacted, one partition) unless it exists: tests and fresh
/// clusters need no `topology apply` for it, and a broker's auto-creation (delete policy, default
/// partition count) never gets to make it first.
pub fn ensure_control_topic(cfg: &RuntimeConfig, topic: &str) -> Result<(), RuntimeError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka::base(cfg).create().map_err(|e| RuntimeError::kafka("create admin client", e))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Config(format!("admin runtime: {e}")))?;
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .map_err(|e| RuntimeError::kafka("create control topic", e))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, "created the control topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(RuntimeError::kafka("create control topic", KafkaError::AdminOp(code)))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(mode: &str, reason: &str) -> Vec<u8> {
        serde_json::to_vec(&ModeCommand {
            mode: mode.into(),
            reason: reason.into(),
            actor: "alice".into(),
            issued_at: 1,
            command_id: format!("c-{reason}"),
        })
        .unwrap()
    }

    #[test]
    fn configured_mode_holds_until_a_command_concerns_the_processor() {
        let c = ModeControl::new("totals", Mode::ReadOnly);
        assert_eq!(c.current(), EffectiveMode { mode: Mode::ReadOnly, source: ModeSource::Config });
        assert_eq!(c.observe("read-only/policy", 0, &cmd("normal", "x")), Ok(false));
        assert_eq!(c.observe("freeze/whatever", 1, b"not json"), Ok(false));
        assert_eq!(c.current().mode, Mode::ReadOnly);
    }

    #[test]
    fn the_command_written_last_wins_between_own_key_and_all() {
        let c = ModeControl::new("totals", Mode::Normal);
        assert_eq!(c.observe(READ_ONLY_ALL, 0, &cmd("read-only", "kms")), Ok(true));
        let now = c.current();
        assert_eq!(now.mode, Mode::ReadOnly);
        assert_eq!(now.source_json()["key"], "read-only/*");
        assert_eq!(now.source_json()["reason"], "kms");
        assert_eq!(now.source_json()["actor"], "alice");
        // The processor alone back to normal: exempt from the earlier --all.
        assert_eq!(c.observe("read-only/totals", 1, &cmd("normal", "exempt")), Ok(true));
        assert_eq!(c.current().mode, Mode::Normal);
        // A later --all wins again.
        assert_eq!(c.observe(READ_ONLY_ALL, 2, &cmd("read-only", "again")), Ok(true));
        assert_eq!(c.current().mode, Mode::ReadOnly);
        assert_eq!(c.observe(READ_ONLY_ALL, 3, &cmd("normal", "over")), Ok(true));
        assert_eq!(c.current().mode, Mode::Normal);
        assert_eq!(c.current().source_json()["from"], "control");
    }

    #[test]
    fn a_bad_record_is_refused_and_the_previous_command_stays() {
        let c = ModeControl::new("totals", Mode::Normal);
        c.observe("read-only/totals", 0, &cmd("read-only", "a")).unwrap();
        assert!(c.observe("read-only/totals", 1, b"{").is_err());
        assert!(c.observe("read-only/totals", 2, &cmd("sideways", "b")).is_err());
        assert_eq!(c.current().mode, Mode::ReadOnly);
        assert_eq!(c.current().source_json()["reason"], "a");
    }

    #[test]
    fn config_source_is_reported_as_such() {
        let c = ModeControl::new("totals", Mode::Normal);
        assert_eq!(c.current().source_json(), json!({ "from": "config" }));
    }
}
