//! Archive files of `audit.chain` ranges: writing (for `export`) and reading (for
//! `verify --archive`), in two formats told apart by their first bytes.
//!
//! ```text
//!  JSON lines   {"type":"export",...}  {"type":"record",...} ...  {"type":"range",...}
//!               every record with its partition and offset; undecodable records kept raw
//!  Avro         "Obj\x01" object container, writer schema evalstream.audit.ChainRecord,
//!               metadata "evalstream.audit.export" = ExportMetadata JSON (header, and per
//!               partition the range and the offsets of its records as [first, count] runs)
//! ```
//!
//! Export writes JSON lines to a temporary file next to the target first; an Avro export then
//! converts it (the container's metadata is written before its records, and the offsets are
//! only known once everything is read). The target appears by rename, whole or not at all.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use apache_avro::types::Value;
use apache_avro::Schema;
use evalstream_audit::offline::json::{
    base64_encode, expand_runs, ArchiveLine, ArchiveRecord, ChainRecordJson, ExportHeader,
    ExportMetadata, ExportRange, EXPORT_METADATA_KEY,
};
use evalstream_audit::records::{ChainRecord, CHAIN_RECORD_SCHEMA};
use evalstream_runtime::codec::{Codec, MAX_ALLOCATION_BYTES};
use evalstream_runtime::reader::ReadRecord;

use super::source::Decoded;

/// The Avro object container magic.
const AVRO_MAGIC: &[u8; 4] = b"Obj\x01";

/// Upper bound on offsets expanded from an Avro archive's metadata (a hostile file could claim
/// billions); far above any export we write.
const MAX_OFFSETS: u64 = 100_000_000;

/// Archive file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines: readable, keeps undecodable records as raw bytes.
    Jsonl,
    /// Avro object container file with the ChainRecord schema.
    Avro,
}

impl Format {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Avro => "avro",
        }
    }
}

/// Writes the JSON-lines form of an export (also the first stage of an Avro export).
pub struct JsonlWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl JsonlWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(JsonlWriter { out: BufWriter::new(file), path: path.to_path_buf() })
    }

    fn line(&mut self, line: &ArchiveLine) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n").with_context(|| format!("writing {}", self.path.display()))
    }

    /// The first line.
    pub fn header(&mut self, header: &ExportHeader) -> anyhow::Result<()> {
        self.line(&ArchiveLine::Export(header.clone()))
    }

    /// One record as read.
    pub fn record(&mut self, raw: &ReadRecord, decoded: &Decoded) -> anyhow::Result<()> {
        let partition = u32::try_from(raw.partition).unwrap_or_default();
        let line = match decoded {
            Ok(r) => ArchiveRecord {
                partition,
                offset: raw.offset,
                timestamp: raw.timestamp,
                record: Some(ChainRecordJson::of(r)),
                raw: None,
                error: None,
            },
            Err(e) => ArchiveRecord {
                partition,
                offset: raw.offset,
                timestamp: raw.timestamp,
                record: None,
                raw: raw.value.as_deref().map(base64_encode),
                error: Some(e.clone()),
            },
        };
        self.line(&ArchiveLine::Record(Box::new(line)))
    }

    /// A partition summary.
    pub fn range(&mut self, range: &ExportRange) -> anyhow::Result<()> {
        self.line(&ArchiveLine::Range(range.clone()))
    }

    /// Flushes to disk.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all().with_context(|| format!("syncing {}", self.path.display()))
    }
}

