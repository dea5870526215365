#![cfg(feature = "broker")]
//! `Topology::apply` and `evalstream topology apply` against a real broker.
//!
//! Every test applies the bundled topology under its own random prefix (`t<16 hex>.`), so runs
//! never collide with each other or with earlier runs on the same broker. The topics a test
//! pre-creates "by hand" go through the shared helper's raw admin client, not through the code
//! under test, and partition counts are read back with an independent metadata client.

use evalstream_integration_tests::{
    bootstrap_servers, create_topic_with_config, evalstream, partition_count, run,
};
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use evalstream_runtime::topology::{ApplyReport, TopicStatus, Topology};
use rdkafka::ClientConfig;

/// A fresh topic prefix, valid as a topic name fragment.
fn fresh_prefix() -> String {
    format!("t{:016x}.", rand::random::<u64>())
}

/// The admin client config the CLI would use for the test broker.
fn admin_config() -> ClientConfig {
    let cfg = RuntimeConfig { bootstrap_servers: bootstrap_servers(), ..Default::default() };
    kafka::base(&cfg)
}

fn bundled() -> Topology {
    Topology::bundled().expect("the bundled topology is valid")
}

/// Prints settings the broker could not report, so a run on a broker without DescribeConfigs
/// says what it did not check instead of passing silently.
fn show_unchecked(report: &ApplyReport) {
    for t in report.topics.iter().filter(|t| !t.unchecked.is_empty()) {
        eprintln!("not checked on {}: {:?}", t.spec.name, t.unchecked);
    }
}

#[test]
fn apply_creates_everything_then_finds_everything_ok() {
    let prefix = fresh_prefix();
    let topology = bundled();

    let first = topology.apply(&admin_config(), &prefix, false).expect("first apply");
    assert_eq!(first.topics.len(), topology.topics().len());
    for t in &first.topics {
        assert_eq!(t.status, TopicStatus::Created, "{t:?}");
    }
    for spec in topology.topics() {
        let name = format!("{prefix}{}", spec.name);
        assert_eq!(partition_count(&name), spec.partitions as usize, "{name}");
    }

    let second = topology.apply(&admin_config(), &prefix, false).expect("second apply");
    show_unchecked(&second);
    assert_eq!(second.count(TopicStatus::Created), 0, "{}", second.render_text());
    for t in &second.topics {
        assert_eq!(t.status, TopicStatus::Ok, "{}", second.render_text());
        assert!(t.drift.is_empty());
    }
    assert!(!second.has_drift() && !second.has_failures());
}

#[test]
fn concurrent_applies_create_each_topic_once() {
    let prefix = fresh_prefix();
    let topology = bundled();
    let cfg = admin_config();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| topology.apply(&cfg, &prefix, false).expect("apply a"));
        let b = s.spawn(|| topology.apply(&cfg, &prefix, false).expect("apply b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (x, y) in a.topics.iter().zip(&b.topics) {
        let statuses = [x.status, y.status];
        assert!(
            statuses.contains(&TopicStatus::Created) && statuses.contains(&TopicStatus::Ok),
            "{}: {statuses:?}\n{}\n{}",
            x.spec.name,
            a.render_text(),
            b.render_text()
        );
    }
}

#[test]
fn dry_run_creates_nothing() {
    let prefix = fresh_prefix();
    let topology = bundled();
    let report = topology.apply(&admin_config(), &prefix, true).expect("dry run");
    assert!(report.dry_run);
    assert_eq!(report.count(TopicStatus::WouldCreate), topology.topics().len());
    for spec in topology.topics() {
        let name = format!("{prefix}{}", spec.name);
        assert_eq!(partition_count(&name), 0, "{name} was created by a dry run");
    }
}

