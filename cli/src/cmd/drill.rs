//! `evalstream drill`: the runbook's monthly disaster-recovery drill in one command.
//!
//! ```text
//!  live system (this config's prefix)             restored system (a fresh prefix, same cluster
//!                                                  or --target-bootstrap's)
//!  1 export   evalstream audit export ──► archive.jsonl            (or --archive: the S3 copy)
//!  2 restore                                    evalstream topology apply, leaders elected
//!  3 import                         archive ──► evalstream audit import (verified, read back)
//!  4 verify                                     evalstream audit verify: the chain verifies
//!  5 start                                      submissions, policy, settlement: /ready
//!  6 scenario                                   promotions and allocations end to end, checked
//!                                               from the output topics (drill/scenario.rs)
//!  7 cleanup                                    processors stopped, restored topics deleted
//!                                               (--keep keeps them)
//!  report: pass/fail per step with timings, JSON (--report FILE) and text (FILE.txt, stdout)
//! ```
//!
//! Steps 1–4 run the very commands an operator runs (this binary, as a subprocess, with the
//! prefix set), so the drill exercises what the runbook documents, exit codes included. A step
//! that fails skips the ones that need it; cleanup always runs.
//!
//! Exit codes: 0 every step passed; 3 passed with warnings (e.g. the live chain ends with
//! entries no signed checkpoint covers yet: the archive cannot prove them); 1 a step failed;
//! 4 the drill could not run (configuration).

mod report;
mod scenario;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evalstream_audit::signer::{LocalKeySigner, SignerKind};
use evalstream_audit::trust::{SignerEntry, SignerRegistry};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use evalstream_runtime::topology::Topology;
use rdkafka::consumer::{BaseConsumer, Consumer};

use report::{Report, Status, Timer};

use super::common::{delete_prefixed, load_config};
use crate::progress::ProgressArg;

/// The processors the acceptance scenario needs.
const PROCESSORS: [&str; 3] = ["submissions", "policy", "settlement"];
/// Kid of the drill's Finance stand-in key.
const DRILL_FINANCE_KID: &str = "drill-finance";

/// Arguments of `evalstream drill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Restore this archive (e.g. the copy from the archive bucket) instead of exporting the live
    /// chain first.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// The signer registry that verifies the archive's checkpoints.
    #[arg(long, value_name = "FILE", env = "SIGNERS_FILE")]
    pub signers: Option<PathBuf>,
    /// Topic prefix to restore into; must hold no topics yet. Default `drill-<time>-<random>.`
    /// under this configuration's prefix.
    #[arg(long)]
    pub target_prefix: Option<String>,
    /// Write the report as JSON to FILE and as text to FILE with the extension `.txt`.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Directory for the archive, keys and processor logs (default: a new directory under the
    /// system's temporary directory, removed when the drill passes).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the restored topics (default: delete them when the drill ends).
    #[arg(long)]
    pub keep: bool,
    /// Submissions in the acceptance scenario (each asks for a promotion and an allocation).
    #[arg(long, default_value_t = 20)]
    pub submissions: usize,
    /// Bound on every wait (processors ready, scenario outcomes), in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// Runs the drill.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let stamp = evalstream_runtime::time::format_rfc3339_ms_aligned(
        evalstream_runtime::readiness::wall_clock_ms(),
    )
    .chars()
    .filter(char::is_ascii_digit)
    .take(14)
    .collect::<String>();
    let run_id = format!("{stamp}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let target_prefix = args
        .target_prefix
        .clone()
        .unwrap_or_else(|| format!("{}drill-{run_id}.", cfg.topic_prefix));
    anyhow::ensure!(
        target_prefix != cfg.topic_prefix && !target_prefix.is_empty(),
        "the target prefix must differ from the live system's ({:?})",
        cfg.topic_prefix
    );
    let (work, temporary_work) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("evalstream-drill-{run_id}")), true),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let archive = args.archive.clone().unwrap_or_else(|| work.join("audit-archive.jsonl"));
    let mut report =
        Report::new(&cfg.topic_prefix, &target_prefix, &archive.display().to_string(), args.keep);
    let mut target = cfg.clone();
    target.topic_prefix = target_prefix.clone();
    let drill =
        Drill { config, cfg: &cfg, target: &target, codec: &codec, args: &args, work: &work };

    let mut processors = Vec::new();
    drill.steps(&mut report, &archive, &run_id, &mut processors);
    // Cleanup always runs.
    let t = Timer::start();
    let mut detail = Vec::new();
    for p in &mut processors {
        p.stop();
    }
    detail.push(format!("{} processor(s) stopped; logs in {}", processors.len(), work.display()));
    let mut status = Status::Pass;
    if args.keep {
        detail.push(format!("restored topics kept under {target_prefix}"));
    } else {
        match delete_prefixed(&target) {
            Ok(n) => detail.push(format!("{n} restored topic(s) under {target_prefix} deleted")),
            Err(e) => {
                status = Status::Warn;
                detail.push(format!("deleting the restored topics failed: {e:#}"));
            }
        }
    }
    report.push(t.step(
        "cleanup",
        "stop the processors, delete the restored topics",
        status,
        detail,
        None,
    ));
    report.finish();

    let text = report.text();
    println!("{text}");
    if let Some(path) = &args.report {
        let text_path = report.write(path)?;
        println!("report: {} and {}", path.display(), text_path.display());
    }
    if temporary_work && report.result != Status::Fail && args.archive.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(ExitCode::from(match report.result {
        Status::Pass => 0,
        Status::Warn => 3,
        _ => 1,
    }))
}

