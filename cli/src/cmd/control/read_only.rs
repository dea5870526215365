//! `evalstream control read-only on|off [--processor P | --all] --reason R`: the runbook's
//! "mark service read-only", cluster-wide and without a restart.
//!
//! ```text
//!   one transaction:
//!   evalstream.control ◄── key read-only/<P> or read-only/*, ModeCommand {mode, reason, actor,
//!                          issued_at, command_id} (JSON; compacted: the last command per key stays)
//!   audit.events       ◄── ops.read_only {who, why, target, mode, command id}
//!        │
//!        ▼ --ops HOST:PORT (repeatable), --wait S (default 30; 0: do not wait)
//!   polls each instance's /health until its mode_source names this command
//! ```
//!
//! Every running instance follows the control topic with a side reader (see
//! `evalstream_runtime::control`) and applies the command within a second. Why the wait goes
//! through the instances' ops endpoints: the mode is not an output of the processors (it changes
//! whether they consume, not what they write), so no record on a topic says it took effect;
//! `/health` does, from the instance itself, after the pause or resume happened.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evalstream_domain::events::{self, Fact};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::control::{
    ensure_control_topic, read_only_key, ModeCommand, CONTROL_TOPIC, READ_ONLY_ALL,
};
use serde_json::Value;

use super::super::domain_io::{actor, command_id, produce_atomically, Outgoing};
use super::super::signers::now_ms;
use super::OnOff;

/// Arguments of `control read-only`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["processor", "all"])))]
pub struct ReadOnlyArgs {
    /// on (hold every partition: nothing consumed or produced, state kept, lag grows) or off
    /// (resume exactly where each partition stopped).
    #[arg(value_enum)]
    pub state: OnOff,
    /// Only this processor (as in `evalstream run <processor>`).
    #[arg(long)]
    pub processor: Option<String>,
    /// Every processor.
    #[arg(long)]
    pub all: bool,
    /// Why (the incident ticket); recorded in the audit log and shown on /health.
    #[arg(long)]
    pub reason: String,
    /// Who; default $USER.
    #[arg(long)]
    pub actor: Option<String>,
    /// Ops endpoint (HOST:PORT) of a running instance to wait for; repeat for each instance.
    /// Without any, the command returns once the switch is written.
    #[arg(long = "ops", value_name = "HOST:PORT")]
    pub ops: Vec<String>,
    /// Seconds to wait until every --ops instance reports the new mode (0: do not wait).
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
}

/// Runs `control read-only`.
pub fn run(cfg: &RuntimeConfig, args: ReadOnlyArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is recorded in the audit log)");
    }
    if let Some(p) = &args.processor {
        // A typo would write a key no instance follows, and the command would look done.
        crate::processors::find(p)?;
    }
    let codec = Codec::from_env().context("loading schemas")?;
    let on = args.state == OnOff::On;
    let mode = if on { "read-only" } else { "normal" };
    let key = match &args.processor {
        Some(p) => read_only_key(p),
        None => READ_ONLY_ALL.to_owned(),
    };
    let now = now_ms();
    let command = ModeCommand {
        mode: mode.to_owned(),
        reason: args.reason.clone(),
        actor: actor(args.actor.clone()),
        issued_at: now,
        command_id: command_id(&format!("read-only-{}", if on { "on" } else { "off" }), now),
    };
    let event = Fact::new("control", "ops.read_only", "read_only", &key, &command.command_id, now)
        .actor(&command.actor)
        .with("target", args.processor.as_deref().unwrap_or("*"))
        .with("mode", mode)
        .with("reason", args.reason.as_str())
        .build();
    let topic = cfg.topic(CONTROL_TOPIC);
    ensure_control_topic(cfg, &topic)?;
    let audit_topic = cfg.topic(events::TOPIC);
    let records = [
        Outgoing {
            topic: topic.clone(),
            partition: Some(0),
            key: key.clone(),
            value: serde_json::to_vec(&command)?,
        },
        Outgoing {
            topic: audit_topic.clone(),
            partition: None,
            key: event.subject.clone(),
            value: codec.encode_record(&audit_topic, &event)?,
        },
    ];
    produce_atomically(cfg, "control", &records)?;
    println!(
        "read-only {}: command {} written to {topic} (key {key}) with its ops.read_only audit event",
        if on { "on" } else { "off" },
        command.command_id
    );
    if args.ops.is_empty() || args.wait == 0 {
        println!(
            "not waiting: running instances apply it within a second; check with \
             `curl -s http://<instance>/health | jq .mode,.mode_source`"
        );
        return Ok(ExitCode::SUCCESS);
    }
    wait_for(&args.ops, &command, args.processor.as_deref(), Duration::from_secs(args.wait))
}

