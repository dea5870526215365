//! `evalstream audit canonicalize`: JSON on stdin → RFC 8785 canonical bytes on stdout.
//!
//! The exact bytes are the product: no trailing newline, nothing else on stdout, so that
//! `evalstream audit canonicalize < event.json | sha256sum` reproduces what the chain hashes and
//! another team's canonicalizer can be compared byte for byte (runbook: "Check parity vectors and
//! canonicalizer"). Input follows docs/audit-chain.md §2.3 (strict I-JSON: duplicate keys, lone
//! surrogates, numbers that overflow a double are refused).

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use evalstream_audit::canonical::canonicalize_str;

/// Runs `audit canonicalize`.
pub fn run() -> anyhow::Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input).context("reading stdin")?;
    let text = match std::str::from_utf8(&input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("evalstream: input is not UTF-8 ({e}); RFC 8785 input must be UTF-8 JSON");
            return Ok(ExitCode::FAILURE);
        }
    };
    let canonical = match canonicalize_str(text) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("evalstream: cannot canonicalize: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&canonical).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing stdout"),
    }
}
