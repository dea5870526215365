//! `evalstream control ...`: operator switches that change what processors do.
//!
//! `control read-only` (cluster-wide read-only mode, through the compacted `evalstream.control`
//! topic every processor follows) lives in [`read_only`]; the domain switches below change what
//! processors output and are data in their input streams.
//!
//! ```text
//!   control degraded on|off --reason R [--actor A]            runbook SentinelNet option A
//!   control freeze-allocations on|off --reason R [--actor A]  runbook Finance "freeze allocations"
//!        │
//!        ▼ one transaction:
//!   evalstream.switches  ◄── Switch {command_id, switch, on, reason, actor, issued_at}, one copy
//!                            per partition (explicit partition), so every partition of policy and
//!                            settlement applies it at a definite point of its input
//!   audit.events         ◄── ops.switch {who, why, command id}
//!        │
//!        ▼ --wait (default 60 s; 0: do not wait)
//!   follows audit.events until every partition of every processor concerned has written its
//!   ops.switch_applied event (policy for degraded; policy and settlement for freeze)
//! ```
//!
//! Why the switches are data in the processors' input streams and not a flag they poll: what a
//! switch changes is the processors' *outputs* (best-effort promotions, held settlements), so it
//! must happen at a definite position of the input for replays after a crash to reproduce the same
//! outputs, and exactly once. Why `--wait`: the operator learns when the switch took effect
//! everywhere (or that a processor is not running), which the runbook's "document actions in the
//! incident ticket" needs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use evalstream_domain::events::{self, Fact};
use evalstream_domain::records::{Switch, SwitchKind};
use evalstream_runtime::codec::Codec;

mod read_only;

use super::common::load_config;
use super::domain_io::{
    actor, command_id, partitions, produce_atomically, AuditFollower, Outgoing,
};
use super::signers::now_ms;

/// Topic of the domain switches.
pub const SWITCHES: &str = "evalstream.switches";

/// `evalstream control` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Degraded policy mode (runbook "SentinelNet outage", option A): while on, low-risk
    /// requests without a decision go through as best effort (promotion risk hint low and not to
    /// production; allocations up to the policy processor's degraded_max_amount_minor); everything
    /// else stays closed. A later real decision confirms or revokes.
    Degraded(SwitchArgs),
    /// Freeze allocations (runbook "Finance / ledger failures", mitigation): while on, no
    /// allocation is approved or settled; decisions and verified settlements are held and applied
    /// in arrival order when unfrozen. Reconciliation corrections still apply.
    FreezeAllocations(SwitchArgs),
    /// Read-only mode (runbook "mark service read-only"): every instance of the processor (or
    /// of all processors) holds its partitions within a second — nothing consumed or produced,
    /// state kept, lag grows — until `off`, which resumes exactly where each stopped. Survives
    /// restarts (compacted control topic); the MODE setting stays the start-up default.
    ReadOnly(read_only::ReadOnlyArgs),
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Switch on.
    On,
    /// Switch off.
    Off,
}

/// Arguments of a switch.
#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// on or off.
    #[arg(value_enum)]
    pub state: OnOff,
    /// Why (the incident ticket); recorded in the audit log.
    #[arg(long)]
    pub reason: String,
    /// Who; default $USER.
    #[arg(long)]
    pub actor: Option<String>,
    /// Seconds to wait until every processor partition has applied it (0: do not wait).
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
}

/// Runs an `evalstream control` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    let (kind, args) = match cmd {
        Command::Degraded(a) => (SwitchKind::Degraded, a),
        Command::FreezeAllocations(a) => (SwitchKind::FreezeAllocations, a),
        Command::ReadOnly(a) => return read_only::run(&load_config(config)?, a),
    };
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is recorded in the audit log)");
    }
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let on = args.state == OnOff::On;
    let now = now_ms();
    let switch = Switch {
        command_id: command_id(
            &format!("{}-{}", kind.as_str(), if on { "on" } else { "off" }),
            now,
        ),
        switch: kind,
        on,
        reason: args.reason.clone(),
        actor: actor(args.actor.clone()),
        issued_at: now,
    };
    let topic = cfg.topic(SWITCHES);
    let parts = partitions(&cfg, &topic)?;
    let mut records = Vec::new();
    for p in &parts {
        let value = codec.encode_record(&topic, &switch)?;
        records.push(Outgoing {
            topic: topic.clone(),
            partition: Some(*p),
            key: switch.command_id.clone(),
            value,
        });
    }
    let event =
        Fact::new("control", "ops.switch", "switch", &switch.command_id, &switch.command_id, now)
            .actor(&switch.actor)
            .with("switch", kind.as_str())
            .with("on", on)
            .with("reason", args.reason.as_str())
            .with("partitions", parts.len())
            .build();
    let audit_topic = cfg.topic(events::TOPIC);
    records.push(Outgoing {
        topic: audit_topic.clone(),
        partition: None,
        key: event.subject.clone(),
        value: codec.encode_record(&audit_topic, &event)?,
    });
    let follower = (args.wait > 0).then(|| AuditFollower::start(&cfg, &codec)).transpose()?;
    produce_atomically(&cfg, "control", &records)?;
    println!(
        "{} {}: command {} written to {} partition(s) of {topic} with its ops.switch audit event",
        kind.as_str(),
        if on { "on" } else { "off" },
        switch.command_id,
        parts.len()
    );
    let Some(follower) = follower else { return Ok(ExitCode::SUCCESS) };
    let processors: &[&str] = match kind {
        SwitchKind::Degraded => &["policy"],
        SwitchKind::FreezeAllocations => &["policy", "settlement"],
    };
    let expected: BTreeSet<(String, String)> = processors
        .iter()
        .flat_map(|proc| parts.iter().map(move |p| (proc.to_string(), format!("p{p}"))))
        .collect();
    let mut seen = BTreeSet::new();
    let prefix = |proc: &str| format!("{proc}:switch_applied:{}:", switch.command_id);
    let what = format!(
        "ops.switch_applied of {} from {} in {} partition(s)",
        switch.command_id,
        processors.join(" and "),
        parts.len()
    );
    follower.until(Duration::from_secs(args.wait), &what, |e| {
        for proc in processors {
            if let Some(p) = e.event_id.strip_prefix(&prefix(proc)) {
                seen.insert((proc.to_string(), p.to_string()));
            }
        }
        expected.is_subset(&seen)
    })?;
    println!("applied by {} in every partition", processors.join(" and "));
    Ok(ExitCode::SUCCESS)
}
