//! `--suite totals [--peer kafka-streams]`: raw pass-through, evalstream exactly-once and
//! (optionally) Kafka Streams exactly-once over one pre-filled input, alternating runs, each a
//! child process; then one latency run per exactly-once system at half its median rate, and one of
//! the raw pass-through at evalstream's rate.

use std::path::PathBuf;
use std::time::Duration;

use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;

use super::peer::KafkaStreams;
use super::proc::Measured;
use super::progress::{self, Probe};
use super::report::{Report, SystemFigures};
use super::{create_topics, latency, prepare, verify, Args, Ctx, Input, Peer, Topics};

/// The systems this suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Raw,
    Evalstream,
    KafkaStreams,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw pass-through",
            Kind::Evalstream => "evalstream exactly-once",
            Kind::KafkaStreams => "kafka-streams exactly-once",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Evalstream => "eos",
            Kind::KafkaStreams => "ks",
        }
    }
}

/// A started system: the process, how to watch it, where its outputs go.
pub(crate) struct Started {
    pub child: Measured,
    pub log: PathBuf,
    pub probe: Probe,
    /// Output topic (physical) and the offsets this run's outputs start at.
    pub output: String,
    pub start: Vec<i64>,
    state_dir: Option<PathBuf>,
}

impl Started {
    /// Stops the process and removes what it left on disk.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.child.stop(Duration::from_secs(60))?;
        if let Some(d) = &self.state_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(())
    }
}

/// Starts `kind` on `cfg`'s input (`label` makes its group and output unique).
pub(crate) fn start(
    kind: Kind,
    ctx: &Ctx,
    cfg: &RuntimeConfig,
    partitions: i32,
    records: u64,
    label: &str,
    peer: Option<&KafkaStreams>,
) -> anyhow::Result<Started> {
    let input = cfg.topic(evalstream_totals::INPUT);
    let log = ctx.log(&format!("{}-{label}", kind.label()));
    let mut state_dir = None;
    let (cmd, probe, output, start) = match kind {
        Kind::Raw => {
            let output = cfg.topic(&format!("raw.{label}.output"));
            create_topics(cfg, std::slice::from_ref(&output), partitions)?;
            let probe = Probe::end_offsets(cfg, &output, partitions)?;
            let cmd = ctx.passthrough_command(cfg, &input, &output, records);
            (cmd, probe, output, vec![0; partitions as usize])
        }
        Kind::Evalstream => {
            // A fresh group (and so a fresh changelog) per run; the output topic is shared, each
            // run's outputs start where the previous run's ended.
            let group = format!("{}evalstream.totals.{label}", cfg.topic_prefix);
            let output = cfg.topic(evalstream_totals::OUTPUT);
            let start = verify::end_offsets(cfg, &output, partitions)?;
            ctx.ensure_internal_topics(&evalstream_totals::Totals, cfg, &group, partitions)?;
            let probe = Probe::committed(cfg, &group, &input, partitions)?;
            (ctx.processor_command("totals", cfg, &group), probe, output, start)
        }
        Kind::KafkaStreams => {
            let peer = peer.ok_or_else(|| anyhow::anyhow!("no peer built"))?;
            let app_id = format!("{}ks.{label}", cfg.topic_prefix);
            let output = cfg.topic(&format!("ks.{label}.output"));
            create_topics(cfg, std::slice::from_ref(&output), partitions)?;
            let dir = ctx.log_dir.join(format!("ks-state-{label}"));
            let cmd = peer.command(&cfg.bootstrap_servers, &app_id, &input, &output, &dir);
            state_dir = Some(dir);
            let probe = Probe::committed(cfg, &app_id, &input, partitions)?;
            (cmd, probe, output, vec![0; partitions as usize])
        }
    };
    let child = Measured::spawn(kind.name(), cmd, &log)?;
    Ok(Started { child, log, probe, output, start, state_dir })
}

