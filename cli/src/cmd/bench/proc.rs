//! Child processes of the benchmark and what the kernel says they cost.
//!
//! Every system under test runs as its own process (`evalstream run totals`, the raw
//! pass-through worker, the Kafka Streams `java`), so its resources can be read from
//! `/proc/<pid>` without counting the benchmark's own work: **peak RSS** is `VmHWM` from
//! `/proc/<pid>/status` (the kernel's high-water mark of resident memory) and **CPU time** is
//! `utime + stime` from `/proc/<pid>/stat` (all threads, user and system). Both are read while
//! the process is alive: once it has exited its `/proc` entry no longer carries them.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A running child under measurement. Dropping it kills the process (a failed benchmark leaves
/// nothing behind).
pub(crate) struct Measured {
    name: String,
    child: Child,
    peak_rss_kib: u64,
}

/// Resources one child used.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds (user + system, all threads) since the process started.
    pub cpu_s: f64,
}

impl Measured {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Measured> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Measured { name: name.to_string(), child, peak_rss_kib: 0 })
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the child has exited (it must run until the benchmark stops it).
    pub(crate) fn ensure_running(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited during the benchmark ({status}); its log ({}) ends with:\n{}",
                self.name,
                log.display(),
                tail(log, 20)
            );
        }
        Ok(())
    }

    /// Reads the child's resources now (and remembers the peak RSS seen so far).
    pub(crate) fn sample(&mut self) -> Usage {
        let pid = self.pid();
        if let Some(kib) = status_kib(pid, "VmHWM:") {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        Usage { peak_rss_mib: self.peak_rss_kib as f64 / 1024.0, cpu_s: cpu_seconds(pid) }
    }

    /// SIGTERM (graceful: commit and leave the group), then SIGKILL after `grace`. Returns the
    /// usage read just before the signal.
    pub(crate) fn stop(mut self, grace: Duration) -> anyhow::Result<Usage> {
        let usage = self.sample();
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(usage);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {grace:?} of SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(usage)
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l[field.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `utime + stime` of `/proc/<pid>/stat` in seconds (0 when unreadable).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis
    // start with field 3 (state). utime and stime are fields 14 and 15.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// The whole machine's CPU time so far, from `/proc/stat`'s `cpu` line: (busy, total) in clock
/// ticks, busy being everything but idle and iowait. Two readings give how busy all cores were
/// in between: a latency figure taken on a saturated machine measures the machine.
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The fraction of all cores' time spent busy between two [`machine_ticks`] readings.
pub(crate) fn busy_between(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (a?, b?);
    (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64)
}

/// The last `n` lines of a log file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let me = std::process::id();
        assert!(status_kib(me, "VmHWM:").is_some_and(|k| k > 0));
        // Burn a little CPU so the tick counter moves.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(me) > 0.0);
    }
}
