//! `evalstream audit import --archive FILE`: restore an archive written by `audit export` into
//! `audit.chain` of this configuration's topic prefix (a fresh cluster or prefix, in a disaster
//! or the monthly DR drill).
//!
//! ```text
//!  1. verify     the archive, exactly as `audit verify --archive` does      failed: nothing written
//!  2. check      the target audit.chain exists and every partition is empty (a restore never mixes)
//!  3. write      per partition, in archive order: the record's value encoded as the chain writes
//!                it (the same schema and wire format: the same bytes), its key (entries: the
//!                event id) and its original timestamp; transactions of IMPORT_BATCH records
//!  4. read back  read_committed, every partition: the same number of records, and every value
//!                byte for byte what step 3 wrote, in order
//! ```
//!
//! Why verify before writing: an archive is evidence; restoring one that does not verify would
//! turn a tampered copy into the system of record. Why an empty target: chains are append-only
//! and sequence-numbered; mixing an archive into a live chain would fork it. An import that fails
//! half-way leaves a partial topic: restore into a fresh prefix again (the empty-target check
//! refuses to continue on top of it).
//!
//! Offsets are not restored (a new topic numbers its records from 0, and the original offsets
//! had gaps for transaction markers): the chain's own sequence numbers and hashes are what
//! verification reads, and `--time-basis log` ranges still work because timestamps are kept.
//!
//! Exit codes as `audit verify`: 0 imported, verified and read back; 1 the archive does not
//! verify (nothing written) or the read-back differs; 3 imported, but the archive is not fully
//! signed (or no `--signers` was given); 4 could not import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use evalstream_audit::records::{ChainRecord, ChainRecordBody, CHAIN_RECORD_SCHEMA};
use evalstream_audit::CHAIN_TOPIC;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka::{self, ReaderContext};
use evalstream_runtime::reader::{CommittedReader, PartitionRead};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::archive::{self, Event};
use super::{verify, SignersArg, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK};
use crate::cmd::common::{load_config, partition_ids, send_blocking, METADATA_TIMEOUT};
use crate::progress::{Progress, ProgressArg};

/// Records per import transaction.
const IMPORT_BATCH: usize = 2000;
/// How long transaction calls may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `audit import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive (JSON lines or Avro, as `audit export` writes it).
    #[arg(long, value_name = "FILE")]
    pub archive: PathBuf,
    #[command(flatten)]
    pub signers: SignersArg,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// What an import did, for the drill's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// Exit code (see the module docs).
    pub code: u8,
    /// The physical topic written.
    pub topic: String,
    /// Records written per partition.
    pub records: BTreeMap<u32, u64>,
    /// What the archive verification said, one line per partition.
    pub verification: Vec<String>,
}

/// Runs `audit import`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let imported = import(&cfg, &codec, &args)?;
    for line in &imported.verification {
        println!("archive: {line}");
    }
    let total: u64 = imported.records.values().sum();
    if imported.code == EXIT_FAILED && total == 0 {
        println!("the archive does not verify: nothing imported");
    } else {
        println!(
            "imported {total} records into {} ({} partition(s)); read back byte for byte",
            imported.topic,
            imported.records.len()
        );
    }
    Ok(imported.code)
}