struct Drill<'a> {
    config: Option<&'a Path>,
    cfg: &'a RuntimeConfig,
    target: &'a RuntimeConfig,
    codec: &'a Codec,
    args: &'a Args,
    work: &'a Path,
}

impl Drill<'_> {
    /// Steps 1 to 6; a failed step skips the rest (cleanup is the caller's).
    fn steps(&self, report: &mut Report, archive: &Path, run_id: &str, processors: &mut Vec<Proc>) {
        let signers: Vec<String> = self
            .args
            .signers
            .iter()
            .flat_map(|s| ["--signers".to_string(), s.display().to_string()])
            .collect();
        type StepFn<'s> = Box<dyn FnOnce(&mut Report) + 's>;
        let archive_arg = archive.display().to_string();
        let steps: Vec<(&str, &str, StepFn<'_>)> = vec![
            (
                "export",
                "export the audit archive from the live chain",
                Box::new(|r: &mut Report| {
                    if self.args.archive.is_some() {
                        r.push(Timer::start().step(
                            "export",
                            "export the audit archive from the live chain",
                            Status::Skipped,
                            vec![format!("restoring the given archive {}", archive.display())],
                            None,
                        ));
                        return;
                    }
                    let mut a = vec!["audit", "export", "--out", &archive_arg];
                    a.extend(signers.iter().map(String::as_str));
                    r.push(self.command(
                        "export",
                        "export the audit archive from the live chain",
                        &self.cfg.topic_prefix,
                        &a,
                    ));
                }),
            ),
            (
                "restore",
                "create the topology under the fresh prefix",
                Box::new(|r: &mut Report| {
                    let t = Timer::start();
                    let mut step = self.command(
                        "restore",
                        "create the topology under the fresh prefix",
                        &self.target.topic_prefix,
                        &["topology", "apply"],
                    );
                    if step.status == Status::Pass {
                        if let Err(e) =
                            wait_for_leaders(self.target, Duration::from_secs(self.args.timeout))
                        {
                            step.status = Status::Fail;
                            step.detail.push(format!("{e:#}"));
                        }
                    }
                    step.duration_s = t.elapsed_s();
                    r.push(step);
                }),
            ),
            (
                "import",
                "restore the archive into the fresh audit.chain",
                Box::new(|r: &mut Report| {
                    let mut a = vec!["audit", "import", "--archive", &archive_arg];
                    a.extend(signers.iter().map(String::as_str));
                    r.push(self.command(
                        "import",
                        "restore the archive into the fresh audit.chain",
                        &self.target.topic_prefix,
                        &a,
                    ));
                }),
            ),
            (
                "verify",
                "verify the restored chain (audit verify)",
                Box::new(|r: &mut Report| {
                    let mut a = vec!["audit", "verify"];
                    a.extend(signers.iter().map(String::as_str));
                    r.push(self.command(
                        "verify",
                        "verify the restored chain (audit verify)",
                        &self.target.topic_prefix,
                        &a,
                    ));
                }),
            ),
            (
                "start",
                "start submissions, policy and settlement on the restored system",
                Box::new(|r: &mut Report| {
                    r.push(self.start(processors));
                }),
            ),
            (
                "scenario",
                "promotions and allocations end to end (acceptance)",
                Box::new(|r: &mut Report| {
                    r.push(self.scenario(run_id));
                }),
            ),
        ];
        for (name, what, step) in steps {
            if report.failed() {
                report.push(Timer::start().step(
                    name,
                    what,
                    Status::Skipped,
                    vec!["an earlier step failed".into()],
                    None,
                ));
                continue;
            }
            step(report);
        }
    }

    /// Runs `evalstream <args>` under `prefix` and judges it by its exit code (0 pass, 3 warn).
    fn command(&self, name: &str, what: &str, prefix: &str, args: &[&str]) -> report::Step {
        let t = Timer::start();
        let shown = format!("EVALSTREAM_TOPIC_PREFIX={prefix} evalstream {}", args.join(" "));
        let out = self.evalstream(prefix).args(args).stdin(Stdio::null()).output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return t.step(
                    name,
                    what,
                    Status::Fail,
                    vec![format!("cannot run: {e}")],
                    Some(shown),
                )
            }
        };
        let code = out.status.code().unwrap_or(-1);
        let status = match code {
            0 => Status::Pass,
            3 => Status::Warn,
            _ => Status::Fail,
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut detail = vec![format!("exit {code}")];
        // The command's own summary: its last lines (and the error when it failed).
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        detail.extend(lines.iter().rev().take(3).rev().map(|l| l.to_string()));
        if status == Status::Fail {
            detail.extend(
                stderr.lines().filter(|l| l.contains("evalstream:")).take(3).map(str::to_string),
            );
        }
        let log = self.work.join(format!("{name}.log"));
        let _ =
            std::fs::write(&log, format!("$ {shown}\n--- stdout\n{stdout}--- stderr\n{stderr}"));
        t.step(name, what, status, detail, Some(shown))
    }

    /// `evalstream` (this very binary) with the live configuration under `prefix`.
    fn evalstream(&self, prefix: &str) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| "evalstream".into());
        let mut cmd = Command::new(exe);
        if let Some(c) = self.config {
            cmd.arg("--config").arg(c);
        }
        // Everything else (brokers, security, registry) comes from the same environment and
        // configuration file as this command's.
        cmd.env("EVALSTREAM_TOPIC_PREFIX", prefix).env("EVALSTREAM_LOG_FORMAT", "text");
        cmd
    }

    /// Starts the scenario's processors on the restored system and waits until each is ready.
    fn start(&self, processors: &mut Vec<Proc>) -> report::Step {
        let t = Timer::start();
        let what = "start submissions, policy and settlement on the restored system";
        // The Finance stand-in key of this drill, in a registry of its own.
        let setup = || -> anyhow::Result<PathBuf> {
            let key = self.work.join("drill-finance.pem");
            let signer = LocalKeySigner::generate(&key)?;
            let mut registry = SignerRegistry::new();
            registry.add(
                SignerEntry::new(
                    DRILL_FINANCE_KID,
                    SignerKind::Finance,
                    signer.public_key_spki_der(),
                    0,
                )?
                .with_note("evalstream drill: Finance stand-in for the acceptance scenario"),
            )?;
            let path = self.work.join("drill-signers.json");
            registry.save(&path)?;
            Ok(path)
        };
        let signers = match setup() {
            Ok(p) => p,
            Err(e) => return t.step("start", what, Status::Fail, vec![format!("{e:#}")], None),
        };
        let mut detail = Vec::new();
        for name in PROCESSORS {
            let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(a) => a.port(),
                Err(e) => {
                    return t.step(
                        "start",
                        what,
                        Status::Fail,
                        vec![format!("no free port: {e}")],
                        None,
                    )
                }
            };
            let addr = format!("127.0.0.1:{port}");
            let log = self.work.join(format!("{name}.log"));
            let spawned = std::fs::File::create(&log).and_then(|f| {
                self.evalstream(&self.target.topic_prefix)
                    .args(["run", name])
                    .env("EVALSTREAM_INSTANCE_ID", format!("drill-{name}"))
                    .env("EVALSTREAM_OPS_LISTEN", &addr)
                    .env("SIGNERS_FILE", &signers)
                    .env("EVALSTREAM_LOG_FORMAT", "json")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(f)
                    .spawn()
            });
            match spawned {
                Ok(child) => processors.push(Proc { name, child, addr, log }),
                Err(e) => {
                    return t.step(
                        "start",
                        what,
                        Status::Fail,
                        vec![format!("starting {name}: {e}")],
                        None,
                    )
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        for p in processors.iter_mut() {
            loop {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return t.step(
                        "start",
                        what,
                        Status::Fail,
                        vec![format!("{} exited ({status}); see {}", p.name, p.log.display())],
                        None,
                    );
                }
                if ready(&p.addr) {
                    detail.push(format!("{} ready at {}", p.name, p.addr));
                    break;
                }
                if Instant::now() > deadline {
                    return t.step(
                        "start",
                        what,
                        Status::Fail,
                        vec![format!(
                            "{} not ready after {} s; see {}",
                            p.name,
                            self.args.timeout,
                            p.log.display()
                        )],
                        None,
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        t.step("start", what, Status::Pass, vec![detail.join(", ")], None)
    }

    fn scenario(&self, run_id: &str) -> report::Step {
        let t = Timer::start();
        let what = "promotions and allocations end to end (acceptance)";
        let signer = match LocalKeySigner::from_file(
            &self.work.join("drill-finance.pem"),
            Some(DRILL_FINANCE_KID.into()),
        ) {
            Ok(s) => s,
            Err(e) => return t.step("scenario", what, Status::Fail, vec![format!("{e}")], None),
        };
        let scenario = scenario::Scenario::new(run_id, self.args.submissions);
        match scenario.run(
            self.target,
            self.codec,
            &signer,
            DRILL_FINANCE_KID,
            Duration::from_secs(self.args.timeout),
            self.args.progress.progress,
        ) {
            Ok(o) if o.problems.is_empty() => {
                t.step("scenario", what, Status::Pass, o.detail, None)
            }
            Ok(mut o) => {
                let n = o.problems.len();
                o.detail.insert(0, format!("{n} problem(s)"));
                o.detail.extend(o.problems.into_iter().take(10));
                t.step("scenario", what, Status::Fail, o.detail, None)
            }
            Err(e) => t.step("scenario", what, Status::Fail, vec![format!("{e:#}")], None),
        }
    }
}

/// A processor the drill (or `rebuild`) started.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) addr: String,
    pub(super) log: PathBuf,
}

impl Proc {
    /// SIGTERM (the open transaction commits, the instance leaves its group), then wait.
    pub(super) fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, not yet reaped; no memory is shared.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `GET /ready` at `addr` answers 200.
pub(super) fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET /ready HTTP/1.0\r\nHost: drill\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// Waits until every partition of every topology topic under `cfg`'s prefix has a leader.
pub(super) fn wait_for_leaders(cfg: &RuntimeConfig, timeout: Duration) -> anyhow::Result<()> {
    let topology = Topology::bundled()?;
    let client: BaseConsumer = kafka::base(cfg).create()?;
    let deadline = Instant::now() + timeout;
    for t in topology.topics() {
        let topic = cfg.topic(&t.name);
        for p in 0..t.partitions {
            while client.fetch_watermarks(&topic, p, Duration::from_secs(5)).is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no leader for {topic}[{p}] after {} s",
                    timeout.as_secs()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(())
}