#[test]
fn existing_topic_with_other_settings_is_drift_and_left_untouched() {
    let prefix = fresh_prefix();
    let input = format!("{prefix}totals.input");
    let changelog = format!("{prefix}evalstream.totals.changelog");
    // The topology wants 4 partitions here.
    create_topic_with_config(&input, 2, &[]);
    // The topology wants `compact` here; same partition count, so only the config differs.
    create_topic_with_config(&changelog, 4, &[("cleanup.policy", "delete")]);

    let topology = bundled();
    for round in 1..=2 {
        let report = topology.apply(&admin_config(), &prefix, false).expect("apply");
        show_unchecked(&report);
        assert!(report.has_drift(), "round {round}: {}", report.render_text());

        let drifted = report.outcome(&input).expect("input in report");
        assert_eq!(drifted.status, TopicStatus::Drift, "{}", report.render_text());
        let partitions = drifted.drift.iter().find(|d| d.setting == "partitions").unwrap();
        assert_eq!((partitions.expected.as_str(), partitions.actual.as_str()), ("4", "2"));

        // The config drift is found when the broker can describe configs; otherwise it must be
        // reported as not checked, never as ok.
        let cl = report.outcome(&changelog).expect("changelog in report");
        let found = cl.drift.iter().any(|d| {
            d.setting == "cleanup.policy" && d.expected == "compact" && d.actual == "delete"
        });
        let unchecked = cl.unchecked.iter().any(|u| u.setting == "cleanup.policy");
        assert!(found || unchecked, "cleanup.policy drift neither found nor flagged: {cl:?}");
        if found {
            assert_eq!(cl.status, TopicStatus::Drift);
        }

        // Everything else: created in round 1, ok in round 2.
        let expected = if round == 1 { TopicStatus::Created } else { TopicStatus::Ok };
        for t in report.topics.iter().filter(|t| t.spec.name != input && t.spec.name != changelog) {
            assert_eq!(t.status, expected, "round {round}: {}", report.render_text());
        }
        // Nothing was repaired.
        assert_eq!(partition_count(&input), 2, "apply changed the partition count");
    }
}

#[test]
fn cli_apply_exit_codes_and_json_report() {
    // Fresh cluster state: exit 0, everything created.
    let prefix = fresh_prefix();
    let out = run(
        evalstream().args(["topology", "apply", "--json"]).env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        None,
    );
    out.assert_success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["prefix"], prefix.as_str());
    let topics = report["topics"].as_array().unwrap();
    assert_eq!(topics.len(), bundled().topics().len());
    assert!(topics.iter().all(|t| t["status"] == "created"), "{out}");

    // A drifting topic: exit code 3, the text report names it with expected and actual.
    let prefix = fresh_prefix();
    let input = format!("{prefix}totals.input");
    create_topic_with_config(&input, 1, &[]);
    let out =
        run(evalstream().args(["topology", "apply"]).env("EVALSTREAM_TOPIC_PREFIX", &prefix), None);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let line = out.stdout.lines().find(|l| l.contains(&input)).expect("drift line");
    assert!(line.starts_with("drift"), "{out}");
    assert!(out.stdout.contains("partitions: expected 4, actual 1"), "{out}");
    assert_eq!(partition_count(&input), 1);

    // Dry run on a fresh prefix: exit 0, nothing created.
    let prefix = fresh_prefix();
    let out = run(
        evalstream()
            .args(["topology", "apply", "--dry-run"])
            .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        None,
    );
    out.assert_success();
    assert!(out.stdout.contains("would create"), "{out}");
    assert_eq!(partition_count(&format!("{prefix}totals.input")), 0);
}

#[test]
fn cli_validate_and_show() {
    let out = run(evalstream().args(["topology", "validate"]), None);
    out.assert_success();
    assert!(out.stdout.contains("valid"), "{out}");

    let out = run(evalstream().args(["topology", "show", "--format", "mermaid"]), None);
    out.assert_success();
    assert!(out.stdout.starts_with("flowchart LR"), "{out}");
    for p in bundled().processors() {
        assert!(out.stdout.contains(&format!("[[\"{}\"]]", p.name)), "{}", p.name);
    }

    let bad = evalstream_integration_tests::temp_file(
        "topology-bad",
        "[[topic]]\nname = \"x\"\nschema = \"raw\"\ncleanup_policy = \"delete\"\ndoc = \"x\"\npartitons = 3\n",
    );
    let out = run(evalstream().args(["topology", "validate", "--file"]).arg(&bad), None);
    out.assert_failure();
    assert!(out.stderr.contains("partitons"), "{out}");
}
