//! Progress of long operator commands (`audit verify`, `audit export`, `rebuild`, `dlq requeue`,
//! `drill`): one reporter, three renderings.
//!
//! ```text
//!   --progress auto (default) ─ stderr is a terminal ─► bar, redrawn in place ≤ 10×/s
//!                             └ otherwise ───────────► nothing (logs and CI stay clean)
//!   --progress bar | json | none                        forced
//!
//!   bar:  audit verify partition 2 [=========>          ] 48.1k/100.0k records  48%  12.3k/s  ETA 4s
//!   json: {"event":"progress","label":"…","done":48100,"total":100000,"unit":"records",
//!          "rate_per_s":12301.5,"eta_s":4.2,"elapsed_s":3.9,"finished":false}   (≤ 1 line/s, stderr)
//! ```
//!
//! Progress goes to stderr: stdout is each command's result (reports, JSON) and must stay
//! parseable. The rate is measured over the last few seconds, not since the start, so the ETA
//! follows a rate that changes (a slow start, a broker that speeds up).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// A bar, even when stderr is not a terminal.
    Bar,
    /// JSON lines on stderr, about one per second, and one when finished.
    Json,
    /// Nothing.
    None,
}

impl ProgressMode {
    /// `Auto` resolved against whether stderr is a terminal.
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::None,
            other => other,
        }
    }
}

/// The `--progress` option, for commands to flatten into their arguments.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ProgressArg {
    /// Progress on stderr: a bar with rate and ETA on a terminal (auto), JSON lines (json), or
    /// nothing (none).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// How often the bar is redrawn at most.
const BAR_EVERY: Duration = Duration::from_millis(100);
/// How often a JSON line is written at most.
const JSON_EVERY: Duration = Duration::from_secs(1);
/// The window the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 24;

/// A progress reporter for one phase of work.
pub struct Progress {
    mode: ProgressMode,
    label: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_output: Option<Instant>,
    /// (when, done) samples within the rate window.
    samples: VecDeque<(Instant, u64)>,
    out: Box<dyn Write + Send>,
    finished: bool,
}

impl Progress {
    /// A reporter for `label`, counting `unit`s towards `total` (when known), writing to stderr.
    pub fn new(mode: ProgressMode, label: impl Into<String>, unit: &'static str) -> Progress {
        Progress::to(mode.resolve(), label, unit, Box::new(std::io::stderr()))
    }

    fn to(
        mode: ProgressMode,
        label: impl Into<String>,
        unit: &'static str,
        out: Box<dyn Write + Send>,
    ) -> Progress {
        let now = Instant::now();
        Progress {
            mode,
            label: label.into(),
            unit,
            total: None,
            done: 0,
            started: now,
            last_output: None,
            samples: VecDeque::from([(now, 0)]),
            out,
            finished: false,
        }
    }

    /// Sets the total and returns the reporter (builder style).
    pub fn with_total(mut self, total: u64) -> Progress {
        self.total = Some(total);
        self
    }

