//! Logging set-up: `tracing` events to stderr, JSON lines for machines, text for people.
//!
//! ```text
//!   tracing::info!(…) ─┐
//!   log crate (rdkafka)┴► EnvFilter (EVALSTREAM_LOG, else RUST_LOG, else "info")
//!                             └► stderr: JSON lines (not a terminal) | human text (terminal)
//! ```
//!
//! Logs go to **stderr** because stdout belongs to command output (`evalstream consume` writes
//! records there, and a log line in the middle of a JSON-lines stream would corrupt it).
//!
//! The format follows where stderr goes: a terminal gets coloured text, anything else (a pod's log
//! collector, a file, a pipe) gets one JSON object per line that ELK or Cloud Logging can index
//! without a parsing rule. `EVALSTREAM_LOG_FORMAT=json|text` overrides the guess, for example to
//! read JSON locally or to get text out of `docker logs`.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// Filter directives used when neither `EVALSTREAM_LOG` nor `RUST_LOG` is set (or both are
/// invalid): the runtime's life-cycle events without per-record noise.
pub const DEFAULT_FILTER: &str = "info";

/// Environment variable with `RUST_LOG`-style directives; wins over `RUST_LOG` so that evalstream
/// can be tuned without changing the log level of other Rust programs sharing the environment.
pub const LOG_ENV: &str = "EVALSTREAM_LOG";

/// Environment variable forcing the output format: `json` or `text`.
pub const LOG_FORMAT_ENV: &str = "EVALSTREAM_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with `timestamp`, `level`, `target`, `message`, the event's fields
    /// at the top level, and the current span.
    Json,
    /// Human-readable lines, coloured when written to a terminal.
    Text,
}

/// Installs the global `tracing` subscriber. Safe to call more than once (and from tests that
/// installed their own subscriber): only the first call in a process has an effect.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let tty = std::io::stderr().is_terminal();
        let (format, format_warning) = choose_format(env(LOG_FORMAT_ENV).as_deref(), tty);
        let (filter, filter_warning) = build_filter(env(LOG_ENV), env("RUST_LOG"));

        let installed = match format {
            LogFormat::Json => tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_thread_names(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init(),
            LogFormat::Text => tracing_subscriber::fmt()
                .with_ansi(tty)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init(),
        };
        if installed.is_err() {
            // Someone (a test harness, an embedding program) installed a subscriber first; theirs
            // stays in charge.
            return;
        }
        // Reported through the subscriber just installed, so the warning has the chosen format.
        for warning in [format_warning, filter_warning].into_iter().flatten() {
            tracing::warn!("{warning}");
        }
    });
}

/// A non-empty environment variable (an empty `RUST_LOG=` means "unset" to people, so it does
/// here too).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Picks the format from `EVALSTREAM_LOG_FORMAT` (if set) or from whether stderr is a terminal.
/// An unknown value falls back to the guess, with a warning to log once logging works.
pub fn choose_format(
    forced: Option<&str>,
    stderr_is_terminal: bool,
) -> (LogFormat, Option<String>) {
    let guess = if stderr_is_terminal { LogFormat::Text } else { LogFormat::Json };
    match forced.map(|v| v.trim().to_ascii_lowercase()) {
        None => (guess, None),
        Some(v) if v == "json" => (LogFormat::Json, None),
        Some(v) if v == "text" => (LogFormat::Text, None),
        Some(v) => (
            guess,
            Some(format!(
                "{LOG_FORMAT_ENV}={v:?} is not json or text; using {guess:?} by terminal detection"
            )),
        ),
    }
}

/// Builds the filter from `EVALSTREAM_LOG`, else `RUST_LOG`, else [`DEFAULT_FILTER`]. Invalid
/// directives fall back to the next source instead of silencing logs or aborting start-up; the
/// returned warning says what was ignored.
pub fn build_filter(
    evalstream_log: Option<String>,
    rust_log: Option<String>,
) -> (EnvFilter, Option<String>) {
    let mut warnings = Vec::new();
    for (name, value) in [(LOG_ENV, evalstream_log), ("RUST_LOG", rust_log)] {
        let Some(value) = value else { continue };
        match EnvFilter::try_new(&value) {
            Ok(filter) => return (filter, join(warnings)),
            Err(e) => warnings.push(format!("ignoring invalid {name}={value:?}: {e}")),
        }
    }
    (EnvFilter::new(DEFAULT_FILTER), join(warnings))
}

fn join(warnings: Vec<String>) -> Option<String> {
    (!warnings.is_empty()).then(|| warnings.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_terminal_unless_forced() {
        assert_eq!(choose_format(None, true).0, LogFormat::Text);
        assert_eq!(choose_format(None, false).0, LogFormat::Json);
        assert_eq!(choose_format(Some("json"), true), (LogFormat::Json, None));
        assert_eq!(choose_format(Some(" TEXT "), false), (LogFormat::Text, None));
        let (f, warning) = choose_format(Some("yaml"), false);
        assert_eq!(f, LogFormat::Json);
        assert!(warning.unwrap().contains("yaml"));
    }

    #[test]
    fn evalstream_log_wins_then_rust_log_then_default() {
        let (f, w) = build_filter(Some("debug".into()), Some("trace".into()));
        assert_eq!(f.to_string(), "debug");
        assert!(w.is_none());
        let (f, _) = build_filter(None, Some("evalstream_runtime=trace".into()));
        assert_eq!(f.to_string(), "evalstream_runtime=trace");
        let (f, _) = build_filter(None, None);
        assert_eq!(f.to_string(), DEFAULT_FILTER);
    }

    #[test]
    fn invalid_directives_fall_through_with_a_warning() {
        let (f, w) = build_filter(Some("evalstream=[".into()), Some("warn".into()));
        assert_eq!(f.to_string(), "warn");
        assert!(w.unwrap().contains(LOG_ENV));
        let (f, w) = build_filter(Some("=[".into()), Some("=[".into()));
        assert_eq!(f.to_string(), DEFAULT_FILTER);
        assert!(w.unwrap().contains("RUST_LOG"));
    }

    #[test]
    fn init_is_idempotent() {
        init();
        init();
        tracing::info!("logging initialised twice without panicking");
    }
}