/// Converts the JSON-lines export at `jsonl` into an Avro object container file at `out`, with
/// `metadata` (whose ranges carry the offsets of the records). Undecodable records cannot be
/// stored as ChainRecord values: they make the conversion fail with a pointer to JSON lines.
pub fn jsonl_to_avro(
    codec: &Codec,
    jsonl: &Path,
    out: &Path,
    metadata: &ExportMetadata,
) -> anyhow::Result<()> {
    let stored = codec
        .store()
        .current(CHAIN_RECORD_SCHEMA)
        .with_context(|| format!("schema {CHAIN_RECORD_SCHEMA} is not bundled"))?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = apache_avro::Writer::new(stored.schema(), BufWriter::new(file))?;
    writer.add_user_metadata(EXPORT_METADATA_KEY.to_string(), serde_json::to_vec(metadata)?)?;
    let input = BufReader::new(File::open(jsonl)?);
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let ArchiveLine::Record(r) = serde_json::from_str(&line)? else { continue };
        let Some(record) = r.record else {
            bail!(
                "record at offset {} of partition {} does not decode ({}); the Avro format holds \
                 ChainRecord values only: export with --format jsonl to keep it as evidence",
                r.offset,
                r.partition,
                r.error.unwrap_or_default()
            );
        };
        let value = record
            .to_record()
            .with_context(|| format!("line {}", n + 1))?
            .to_avro()
            .with_context(|| format!("line {}", n + 1))?;
        // The container writer takes values in the schema's exact shape.
        let value = codec.store().conform(CHAIN_RECORD_SCHEMA, &value)?;
        writer.append_value_ref(&value)?;
    }
    let file = writer.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().with_context(|| format!("syncing {}", out.display()))?;
    Ok(())
}

/// What reading an archive reports, in file order.
pub enum Event {
    /// The export header (JSON lines, or from the Avro metadata).
    Header(ExportHeader),
    /// One record.
    Record {
        /// Its partition.
        partition: u32,
        /// Its offset (for Avro archives from the metadata; else its position in the file).
        offset: i64,
        /// The record or why it does not decode.
        record: Decoded,
    },
    /// A partition summary.
    Range(ExportRange),
}

/// How an archive was read.
pub struct ReadOutcome {
    /// The format found.
    pub format: Format,
    /// Set when the file is damaged beyond a single record (broken JSON line, broken Avro
    /// block): reading stopped there. This is a verification failure, not an I/O error.
    pub corrupt: Option<String>,
    /// Remarks (e.g. offsets are positions because the metadata lacks them).
    pub notes: Vec<String>,
}

/// Reads the archive at `path`, detecting its format by content.
pub fn read(path: &Path, f: &mut dyn FnMut(Event)) -> anyhow::Result<ReadOutcome> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic)?;
    drop(file);
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if n == 4 && &magic == AVRO_MAGIC {
        read_avro(BufReader::new(file), f)
    } else {
        read_jsonl(BufReader::new(file), f)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_jsonl(input: impl BufRead, f: &mut dyn FnMut(Event)) -> anyhow::Result<ReadOutcome> {
    let mut outcome = ReadOutcome { format: Format::Jsonl, corrupt: None, notes: Vec::new() };
    for (n, line) in input.lines().enumerate() {
        let line = line.context("reading the archive")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ArchiveLine = match serde_json::from_str(&line) {
            Ok(l) => l,
            Err(e) => {
                outcome.corrupt = Some(format!("line {} is not an archive line: {e}", n + 1));
                return Ok(outcome);
            }
        };
        match parsed {
            ArchiveLine::Export(h) => f(Event::Header(h)),
            ArchiveLine::Range(r) => f(Event::Range(r)),
            ArchiveLine::Record(r) => {
                let record = match (&r.record, &r.error) {
                    (Some(j), _) => j.to_record().map_err(|e| e.to_string()),
                    (None, Some(e)) => Err(format!("undecodable on the broker: {e}")),
                    (None, None) => Err("archive line without a record".to_string()),
                };
                f(Event::Record { partition: r.partition, offset: r.offset, record });
            }
        }
    }
    Ok(outcome)
}

fn schema_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        _ => None,
    }
}