    /// Sets the total once it is known (e.g. after a phase has located its range).
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Counts `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// Sets the units done so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        let now = Instant::now();
        let every = match self.mode {
            ProgressMode::Bar => BAR_EVERY,
            ProgressMode::Json => JSON_EVERY,
            _ => return,
        };
        if self.last_output.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        self.sample(now);
        self.last_output = Some(now);
        self.render(now, false);
    }

    fn sample(&mut self, now: Instant) {
        self.samples.push_back((now, self.done));
        while self.samples.len() > 2
            && self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Units per second over the last few seconds (since the start, before that).
    fn rate(&self, now: Instant) -> f64 {
        let (t0, d0) = self.samples.front().copied().unwrap_or((self.started, 0));
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        self.done.saturating_sub(d0) as f64 / secs
    }

    fn render(&mut self, now: Instant, finished: bool) {
        let rate = if finished {
            self.done as f64 / now.duration_since(self.started).as_secs_f64().max(1e-9)
        } else {
            self.rate(now)
        };
        let eta = match self.total {
            Some(t) if rate > 0.0 && t > self.done => Some((t - self.done) as f64 / rate),
            Some(_) => Some(0.0),
            None => None,
        };
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let text = match self.mode {
            ProgressMode::Bar => {
                let line = bar_line(&self.label, self.done, self.total, self.unit, rate, eta);
                // \r and clear-to-end-of-line: redraw in place; a newline when finished.
                format!("\r{line}\x1b[K{}", if finished { "\n" } else { "" })
            }
            ProgressMode::Json => {
                let v = serde_json::json!({
                    "event": "progress",
                    "label": self.label,
                    "done": self.done,
                    "total": self.total,
                    "unit": self.unit,
                    "rate_per_s": (rate * 10.0).round() / 10.0,
                    "eta_s": eta.map(|e| (e * 10.0).round() / 10.0),
                    "elapsed_s": (elapsed * 10.0).round() / 10.0,
                    "finished": finished,
                });
                format!("{v}\n")
            }
            _ => return,
        };
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Clears a bar from its line so that the caller can print a line of its own (on a terminal
    /// stdout and stderr share the screen); the next update draws the bar again.
    pub fn clear(&mut self) {
        if self.mode == ProgressMode::Bar && self.last_output.is_some() {
            let _ = self.out.write_all(b"\r\x1b[K");
            let _ = self.out.flush();
            self.last_output = None;
        }
    }

    /// Ends the phase: the bar's final state on its own line, or a final JSON line. Only when
    /// something was shown (a phase that ended before the first redraw prints nothing in bar
    /// mode, so quick commands stay quiet).
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let shown = self.last_output.is_some();
        if self.mode == ProgressMode::Json || (self.mode == ProgressMode::Bar && shown) {
            self.render(Instant::now(), true);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar left mid-line would glue the next message to it.
        if self.mode == ProgressMode::Bar && self.last_output.is_some() && !self.finished {
            let _ = self.out.write_all(b"\n");
        }
    }
}

/// One line of the bar: label, bar, counts, percentage, rate, ETA.
fn bar_line(
    label: &str,
    done: u64,
    total: Option<u64>,
    unit: &str,
    rate: f64,
    eta: Option<f64>,
) -> String {
    match total {
        Some(total) => {
            let frac = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
            let filled = (frac * BAR_WIDTH as f64).round() as usize;
            let mut bar = "=".repeat(filled);
            if filled < BAR_WIDTH {
                bar.push('>');
                bar.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
            }
            let eta = eta.map_or_else(|| "?".to_owned(), duration);
            format!(
                "{label} [{bar}] {}/{} {unit} {:>3.0}%  {}/s  ETA {eta}",
                count(done as f64),
                count(total as f64),
                frac * 100.0,
                count(rate)
            )
        }
        None => format!("{label} {} {unit}  {}/s", count(done as f64), count(rate)),
    }
}

/// 950, 12.3k, 4.5M.
fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// 4s, 2m05s, 1h02m.
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn the_bar_shows_counts_percentage_rate_and_eta() {
        let line = bar_line("audit verify", 48_100, Some(100_000), "records", 12_301.0, Some(4.2));
        assert_eq!(
            line,
            "audit verify [============>           ] 48.1k/100.0k records  48%  12.3k/s  ETA 4s"
        );
        let full = bar_line("x", 10, Some(10), "records", 5.0, Some(0.0));
        assert!(full.contains(&format!("[{}]", "=".repeat(BAR_WIDTH))), "{full}");
        assert_eq!(bar_line("x", 7, None, "records", 3.0, None), "x 7 records  3/s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(count(4_500_000.0), "4.5M");
    }

    #[test]
    fn json_lines_are_throttled_and_end_with_a_finished_line() {
        let sink = Sink::default();
        let mut p =
            Progress::to(ProgressMode::Json, "rebuild policy", "records", Box::new(sink.clone()))
                .with_total(1000);
        for _ in 0..500 {
            p.inc(1);
        }
        p.finish();
        p.finish();
        let lines: Vec<serde_json::Value> =
            sink.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        // The first update is shown at once, the rest within the same second are not.
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["done"], 1);
        assert_eq!(lines[0]["finished"], false);
        let last = &lines[1];
        assert_eq!((last["done"].as_u64(), last["total"].as_u64()), (Some(500), Some(1000)));
        assert_eq!(last["finished"], true);
        assert_eq!(last["label"], "rebuild policy");
        assert!(last["rate_per_s"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn none_prints_nothing_and_a_bar_redraws_in_place() {
        let sink = Sink::default();
        let mut p = Progress::to(ProgressMode::None, "x", "records", Box::new(sink.clone()));
        p.inc(5);
        p.finish();
        assert_eq!(sink.text(), "");

        let sink = Sink::default();
        let mut p =
            Progress::to(ProgressMode::Bar, "x", "records", Box::new(sink.clone())).with_total(10);
        p.inc(5);
        p.finish();
        let text = sink.text();
        assert!(text.starts_with("\rx ["), "{text:?}");
        assert!(text.ends_with("\x1b[K\n"), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    }
}