/// Runs the suite.
pub(crate) fn run(
    ctx: &Ctx,
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<Report> {
    let peer = match args.peer {
        Some(Peer::KafkaStreams) => {
            Some(KafkaStreams::build(args.peer_dir.as_deref(), &args.peer_heap)?)
        }
        None => None,
    };
    let mut report = Report::new("totals", args);
    let records = args.records();
    eprintln!("filling the input with {records} records");
    let cfg = prepare(base, codec, args, Input::Totals)?;
    let _topics = Topics::under(&cfg);
    let mut kinds = vec![Kind::Raw, Kind::Evalstream];
    if peer.is_some() {
        kinds.push(Kind::KafkaStreams);
    }
    let mut figures: Vec<SystemFigures> =
        kinds.iter().map(|k| SystemFigures::new(k.name())).collect();
    for run in 1..=args.runs {
        for (kind, fig) in kinds.iter().zip(figures.iter_mut()) {
            let label = format!("{run}");
            let mut s = start(*kind, ctx, &cfg, args.partitions, records, &label, peer.as_ref())?;
            let f = progress::measure(
                &mut s.child,
                &s.log,
                &s.probe,
                records,
                Duration::from_secs(900),
            )?;
            let (output, from) = (s.output.clone(), s.start.clone());
            s.stop()?;
            if *kind != Kind::Raw {
                verify::totals(&cfg, codec, &output, &from, records).map_err(|e| {
                    anyhow::anyhow!("{} run {run} produced wrong outputs: {e}", kind.name())
                })?;
            }
            eprintln!(
                "run {run}: {:<28} {:>9.0} records/s  peak {:>6.1} MiB  CPU {:>6.2} s{}",
                kind.name(),
                f.rate,
                f.peak_rss_mib,
                f.cpu_s,
                if *kind == Kind::Raw { "" } else { "  (outputs verified)" }
            );
            fig.runs.push(f);
        }
    }
    let rate = |k: Kind| kinds.iter().position(|x| *x == k).map(|i| figures[i].rate());
    let rss = |k: Kind| {
        kinds.iter().position(|x| *x == k).map(|i| figures[i].median_of(|r| r.peak_rss_mib))
    };
    let eos_vs_raw = rate(Kind::Evalstream).zip(rate(Kind::Raw)).map(|(e, r)| e / r);
    let eos_vs_peer = rate(Kind::Evalstream).zip(rate(Kind::KafkaStreams)).map(|(e, k)| e / k);
    let rss_vs_peer = rss(Kind::Evalstream).zip(rss(Kind::KafkaStreams)).map(|(e, k)| e / k);
    if let Some(v) = eos_vs_raw {
        report.ratios.push(("evalstream ÷ raw (records/s)".into(), v));
    }
    if let Some(v) = eos_vs_peer {
        report.ratios.push(("evalstream ÷ kafka-streams (records/s)".into(), v));
    }
    if let Some(v) = rss_vs_peer {
        report.ratios.push(("evalstream ÷ kafka-streams (peak RSS)".into(), v));
    }

    let mut p99 = None;
    if args.latency_seconds > 0.0 {
        // The raw pass-through runs at evalstream's rate: the floor of evalstream's figure,
        // what the machine, the broker and the benchmark's own producer cost at that rate.
        for kind in [Kind::Evalstream, Kind::Raw, Kind::KafkaStreams] {
            let basis = if kind == Kind::Raw { Kind::Evalstream } else { kind };
            let Some(r) = rate(basis) else { continue };
            let r = args.latency_rate.unwrap_or(r / 2.0);
            let l = latency::run(ctx, base, codec, args, kind, peer.as_ref(), r)?;
            eprintln!(
                "latency {}: p50 {:.1} ms, p99 {:.1} ms at {:.0} records/s",
                kind.name(),
                l.p50_ms,
                l.p99_ms,
                l.rate
            );
            if kind == Kind::Evalstream {
                p99 = Some(l.p99_ms);
            }
            if kind == Kind::Raw {
                // Above the target, the raw floor says the machine, not evalstream, set it.
                report.extra.push((
                    "p99 latency of the raw pass-through at the same rate, ms".into(),
                    l.p99_ms,
                ));
            }
            report.latency.push(l);
        }
    }
    report.systems = figures;
    report.set_targets(&[
        ("eos_vs_peer", eos_vs_peer),
        ("eos_vs_raw", eos_vs_raw),
        ("p99_latency", p99),
        ("rss_vs_peer", rss_vs_peer),
    ]);
    Ok(report)
}
