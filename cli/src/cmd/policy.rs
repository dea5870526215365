//! `evalstream policy simulate`: the runbook's "use `simulate=true` against SentinelNet to
//! reproduce the denial reason", against the running policy gate.
//!
//! ```text
//!   PolicyDecision { simulate: true, decision_id: sim-<ms>-<rand>, ... } ─► policy.decisions
//!        │ (keyed by request id: same partition as the request)
//!        ▼ the policy processor changes nothing and writes
//!   audit.events: policy.simulated { current_status, would_be }  ◄── followed until it arrives
//!        ▼
//!   "request R is pending_policy; a deny by policy P would make it denied"
//! ```
//!
//! The simulated decision is itself recorded in the audit log (who simulated what is an
//! auditable fact), and never changes a request, a metric of denials or an outcome.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use evalstream_domain::events;
use evalstream_domain::records::{AuditEvent, Decision, PolicyDecision, RiskLevel, SubjectKind};
use evalstream_runtime::codec::Codec;
use serde_json::{json, Value};

use super::common::load_config;
use super::domain_io::{command_id, produce_atomically, AuditFollower, Outgoing};
use super::signers::now_ms;

/// Topic of the decisions.
pub const DECISIONS: &str = "policy.decisions";

/// `evalstream policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send a simulate=true decision for a request and print what it would do next to the
    /// request's current status. Nothing changes.
    Simulate(SimulateArgs),
}

/// Arguments of `policy simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The promotion request id or allocation id.
    #[arg(long)]
    pub request_id: String,
    /// promotion or allocation.
    #[arg(long, value_parser = |s: &str| s.parse::<SubjectKind>())]
    pub subject_kind: SubjectKind,
    /// allow or deny.
    #[arg(long, value_parser = |s: &str| s.parse::<Decision>())]
    pub decision: Decision,
    /// The policy bundle version being tried.
    #[arg(long)]
    pub policy_version: String,
    /// A reason (repeatable), as SentinelNet would give it.
    #[arg(long)]
    pub reason: Vec<String>,
    /// Risk level to attach: low, medium, high, critical.
    #[arg(long, default_value = "critical", value_parser = parse_risk)]
    pub risk_level: RiskLevel,
    /// Seconds to wait for the policy processor's answer.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_risk(s: &str) -> Result<RiskLevel, String> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| format!("unknown risk level {s:?} (low, medium, high, critical)"))
}

/// Runs an `evalstream policy` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Simulate(args) = cmd;
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let now = now_ms();
    let d = PolicyDecision {
        decision_id: command_id("sim", now),
        request_id: args.request_id.clone(),
        subject_kind: args.subject_kind,
        decision: args.decision,
        reasons: args.reason.clone(),
        policy_version: args.policy_version.clone(),
        risk_level: args.risk_level,
        simulate: true,
        decided_at: now,
    };
    let topic = cfg.topic(DECISIONS);
    let follower = AuditFollower::start(&cfg, &codec)?;
    let value = codec.encode_record(&topic, &d)?;
    produce_atomically(
        &cfg,
        "policy-simulate",
        &[Outgoing { topic, partition: None, key: d.request_id.clone(), value }],
    )?;
    let wanted = events::event_id("policy", "simulated", &d.request_id, &d.decision_id);
    let mut answer: Option<AuditEvent> = None;
    follower
        .until(
            Duration::from_secs(args.wait),
            &format!("{wanted} (is the policy processor running?)"),
            |e| {
                if e.event_id == wanted {
                    answer = Some(e.clone());
                    true
                } else {
                    false
                }
            },
        )
        .context("the simulated decision was produced but not answered")?;
    let event = answer.context("no answer")?;
    let payload: Value = serde_json::from_str(&event.payload)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "decision_id": d.decision_id, "event_id": event.event_id, "result": payload })
            )?
        );
    } else {
        println!(
            "{} request {}: currently {}; a simulated {} by policy {} would give: {}",
            d.subject_kind.as_str(),
            d.request_id,
            payload["current_status"].as_str().unwrap_or("?"),
            d.decision.as_str(),
            d.policy_version,
            payload["would_be"].as_str().unwrap_or("?"),
        );
        println!(
            "(simulated decision {} recorded as audit event {}; nothing changed)",
            d.decision_id, event.event_id
        );
    }
    Ok(ExitCode::SUCCESS)
}