/// What one instance's `/health` says about `command`.
#[derive(Debug, PartialEq)]
enum Answer {
    /// It applied it: its mode source names the command.
    Applied,
    /// It runs another processor than the one addressed: not concerned.
    NotConcerned(String),
    /// Not yet (or not reachable): why.
    Pending(String),
}

fn judge(health: &Value, command: &ModeCommand, processor: Option<&str>) -> Answer {
    let name = health["processor"].as_str().unwrap_or_default();
    if processor.is_some_and(|p| p != name) {
        return Answer::NotConcerned(name.to_owned());
    }
    let source_id = health["mode_source"]["command_id"].as_str();
    if health["mode"] == command.mode.as_str() && source_id == Some(command.command_id.as_str()) {
        Answer::Applied
    } else {
        Answer::Pending(format!("mode {} from {}", health["mode"], health["mode_source"]))
    }
}

fn wait_for(
    ops: &[String],
    command: &ModeCommand,
    processor: Option<&str>,
    limit: Duration,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + limit;
    let mut pending: Vec<(String, String)> =
        ops.iter().map(|o| (o.clone(), String::new())).collect();
    loop {
        let mut still = Vec::new();
        for (endpoint, _) in pending {
            let url = format!("http://{endpoint}/health");
            let answer = match client.get(&url).send().and_then(|r| r.json::<Value>()) {
                Ok(health) => judge(&health, command, processor),
                Err(e) => Answer::Pending(format!("no answer: {e}")),
            };
            match answer {
                Answer::Applied => println!("{endpoint}: {}", command.mode),
                Answer::NotConcerned(name) => {
                    println!("{endpoint}: runs {name}, not addressed by this command")
                }
                Answer::Pending(why) => still.push((endpoint, why)),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            for (endpoint, why) in &pending {
                eprintln!("{endpoint}: not applied after {}s ({why})", limit.as_secs());
            }
            anyhow::bail!(
                "{} of {} instance(s) did not report {} in time; the command is written and \
                 applies when they next read the control topic",
                pending.len(),
                ops.len(),
                command.mode
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command() -> ModeCommand {
        ModeCommand {
            mode: "read-only".into(),
            reason: "INC-7".into(),
            actor: "alice".into(),
            issued_at: 1,
            command_id: "read-only-on-1-abc".into(),
        }
    }

    #[test]
    fn applied_only_when_the_mode_source_names_this_command() {
        let c = command();
        let applied = json!({ "processor": "totals", "mode": "read-only",
            "mode_source": { "from": "control", "command_id": "read-only-on-1-abc" } });
        assert_eq!(judge(&applied, &c, None), Answer::Applied);
        assert_eq!(judge(&applied, &c, Some("totals")), Answer::Applied);
        // Read-only already, but from the configuration or an earlier command: not this one.
        let earlier = json!({ "processor": "totals", "mode": "read-only",
            "mode_source": { "from": "control", "command_id": "read-only-on-0-xyz" } });
        assert!(matches!(judge(&earlier, &c, None), Answer::Pending(_)));
        let config = json!({ "processor": "totals", "mode": "read-only",
            "mode_source": { "from": "config" } });
        assert!(matches!(judge(&config, &c, None), Answer::Pending(_)));
    }

    #[test]
    fn instances_of_other_processors_are_not_waited_for() {
        let other = json!({ "processor": "policy", "mode": "normal",
            "mode_source": { "from": "config" } });
        assert_eq!(
            judge(&other, &command(), Some("totals")),
            Answer::NotConcerned("policy".into())
        );
    }
}
