//! `evalstream consume <topic>`: decode records to JSON lines (or a compact text view).
//!
//! ```text
//!   no --group: TopicReader (assign partitions, read_committed, commits nothing)
//!               start: end of topic | --from-beginning | --offset O      stop: end seen at start,
//!               --max N, or (with --follow) --timeout-ms without records
//!   --group G:  a consumer-group member: starts at G's committed offsets (else the start above),
//!               commits what it printed, stops when every assigned partition is at its end
//!        │
//!        ▼
//!   Codec::decode ── ok ──► {"topic","partition","offset","timestamp","key","headers","schema","value"}
//!                 └─ fails ► same, with "value": {"base64": ...} and "error": reason
//! ```
//!
//! Like `kafka-console-consumer`, the default start is the end of the topic: without
//! `--from-beginning`, `--offset` or `--follow` nothing is printed (and a hint says so). Values are
//! always decoded by their wire-format header, never by guessing from the topic name, so a DLQ
//! shows which of its records are still decodable; `--raw` skips decoding.
//!
//! Bytes in JSON: keys and header values are strings when they are UTF-8, else
//! `{"base64": "..."}`; a header name that repeats maps to an array. `produce --envelope` reads
//! exactly this shape back.

use evalstream_runtime::b64;
use evalstream_runtime::time::format_rfc3339_ms_aligned;
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use evalstream_runtime::codec::{avro_to_json, Codec};
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka::{self, ReaderContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use serde::Serialize;
use serde_json::{json, Value};

use super::common::{
    bytes_json, emit, headers_json, load_config, ReadOptions, StartAt, TopicReader,
};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, for programs (and `produce --envelope`).
    Json,
    /// One compact line per record, for people.
    Text,
}

/// Arguments of `evalstream consume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to read (logical name; the configured `topic_prefix` is added).
    pub topic: String,
    /// Start at the oldest retained record instead of the end.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Stop after printing this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Read only this partition (repeat for several). Default: all.
    #[arg(long, conflicts_with = "group")]
    pub partition: Vec<i32>,
    /// Start at this offset in every selected partition.
    #[arg(long, conflicts_with = "group", value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// Keep waiting for new records after reaching the end; stop after `--timeout-ms` without any.
    #[arg(long)]
    pub follow: bool,
    /// Longest wait for the next record, in milliseconds. Without `--follow`, reaching it before
    /// the end is an error (the broker is not delivering).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Read as a member of this consumer group: resume from its committed offsets and commit
    /// what was printed. Without it nothing is committed anywhere.
    #[arg(long)]
    pub group: Option<String>,
    /// Do not decode values; print them as base64.
    #[arg(long)]
    pub raw: bool,
}

