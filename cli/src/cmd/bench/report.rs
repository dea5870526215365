//! The benchmark report: every run, medians, ratios, latency, and issue 8's targets.

use super::progress::RunFigures;
use super::{fmt_rates, median, Args, Ctx};

/// Figures of one system over all its runs.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SystemFigures {
    /// Display name.
    pub name: String,
    /// Every run, in order.
    pub runs: Vec<RunFigures>,
}

impl SystemFigures {
    pub(crate) fn new(name: &str) -> SystemFigures {
        SystemFigures { name: name.to_string(), runs: Vec::new() }
    }
    pub(crate) fn median_of(&self, f: impl Fn(&RunFigures) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
    pub(crate) fn rate(&self) -> f64 {
        self.median_of(|r| r.rate)
    }
}

/// End-to-end latency of one system at a fixed input rate.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LatencyFigures {
    pub system: String,
    /// Input rate, records/s (half the system's median throughput).
    pub rate: f64,
    /// Records measured.
    pub records: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// How busy the machine's cores were during the measured window (0..1), and the CPU the
    /// system under test used there, in cores.
    pub machine_busy: Option<f64>,
    pub system_cores: f64,
}

/// One row of issue 8's target table.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Target {
    pub figure: &'static str,
    /// Human-readable target, e.g. ">= 0.7".
    pub target: &'static str,
    /// The measured value, when this suite measures it.
    pub measured: Option<f64>,
    /// Whether the measured value meets the target.
    pub pass: Option<bool>,
    /// Where the figure comes from when this suite does not measure it.
    pub note: String,
}

/// Issue 8's targets, in the order.
pub(crate) const TARGETS: &[(&str, &str, &str)] = &[
    (
        "eos_vs_peer",
        "evalstream exactly-once ÷ Kafka Streams exactly-once, records/s, totals",
        ">= 1.5",
    ),
    ("eos_vs_raw", "evalstream exactly-once ÷ raw pass-through, totals, 100 ms commits", ">= 0.7"),
    ("chain_vs_raw", "audit-chain ÷ raw pass-through", ">= 0.5"),
    (
        "p99_latency",
        "p99 latency input → committed output at half of max throughput (ms)",
        "<= 250",
    ),
    ("rss_vs_peer", "peak RSS: evalstream totals ÷ Kafka Streams", "<= 0.25"),
    ("restore_vs_raw", "restore of a 1M-key changelog ÷ raw consume of the same topic", ">= 0.5"),
    ("kms_per_checkpoint", "KMS calls per checkpoint", "<= 1"),
];

/// Which suite measures each target.
fn measured_by(id: &str) -> &'static str {
    match id {
        "eos_vs_peer" | "rss_vs_peer" | "p99_latency" => "--suite totals --peer kafka-streams",
        "eos_vs_raw" => "--suite totals",
        "chain_vs_raw" | "kms_per_checkpoint" => "--suite audit-chain (KMS: --kms-endpoint)",
        "restore_vs_raw" => "--suite restore",
        _ => "",
    }
}

/// What a suite measured.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Report {
    pub suite: String,
    pub records: u64,
    pub record_bytes: usize,
    pub partitions: i32,
    pub runs: usize,
    /// Load average (1, 5, 15 min) when the suite started and ended.
    pub load_start: String,
    pub load_end: String,
    pub systems: Vec<SystemFigures>,
    /// (name, value) ratios of medians.
    pub ratios: Vec<(String, f64)>,
    pub latency: Vec<LatencyFigures>,
    /// Other measured values by name (e.g. KMS calls, checkpoints).
    pub extra: Vec<(String, f64)>,
    pub targets: Vec<Target>,
}

impl Report {
    pub(crate) fn new(suite: &str, args: &Args) -> Report {
        Report {
            suite: suite.to_string(),
            records: args.records(),
            record_bytes: args.record_bytes,
            partitions: args.partitions,
            runs: args.runs,
            load_start: load_average(),
            ..Report::default()
        }
    }