fn read_avro(input: impl Read, f: &mut dyn FnMut(Event)) -> anyhow::Result<ReadOutcome> {
    // The codec's cap on any one allocation from a length prefix: an archive is untrusted input.
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    let mut outcome = ReadOutcome { format: Format::Avro, corrupt: None, notes: Vec::new() };
    let reader = match apache_avro::Reader::new(input) {
        Ok(r) => r,
        Err(e) => {
            outcome.corrupt = Some(format!("not a readable Avro object container file: {e}"));
            return Ok(outcome);
        }
    };
    let writer_name = schema_name(reader.writer_schema());
    if writer_name.as_deref() != Some(CHAIN_RECORD_SCHEMA) {
        outcome.corrupt = Some(format!(
            "the archive's records are {}, not {CHAIN_RECORD_SCHEMA}",
            writer_name.unwrap_or_else(|| "not records".into())
        ));
        return Ok(outcome);
    }
    let metadata: Option<ExportMetadata> = match reader.user_metadata().get(EXPORT_METADATA_KEY) {
        None => None,
        Some(bytes) => match serde_json::from_slice(bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                outcome.notes.push(format!("ignoring unreadable {EXPORT_METADATA_KEY}: {e}"));
                None
            }
        },
    };
    // Offsets per partition from the metadata runs; positions when absent.
    let mut offsets: BTreeMap<u32, (Vec<i64>, usize)> = BTreeMap::new();
    if let Some(m) = &metadata {
        f(Event::Header(m.header.clone()));
        for r in &m.partitions {
            match r.offsets.as_deref().map(|runs| expand_runs(runs, MAX_OFFSETS)) {
                Some(Some(list)) => {
                    offsets.insert(r.partition, (list, 0));
                }
                _ => outcome.notes.push(format!(
                    "partition {}: no usable offsets in the metadata; offsets shown are positions \
                     in the archive",
                    r.partition
                )),
            }
        }
    } else {
        outcome.notes.push(format!(
            "no {EXPORT_METADATA_KEY} metadata; offsets shown are positions in the archive"
        ));
    }
    let mut positions: BTreeMap<u32, i64> = BTreeMap::new();
    let mut last_partition = 0u32;
    for (n, value) in reader.enumerate() {
        let value: Value = match value {
            Ok(v) => v,
            Err(e) => {
                outcome.corrupt = Some(format!("record {} does not read: {e}", n + 1));
                break;
            }
        };
        let record = ChainRecord::from_avro(&value).map_err(|e| e.to_string());
        let partition = record.as_ref().map(|r| r.partition).unwrap_or(last_partition);
        last_partition = partition;
        let position = positions.entry(partition).or_insert(0);
        let offset = match offsets.get_mut(&partition) {
            Some((list, next)) => {
                let o = list.get(*next).copied().unwrap_or(*position);
                *next += 1;
                o
            }
            None => *position,
        };
        *position += 1;
        f(Event::Record { partition, offset, record });
    }
    if let Some(m) = metadata {
        for r in m.partitions {
            f(Event::Range(r));
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evalstream_audit::chain::{AuditEventJson, ChainHead};
    use evalstream_audit::merkle::CompactRange;
    use evalstream_audit::offline::json::{offset_runs, EXPORT_FORMAT};
    use evalstream_audit::records::{ChainEntry, ChainRecordBody, Checkpoint};
    use evalstream_runtime::codec::SchemaStore;

    /// Three entries and a checkpoint of chain 1, at offsets with a gap (a transaction marker).
    fn records() -> Vec<(i64, ChainRecord)> {
        let mut head = ChainHead::genesis(1);
        let mut range = CompactRange::new();
        let mut out = Vec::new();
        for (i, offset) in [10i64, 11, 13].into_iter().enumerate() {
            let event = AuditEventJson {
                event_id: format!("evt-{i}"),
                event_type: "t".into(),
                actor: "a".into(),
                subject: "s".into(),
                occurred_at: 1_763_424_000_000 + i as i64,
                payload: "{}".into(),
            };
            let canonical = event.canonical_bytes().unwrap();
            let appended = head.append(&canonical).unwrap();
            range.append(&appended.entry_hash).unwrap();
            let e = ChainEntry::new(&appended, &event, canonical, 1, i as i64);
            out.push((offset, ChainRecord { partition: 1, body: ChainRecordBody::Entry(e) }));
        }
        let cp = Checkpoint::pending(&range, head.head_hash, 1_763_424_000_002);
        out.push((14, ChainRecord { partition: 1, body: ChainRecordBody::Checkpoint(cp) }));
        out
    }

    fn raw(offset: i64) -> ReadRecord {
        ReadRecord {
            partition: 1,
            offset,
            timestamp: Some(5),
            key: None,
            value: Some(vec![0xde, 0xad]),
            headers: Vec::new(),
        }
    }

    fn header() -> ExportHeader {
        ExportHeader {
            format: EXPORT_FORMAT.into(),
            topic: "audit.chain".into(),
            from: Some("10".into()),
            to: None,
            partitions: vec![1],
            created_ms: 0,
        }
    }

    fn range(offsets: &[i64]) -> ExportRange {
        ExportRange {
            partition: 1,
            records: offsets.len() as u64,
            first_offset: offsets.first().copied(),
            last_offset: offsets.last().copied(),
            range_from_offset: 10,
            range_to_offset: None,
            from_seq: Some(0),
            to_seq: Some(2),
            anchor_offset: None,
            covering_offset: None,
            offsets: Some(offset_runs(offsets.iter().copied())),
        }
    }

    fn read_back(path: &Path) -> (Format, Vec<(u32, i64, Decoded)>, usize, usize) {
        let mut records = Vec::new();
        let (mut headers, mut ranges) = (0, 0);
        let outcome = read(path, &mut |e| match e {
            Event::Header(_) => headers += 1,
            Event::Range(_) => ranges += 1,
            Event::Record { partition, offset, record } => {
                records.push((partition, offset, record))
            }
        })
        .unwrap();
        assert_eq!(outcome.corrupt, None);
        (outcome.format, records, headers, ranges)
    }

    #[test]
    fn both_formats_round_trip_records_and_offsets() {
        let dir = std::env::temp_dir().join(format!("audit-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jsonl = dir.join("a.jsonl");
        let recs = records();
        let offsets: Vec<i64> = recs.iter().map(|(o, _)| *o).collect();
        let mut w = JsonlWriter::create(&jsonl).unwrap();
        w.header(&header()).unwrap();
        for (o, r) in &recs {
            w.record(&raw(*o), &Ok(r.clone())).unwrap();
        }
        w.range(&range(&offsets)).unwrap();
        w.finish().unwrap();
        let expected: Vec<(u32, i64, Decoded)> =
            recs.iter().map(|(o, r)| (1, *o, Ok(r.clone()))).collect();
        assert_eq!(read_back(&jsonl), (Format::Jsonl, expected.clone(), 1, 1));

        let codec = Codec::new(SchemaStore::bundled().unwrap(), None).unwrap();
        let avro = dir.join("a.avro");
        let metadata = ExportMetadata { header: header(), partitions: vec![range(&offsets)] };
        jsonl_to_avro(&codec, &jsonl, &avro, &metadata).unwrap();
        assert!(std::fs::read(&avro).unwrap().starts_with(AVRO_MAGIC));
        assert_eq!(read_back(&avro), (Format::Avro, expected, 1, 1));

        // An undecodable record is kept in JSON lines, and refused by the Avro conversion.
        let mut w = JsonlWriter::create(&jsonl).unwrap();
        w.record(&raw(20), &Err("bad magic".into())).unwrap();
        w.finish().unwrap();
        let (_, back, _, _) = read_back(&jsonl);
        assert!(matches!(&back[0], (1, 20, Err(e)) if e.contains("bad magic")));
        let err = jsonl_to_avro(&codec, &jsonl, &avro, &metadata).unwrap_err();
        assert!(err.to_string().contains("--format jsonl"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