/// Runs `evalstream consume`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let codec = if args.raw { None } else { Some(Codec::from_env().context("loading schemas")?) };
    let topic = cfg.topic(&args.topic);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut printer = Printer { codec: codec.as_ref(), format: args.format, out: &mut out };
    let printed = match &args.group {
        None => consume_assigned(&cfg, &topic, &args, &mut printer)?,
        Some(group) => consume_group(&cfg, &topic, group, &args, &mut printer)?,
    };
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    if printed == 0 && !args.from_beginning && args.offset.is_none() && !args.follow {
        eprintln!(
            "evalstream: no records: reading started at the end of {topic} (use --from-beginning, \
             --offset or --follow)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn start_at(args: &Args) -> StartAt {
    match (args.from_beginning, args.offset) {
        (_, Some(o)) => StartAt::Offset(o),
        (true, None) => StartAt::Beginning,
        (false, None) => StartAt::End,
    }
}

/// Without a group: assign partitions directly. Returns how many records were printed.
fn consume_assigned(
    cfg: &RuntimeConfig,
    topic: &str,
    args: &Args,
    printer: &mut Printer<'_, impl Write>,
) -> anyhow::Result<u64> {
    let opts = ReadOptions {
        partitions: (!args.partition.is_empty()).then(|| args.partition.clone()),
        start: start_at(args),
        follow: args.follow,
        idle_timeout: Duration::from_millis(args.timeout_ms),
    };
    let mut reader = TopicReader::open(cfg, topic, &opts)?;
    let mut printed = 0;
    while args.max.is_none_or(|max| printed < max) {
        let Some(m) = reader.next()? else { break };
        if !printer.print(&m)? {
            break;
        }
        printed += 1;
    }
    Ok(printed)
}

/// With `--group`: subscribe, print, store the offset of each printed record, commit at the end.
/// Stops when every assigned partition has reached its end (unless following), at `--max`, or
/// after `--timeout-ms` without a record. Joining a group takes a while (about half the session
/// timeout on some brokers), so the clock starts again whenever the assignment changes.
fn consume_group(
    cfg: &RuntimeConfig,
    topic: &str,
    group: &str,
    args: &Args,
    printer: &mut Printer<'_, impl Write>,
) -> anyhow::Result<u64> {
    let mut client = kafka::base(cfg);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" })
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<ReaderContext> =
        client.create_with_context(ReaderContext).context("creating the consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    let timeout = Duration::from_millis(args.timeout_ms);
    // Before the first assignment we also wait for the group join.
    let mut deadline = Instant::now() + timeout + Duration::from_millis(cfg.session_timeout_ms);
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut printed = 0;
    loop {
        if args.max.is_some_and(|max| printed >= max) {
            break;
        }
        let now = consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect::<BTreeSet<_>>())
            .unwrap_or_default();
        if now != assigned {
            assigned = now;
            at_end.retain(|p| assigned.contains(p));
            deadline = Instant::now() + timeout;
        }
        if !args.follow && !assigned.is_empty() && assigned.is_subset(&at_end) {
            break;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            if !args.follow {
                eprintln!(
                    "evalstream: timed out after {} ms without records (assigned partitions: \
                     {assigned:?}, at end: {at_end:?})",
                    args.timeout_ms
                );
            }
            break;
        };
        match consumer.poll(left.min(Duration::from_millis(200))) {
            None => {}
            Some(Ok(m)) => {
                deadline = Instant::now() + timeout;
                at_end.remove(&m.partition());
                if !printer.print(&m)? {
                    break;
                }
                printed += 1;
                consumer.store_offset_from_message(&m).context("storing the offset")?;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("evalstream: warning: reading {topic}: {e}"),
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing printed, nothing to commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(e).context("committing the group's offsets"),
    }
    Ok(printed)
}

/// One output line per record, in field order (a struct, not a map, keeps the order stable).
#[derive(Debug, Serialize)]
pub struct RecordJson {
    /// Topic as named on the cluster (prefix included).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// Key (see the module docs for bytes in JSON).
    pub key: Value,
    /// Headers (see the module docs).
    pub headers: Value,
    /// Avro full name of the decoded value; `null` when not decoded.
    pub schema: Option<String>,
    /// The decoded value, `null` for a tombstone, `{"base64": ...}` when not decoded.
    pub value: Value,
    /// Why the value could not be decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecordJson {
    /// Builds the JSON view of `m`, decoding its value with `codec` when given.
    pub fn from_message<M: Message>(m: &M, codec: Option<&Codec>) -> Self {
        let (schema, value, error) = match (m.payload(), codec) {
            (None, _) => (None, Value::Null, None),
            (Some(bytes), None) => (None, json!({ "base64": b64::encode(bytes) }), None),
            (Some(bytes), Some(codec)) => match codec.decode(bytes) {
                Ok(d) => (Some(d.schema_name), avro_to_json(&d.value), None),
                Err(e) => (None, json!({ "base64": b64::encode(bytes) }), Some(e.to_string())),
            },
        };
        RecordJson {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: bytes_json(m.key()),
            headers: headers_json(m.headers()),
            schema,
            value,
            error,
        }
    }

    /// The compact human line: `p/o time key=K schema value [headers] [! error]`.
    pub fn text(&self) -> String {
        let mut s = format!("{}/{}", self.partition, self.offset);
        if let Some(ts) = self.timestamp {
            s.push(' ');
            s.push_str(&format_rfc3339_ms_aligned(ts));
        }
        s.push_str(&format!(" key={}", compact(&self.key)));
        s.push(' ');
        s.push_str(self.schema.as_deref().unwrap_or("-"));
        s.push(' ');
        s.push_str(&compact(&self.value));
        if self.headers.as_object().is_some_and(|h| !h.is_empty()) {
            s.push_str(&format!(" headers={}", self.headers));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ! {e}"));
        }
        s
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// Writes records in the chosen format.
struct Printer<'a, W: Write> {
    codec: Option<&'a Codec>,
    format: Format,
    out: &'a mut W,
}

impl<W: Write> Printer<'_, W> {
    /// `Ok(false)`: the reader of our output went away; stop.
    fn print<M: Message>(&mut self, m: &M) -> anyhow::Result<bool> {
        let rec = RecordJson::from_message(m, self.codec);
        let line = match self.format {
            Format::Json => serde_json::to_string(&rec)?,
            Format::Text => rec.text(),
        };
        Ok(emit(self.out, &line)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn message(payload: Option<&[u8]>) -> OwnedMessage {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "a", value: Some("1") })
            .insert(Header { key: "a", value: Some("2") })
            .insert(Header { key: "bin", value: Some(&[0xffu8][..]) });
        OwnedMessage::new(
            payload.map(<[u8]>::to_vec),
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::CreateTime(0),
            2,
            7,
            Some(headers),
        )
    }

    #[test]
    fn undecoded_values_are_base64_with_field_order_kept() {
        let rec = RecordJson::from_message(&message(Some(b"\x00\x01")), None);
        let line = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            line,
            r#"{"topic":"t","partition":2,"offset":7,"timestamp":0,"key":"k","headers":{"a":["1","2"],"bin":{"base64":"/w=="}},"schema":null,"value":{"base64":"AAE="}}"#
        );
        let rec = RecordJson::from_message(&message(None), None);
        assert_eq!(rec.value, Value::Null);
    }

    #[test]
    fn text_view_is_one_compact_line() {
        let rec = RecordJson::from_message(&message(Some(b"\x00")), None);
        assert_eq!(
            rec.text(),
            r#"2/7 1970-01-01T00:00:00.000Z key=k - {"base64":"AA=="} headers={"a":["1","2"],"bin":{"base64":"/w=="}}"#
        );
    }

    #[test]
    fn start_position_follows_the_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |v: &[&str]| Cli::try_parse_from([&["x", "t"][..], v].concat()).map(|c| c.args);
        assert_eq!(start_at(&parse(&[]).unwrap()), StartAt::End);
        assert_eq!(start_at(&parse(&["--from-beginning"]).unwrap()), StartAt::Beginning);
        assert_eq!(start_at(&parse(&["--offset", "5"]).unwrap()), StartAt::Offset(5));
        assert!(parse(&["--offset", "5", "--from-beginning"]).is_err());
        assert!(parse(&["--group", "g", "--partition", "1"]).is_err());
        assert!(parse(&["--offset", "-1"]).is_err());
    }
}