    /// Fills the target table from `measured` (target id → value); the rest say which suite
    /// measures them.
    pub(crate) fn set_targets(&mut self, measured: &[(&str, Option<f64>)]) {
        self.load_end = load_average();
        self.targets = TARGETS
            .iter()
            .map(|(id, figure, target)| {
                let value = measured.iter().find(|(m, _)| m == id).and_then(|(_, v)| *v);
                let here = measured.iter().any(|(m, _)| m == id);
                Target {
                    figure,
                    target,
                    measured: value,
                    pass: value.map(|v| meets(target, v)),
                    note: if value.is_some() {
                        String::new()
                    } else if here {
                        "not measured in this invocation".into()
                    } else {
                        format!("measured by {}", measured_by(id))
                    },
                }
            })
            .collect();
    }

    pub(crate) fn print(&self, args: &Args, ctx: &Ctx) {
        if args.json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        if self.suite == "restore" {
            println!(
                "suite restore: a changelog of {} keys, {} partitions, {} runs each (alternating)",
                self.records, self.partitions, self.runs
            );
        } else {
            println!(
                "suite {}: {} records/run of ~{} bytes, {} partitions, {} runs each (alternating)",
                self.suite, self.records, self.record_bytes, self.partitions, self.runs
            );
        }
        println!("load average at start: {}   at end: {}", self.load_start, self.load_end);
        if !self.systems.is_empty() {
            println!();
            println!(
                "{:<26} {:>12} {:>10} {:>10} {:>12} {:>10}  runs (records/s)",
                "system", "records/s", "peak MiB", "CPU s", "CPU µs/rec", "start s"
            );
            // In-process measurements (restore) have no process figures: shown as "-".
            let cell = |v: f64, width: usize, digits: usize| {
                if v > 0.0 {
                    format!("{v:>width$.digits$}")
                } else {
                    format!("{:>width$}", "-")
                }
            };
            for s in &self.systems {
                println!(
                    "{:<26} {:>12.0} {} {} {} {}  {}",
                    s.name,
                    s.rate(),
                    cell(s.median_of(|r| r.peak_rss_mib), 10, 1),
                    cell(s.median_of(|r| r.cpu_s), 10, 2),
                    cell(s.median_of(|r| r.cpu_us_per_record), 12, 1),
                    cell(s.median_of(|r| r.startup_s), 10, 1),
                    fmt_rates(&s.runs.iter().map(|r| r.rate).collect::<Vec<_>>())
                );
            }
            println!("(medians; peak MiB = VmHWM, CPU s = utime+stime of the process until its last record, start s = process start to first visible progress)");
        }
        for (name, v) in &self.ratios {
            println!("ratio {name:<40} {v:.2}");
        }
        for l in &self.latency {
            println!(
                "latency {:<20} at {:>8.0} records/s: p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} records; machine {} busy, the system {:.2} cores)",
                l.system,
                l.rate,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.records,
                l.machine_busy.map(|b| format!("{:.0}%", b * 100.0)).unwrap_or_else(|| "?".into()),
                l.system_cores
            );
        }
        for (name, v) in &self.extra {
            println!("{name:<48} {v}");
        }
        println!();
        println!("{:<76} {:>8} {:>10}  result", "issue 8 target", "target", "measured");
        for t in &self.targets {
            let measured = t.measured.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
            let verdict = match t.pass {
                Some(true) => "pass".to_string(),
                Some(false) => "FAIL".to_string(),
                None => t.note.clone(),
            };
            println!("{:<76} {:>8} {:>10}  {}", t.figure, t.target, measured, verdict);
        }
        if !matches!(args.suite, super::Suite::AuditHash | super::Suite::Restore) {
            println!("child logs: {}", ctx.log_dir.display());
        }
    }
}

/// Whether `v` meets a target written as `>= x` or `<= x`.
fn meets(target: &str, v: f64) -> bool {
    let (op, x) = target.split_at(2);
    let x: f64 = x.trim().parse().unwrap_or(f64::NAN);
    match op {
        ">=" => v >= x,
        "<=" => v <= x,
        _ => false,
    }
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `q`-quantile (0..=1) of `v` (nearest rank).
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_both_ways() {
        assert!(meets(">= 0.7", 0.7));
        assert!(!meets(">= 0.7", 0.69));
        assert!(meets("<= 250", 120.0));
        assert!(!meets("<= 0.25", 0.3));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }
}
