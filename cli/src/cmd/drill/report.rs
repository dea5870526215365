//! The drill report: one document (JSON) and its text form, pass/fail per step with timings.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

/// `format` of the JSON report.
pub const REPORT_FORMAT: &str = "evalstream.drill.report.v1";

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done, and what it checks holds.
    Pass,
    /// Done, but not everything is proven (e.g. entries not covered by a signed checkpoint yet).
    Warn,
    /// What it checks does not hold, or it could not run.
    Fail,
    /// Not run (an earlier step failed, or it does not apply).
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        }
    }
}

/// One step of the drill.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Short name (`export`, `import`, ...).
    pub name: String,
    /// What it does, in the runbook's words.
    pub what: String,
    /// How it ended.
    pub status: Status,
    /// Seconds it took.
    pub duration_s: f64,
    /// What was seen (the command's summary, counts, the first problem).
    pub detail: Vec<String>,
    /// The command it ran, when it ran one (as an operator would type it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: &'static str,
    /// `pass`, `warn` or `fail`.
    pub result: Status,
    /// When the drill started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds from start to end.
    pub duration_s: f64,
    /// Topic prefix of the live system ("" for none).
    pub source_prefix: String,
    /// Topic prefix the archive was restored into.
    pub target_prefix: String,
    /// The archive restored.
    pub archive: String,
    /// Whether the restored topics were kept.
    pub kept: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    #[serde(skip)]
    started: Option<Instant>,
}

impl Report {
    /// An empty report for a drill from `source_prefix` into `target_prefix`.
    pub fn new(source_prefix: &str, target_prefix: &str, archive: &str, kept: bool) -> Report {
        Report {
            format: REPORT_FORMAT,
            result: Status::Pass,
            started_at: evalstream_runtime::time::format_rfc3339_ms_aligned(
                evalstream_runtime::readiness::wall_clock_ms(),
            ),
            duration_s: 0.0,
            source_prefix: source_prefix.into(),
            target_prefix: target_prefix.into(),
            archive: archive.into(),
            kept,
            steps: Vec::new(),
            started: Some(Instant::now()),
        }
    }

    /// Whether a step has failed (later steps are skipped).
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }

    /// Adds a finished step and says so on stderr.
    pub fn push(&mut self, step: Step) {
        eprintln!(
            "drill: {:<10} {:<7} {:>6.1} s  {}",
            step.name,
            step.status.as_str(),
            step.duration_s,
            step.detail.first().map(String::as_str).unwrap_or("")
        );
        self.steps.push(step);
    }

    /// Sets the overall result and duration.
    pub fn finish(&mut self) {
        self.duration_s = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.result = if self.failed() {
            Status::Fail
        } else if self.steps.iter().any(|s| s.status == Status::Warn) {
            Status::Warn
        } else {
            Status::Pass
        };
    }

    /// The text form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "evalstream DR drill: {} ({:.1} s, started {})\n",
            match self.result {
                Status::Pass => "PASS",
                Status::Warn => "PASS with warnings",
                _ => "FAIL",
            },
            self.duration_s,
            self.started_at
        ));
        out.push_str(&format!(
            "live system prefix {:?} -> restored into prefix {:?} ({}); archive {}\n\n",
            self.source_prefix,
            self.target_prefix,
            if self.kept { "kept" } else { "deleted afterwards" },
            self.archive
        ));
        out.push_str(&format!(
            "{:<4}{:<12}{:<9}{:>8}  {}\n",
            "#", "step", "status", "time", "what"
        ));
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:<4}{:<12}{:<9}{:>7.1}s  {}\n",
                i + 1,
                s.name,
                s.status.as_str(),
                s.duration_s,
                s.what
            ));
            if let Some(c) = &s.command {
                out.push_str(&format!("{:33}$ {c}\n", ""));
            }
            for d in &s.detail {
                out.push_str(&format!("{:33}{d}\n", ""));
            }
        }
        out
    }

    /// Writes the JSON report to `path` and the text form next to it (`.txt`).
    pub fn write(&self, path: &Path) -> anyhow::Result<std::path::PathBuf> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        let text_path = path.with_extension("txt");
        std::fs::write(&text_path, self.text())
            .with_context(|| format!("writing {}", text_path.display()))?;
        Ok(text_path)
    }
}

/// Times a step.
pub struct Timer(Instant);

impl Timer {
    /// Starts timing.
    pub fn start() -> Timer {
        Timer(Instant::now())
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    /// A finished step.
    pub fn step(
        &self,
        name: &str,
        what: &str,
        status: Status,
        detail: Vec<String>,
        command: Option<String>,
    ) -> Step {
        Step {
            name: name.into(),
            what: what.into(),
            status,
            duration_s: self.0.elapsed().as_secs_f64(),
            detail,
            command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_is_the_worst_step_and_the_text_lists_every_step() {
        let mut r = Report::new("", "drill-x.", "a.jsonl", false);
        let t = Timer::start();
        r.push(t.step(
            "export",
            "export the audit archive",
            Status::Pass,
            vec!["ok".into()],
            Some("evalstream audit export".into()),
        ));
        r.push(t.step("verify", "verify the restored chain", Status::Warn, vec![], None));
        r.finish();
        assert_eq!(r.result, Status::Warn);
        let text = r.text();
        assert!(text.starts_with("evalstream DR drill: PASS with warnings"), "{text}");
        assert!(text.contains("export") && text.contains("$ evalstream audit export"), "{text}");
        r.push(t.step(
            "scenario",
            "run the scenario",
            Status::Fail,
            vec!["2 outcomes wrong".into()],
            None,
        ));
        r.finish();
        assert_eq!(r.result, Status::Fail);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["result"], "fail");
        assert_eq!(json["steps"][2]["status"], "fail");
        assert_eq!(json["format"], REPORT_FORMAT);
    }
}