/// Verifies `args.archive`, writes it into this configuration's `audit.chain` and reads it back.
pub fn import(cfg: &RuntimeConfig, codec: &Codec, args: &Args) -> anyhow::Result<Imported> {
    let registry = args.signers.load()?;
    let (verdict, lines) =
        verify::archive_verdict(&args.archive, registry.as_ref(), args.progress.progress)?;
    let topic = cfg.topic(CHAIN_TOPIC);
    let mut imported = Imported {
        code: verdict,
        topic: topic.clone(),
        records: BTreeMap::new(),
        verification: lines,
    };
    if verdict == EXIT_FAILED {
        return Ok(imported);
    }

    // The target: exists, empty, and has every partition the archive has.
    let meta: BaseConsumer<ReaderContext> =
        kafka::reader(cfg).create_with_context(ReaderContext)?;
    let Some(partitions) = partition_ids(meta.client(), &topic)? else {
        bail!("{topic} does not exist; run `evalstream topology apply` under this prefix first");
    };
    for &p in &partitions {
        let (low, high) = watermarks(&meta, &topic, p)?;
        if high > low {
            bail!(
                "{topic}[{p}] already holds records (offsets {low}..{high}): an archive is restored \
                 into an empty chain only; use a fresh topic prefix"
            );
        }
    }

    // Encode everything first: a record that does not encode stops the import before anything
    // is written.
    let mut records: Vec<Restored> = Vec::new();
    let mut bad = None;
    let mut timestamps: BTreeMap<(u32, i64), Option<i64>> = BTreeMap::new();
    archive_timestamps(&args.archive, &mut timestamps)?;
    archive::read(&args.archive, &mut |event| {
        let Event::Record { partition, offset, record } = event else { return };
        if bad.is_some() {
            return;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                bad = Some(format!("partition {partition} offset {offset}: {e}"));
                return;
            }
        };
        match encode(codec, &topic, &record) {
            Ok((key, value)) => {
                let ts = timestamps.get(&(partition, offset)).copied().flatten();
                records.push((partition, ts, key, value));
            }
            Err(e) => bad = Some(format!("partition {partition} offset {offset}: {e:#}")),
        }
    })?;
    if let Some(why) = bad {
        bail!("the archive holds a record that cannot be restored ({why}); nothing was written");
    }
    if let Some(p) = records.iter().map(|r| r.0).find(|p| !partitions.contains(&(*p as i32))) {
        bail!(
            "the archive has chain partition {p}, {topic} has {} partitions; create the topology \
             with as many partitions as the archived chain",
            partitions.len()
        );
    }

    let producer: BaseProducer =
        kafka::transactional_producer(cfg, &format!("evalstream-audit-import-{topic}"))
            .create()
            .context("creating the transactional producer")?;
    producer.init_transactions(TXN_TIMEOUT).context("initialising transactions")?;
    let mut progress =
        Progress::new(args.progress.progress, format!("import into {topic}"), "records")
            .with_total(records.len() as u64);
    for batch in records.chunks(IMPORT_BATCH) {
        producer.begin_transaction()?;
        let sent = (|| -> anyhow::Result<()> {
            for (partition, ts, key, value) in batch {
                let mut rec = BaseRecord::<[u8], [u8]>::to(&topic)
                    .payload(value)
                    .partition(*partition as i32);
                if let Some(k) = key {
                    rec = rec.key(k);
                }
                if let Some(t) = ts {
                    rec = rec.timestamp(*t);
                }
                send_blocking(&producer, rec)?;
            }
            producer.flush(TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)?;
            Ok(())
        })();
        if let Err(e) = sent {
            let _ = producer.abort_transaction(TXN_TIMEOUT);
            return Err(e.context(format!(
                "import stopped after {} record(s); {topic} now holds a partial chain: import \
                 into a fresh topic prefix",
                progress_done(&imported)
            )));
        }
        for (partition, ..) in batch {
            *imported.records.entry(*partition).or_default() += 1;
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish();

    // Read back what is committed and compare, partition by partition.
    let mut expected: BTreeMap<i32, std::collections::VecDeque<&[u8]>> = BTreeMap::new();
    for (p, _, _, v) in &records {
        expected.entry(*p as i32).or_default().push_back(v);
    }
    // To the high watermark, not to the first end-of-partition: the commit has returned, but the
    // coordinator writes its markers to the partitions afterwards, and until then a
    // read_committed reader reports the end of a partition before the imported records.
    let reader = CommittedReader::new(cfg, codec).context("creating the read-back reader")?;
    let reads: Vec<PartitionRead> = partitions
        .iter()
        .map(|&partition| PartitionRead { partition, from: 0, until: None })
        .collect();
    let mut mismatch = None;
    reader
        .read_raw(&topic, &reads, |m| {
            let want = expected.get_mut(&m.partition()).and_then(|q| q.pop_front());
            if mismatch.is_none() && want != m.payload() {
                mismatch = Some(format!(
                    "{topic}[{}] offset {} differs from the archive",
                    m.partition(),
                    m.offset()
                ));
            }
            Ok(true)
        })
        .with_context(|| format!("reading back {topic}"))?;
    if mismatch.is_none() {
        if let Some((p, left)) = expected.iter().find(|(_, q)| !q.is_empty()) {
            mismatch = Some(format!(
                "{topic}[{p}]: {} archived record(s) not found when reading back",
                left.len()
            ));
        }
    }
    if let Some(m) = mismatch {
        imported.verification.push(format!("read-back: {m}"));
        imported.code = EXIT_FAILED;
    } else if imported.code != EXIT_INCOMPLETE {
        imported.code = EXIT_OK;
    }
    Ok(imported)
}

/// A partition's watermarks, retrying while its leader is not known yet (a topic created a
/// moment ago by `topology apply` answers NotLeaderForPartition for a while).
fn watermarks(
    meta: &BaseConsumer<ReaderContext>,
    topic: &str,
    p: i32,
) -> anyhow::Result<(i64, i64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match meta.fetch_watermarks(topic, p, METADATA_TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.rdkafka_error_code().is_some_and(|c| {
                        matches!(
                            c,
                            rdkafka::types::RDKafkaErrorCode::NotLeaderForPartition
                                | rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable
                                | rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                        )
                    }) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("watermarks of {topic}[{p}]")))
            }
        }
    }
}

/// One record to restore: chain partition, original timestamp, key, value.
type Restored = (u32, Option<i64>, Option<Vec<u8>>, Vec<u8>);

fn progress_done(imported: &Imported) -> u64 {
    imported.records.values().sum()
}

/// The record's key and value as the chain writes them: entries keyed by their event id,
/// checkpoints unkeyed; the value in the chain's schema and this codec's wire format.
fn encode(
    codec: &Codec,
    topic: &str,
    record: &ChainRecord,
) -> anyhow::Result<(Option<Vec<u8>>, Vec<u8>)> {
    let key = match &record.body {
        ChainRecordBody::Entry(e) => Some(e.event_id.clone().into_bytes()),
        ChainRecordBody::Checkpoint(_) => None,
    };
    let value = codec.encode(topic, CHAIN_RECORD_SCHEMA, &record.to_avro()?)?;
    Ok((key, value))
}

/// The original record timestamps a JSON-lines archive carries (Avro archives keep none).
fn archive_timestamps(
    path: &Path,
    out: &mut BTreeMap<(u32, i64), Option<i64>>,
) -> anyhow::Result<()> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for line in std::io::BufReader::new(file).lines() {
        let Ok(line) = line else { return Ok(()) };
        let Ok(evalstream_audit::offline::json::ArchiveLine::Record(r)) =
            serde_json::from_str(&line)
        else {
            continue;
        };
        out.insert((r.partition, r.offset), r.timestamp);
    }
    Ok(())
}
