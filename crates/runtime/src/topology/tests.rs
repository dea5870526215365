//! Model and validation tests. Each rule gets a crafted document that breaks exactly that rule,
//! and the test checks both the typed [`Violation`] and that the message names the offender.

use super::*;

/// A small valid topology: one processor with an input (with retry and DLQ), an output and a
/// changelog, everything on defaults where the format allows it.
const BASE: &str = r#"
[defaults]
partitions = 2
replication_factor = 1

[[topic]]
name = "in"
schema = "ns.In"
cleanup_policy = "delete"
retention_ms = 1000
doc = "input"

[[topic]]
name = "in.dlq"
schema = "raw"
cleanup_policy = "delete"
doc = "dead letters"

[[topic]]
name = "in.retry"
schema = "ns.In"
cleanup_policy = "delete"
doc = "retries"

[[topic]]
name = "out"
schema = "ns.Out"
cleanup_policy = "delete"
doc = "output"

[[topic]]
name = "evalstream.p.changelog"
schema = "raw"
cleanup_policy = "compact"
doc = "state"

[[processor]]
name = "p"
doc = "the processor"
inputs = [{ topic = "in", retry = "in.retry" }]
outputs = ["out"]
"#;

/// `BASE` with each `(from, to)` replaced once; panics if `from` is absent, so a test cannot
/// silently stop testing what it claims to.
fn edited(edits: &[(&str, &str)]) -> String {
    let mut doc = BASE.to_string();
    for (from, to) in edits {
        assert!(doc.contains(from), "BASE has no {from:?}");
        doc = doc.replacen(from, to, 1);
    }
    doc
}

/// A `[[topic]]` block; `extra` holds further `key = value` lines.
fn topic(name: &str, schema: &str, cleanup: &str, extra: &str) -> String {
    format!(
        "\n[[topic]]\nname = \"{name}\"\nschema = \"{schema}\"\ncleanup_policy = \"{cleanup}\"\ndoc = \"x\"\n{extra}\n"
    )
}

/// A raw, delete-policy topic (the shape of a DLQ).
fn topic_block(name: &str, extra: &str) -> String {
    topic(name, "raw", "delete", extra)
}

fn violations(doc: &str) -> Vec<Violation> {
    match Topology::from_toml(doc) {
        Err(TopologyError::Invalid { violations, .. }) => violations,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Asserts that `doc` breaks a rule matched by `pred`, and that the error text names `offender`.
fn rejects(doc: &str, offender: &str, pred: impl Fn(&Violation) -> bool) {
    let v = violations(doc);
    assert!(v.iter().any(&pred), "rule not reported; got {v:#?}");
    let text = Topology::from_toml(doc).unwrap_err().to_string();
    assert!(text.contains(offender), "error does not name {offender:?}: {text}");
}

#[test]
fn base_document_is_valid_and_defaults_resolve() {
    let t = Topology::from_toml(BASE).unwrap();
    let p = t.processor("p").unwrap();
    assert_eq!(p.group_id, "evalstream.p");
    assert_eq!(p.changelog, "evalstream.p.changelog");
    assert_eq!(p.inputs[0].dlq, "in.dlq");
    assert_eq!(p.inputs[0].retry.as_deref(), Some("in.retry"));
    let topic = t.topic("in").unwrap();
    assert_eq!((topic.partitions, topic.replication_factor), (2, 1));
    assert_eq!(t.topic("in.dlq").unwrap().retention_ms, None);
}

#[test]
fn bundled_topology_validates() {
    let t = Topology::bundled().unwrap();
    assert_eq!(t.processors().len(), 6);
    // Every topic the runtime may write for a processor is declared and co-partitioned.
    for p in t.processors() {
        assert_eq!(p.group_id, format!("evalstream.{}", p.name));
        assert_eq!(p.changelog, format!("evalstream.{}.changelog", p.name));
        let changelog = t.topic(&p.changelog).unwrap();
        assert_eq!(changelog.cleanup_policy, CleanupPolicy::Compact);
        for i in &p.inputs {
            assert_eq!(i.dlq, format!("{}.dlq", i.topic));
            assert_eq!(t.topic(&i.topic).unwrap().partitions, changelog.partitions);
        }
    }
}

#[test]
fn bundled_topology_keeps_the_contract_names() {
    let t = Topology::bundled().unwrap();
    let io = |name: &str| {
        let p = t.processor(name).unwrap_or_else(|| panic!("processor {name}"));
        let inputs: Vec<&str> = p.input_topics().collect();
        let outputs: Vec<&str> = p.outputs.iter().map(String::as_str).collect();
        (inputs, outputs)
    };
    assert_eq!(
        io("submissions"),
        (
            vec!["eval.submissions"],
            vec![
                "eval.submissions.accepted",
                "eval.promotion-requests",
                "alloc.requests",
                "audit.events"
            ]
        )
    );
    assert_eq!(
        io("policy"),
        (
            vec![
                "policy.decisions",
                "eval.promotion-requests",
                "alloc.requests",
                "evalstream.switches"
            ],
            vec!["eval.promotions", "alloc.state", "alloc.corrections", "audit.events"]
        )
    );
    assert_eq!(
        io("settlement"),
        (
            vec!["finance.settlements", "alloc.state", "alloc.corrections", "evalstream.switches"],
            vec!["alloc.state", "audit.events"]
        )
    );
    assert_eq!(io("audit-chain"), (vec!["audit.events"], vec!["audit.chain"]));
    assert_eq!(io("audit-verifier"), (vec!["audit.chain"], vec!["audit.verifications"]));
    assert_eq!(io("totals"), (vec!["totals.input"], vec!["totals.output"]));

    let retry = |p: &str, i: &str| t.processor(p).unwrap().input(i).unwrap().retry.clone();
    // A decision that arrives before its request waits in the policy processor's state.
    assert_eq!(retry("policy", "policy.decisions"), None);
    assert_eq!(
        retry("settlement", "alloc.corrections").as_deref(),
        Some("alloc.corrections.retry")
    );
    assert_eq!(
        retry("settlement", "finance.settlements").as_deref(),
        Some("finance.settlements.retry")
    );
    assert_eq!(retry("totals", "totals.input").as_deref(), Some("totals.input.retry"));
    assert_eq!(retry("policy", "alloc.requests"), None);

    for (topic, schema) in [
        ("eval.submissions", "evalstream.eval.EvalSubmission"),
        ("eval.promotion-requests", "evalstream.eval.PromotionRequest"),
        ("eval.promotions", "evalstream.eval.PromotionOutcome"),
        ("alloc.requests", "evalstream.alloc.AllocationRequest"),
        ("policy.decisions", "evalstream.policy.PolicyDecision"),
        ("alloc.corrections", "evalstream.alloc.AllocationCorrection"),
        ("alloc.corrections.retry", "evalstream.alloc.AllocationCorrection"),
        ("evalstream.switches", "evalstream.control.Switch"),
        ("eval.submissions.accepted", "evalstream.eval.EvalSubmission"),
        ("alloc.state", "evalstream.alloc.AllocationStateChanged"),
        ("finance.settlements", "evalstream.finance.FinanceSettlement"),
        ("finance.settlements.retry", "evalstream.finance.FinanceSettlement"),
        ("audit.events", "evalstream.audit.AuditEvent"),
        ("totals.input", "evalstream.runtime.TotalsInput"),
        ("totals.input.retry", "evalstream.runtime.TotalsInput"),
        ("totals.output", "evalstream.runtime.TotalsUpdate"),
        ("audit.chain", "evalstream.audit.ChainRecord"),
        ("audit.verifications", "evalstream.audit.VerificationResult"),
    ] {
        assert_eq!(t.schema_for_topic(topic), Some(schema), "{topic}");
    }
    for raw in ["eval.submissions.dlq", "evalstream.totals.changelog"] {
        assert!(t.topic(raw).is_some(), "{raw}");
        assert_eq!(t.schema_for_topic(raw), None, "{raw}");
    }
    assert_eq!(t.schema_for_topic("no.such.topic"), None);
}

#[test]
fn bundled_retention_and_partitions_follow_the_policy() {
    let t = Topology::bundled().unwrap();
    for topic in t.topics() {
        // The control topic is one ordered log of operator commands (docs/operations.md).
        let partitions = if topic.name == "evalstream.control" { 1 } else { 4 };
        assert_eq!(topic.partitions, partitions, "{}", topic.name);
        assert_eq!(topic.replication_factor, 1, "{}", topic.name);
        if topic.name.starts_with("audit.") {
            assert_eq!(topic.retention_ms, Some(-1), "{}", topic.name);
        } else if topic.name.ends_with(".dlq") {
            assert_eq!(topic.retention_ms, Some(30 * 24 * 3_600_000), "{}", topic.name);
        }
        if topic.name.ends_with(".changelog") {
            assert_eq!(topic.schema, ValueSchema::Raw);
            assert_eq!(topic.cleanup_policy, CleanupPolicy::Compact);
        }
    }
}

#[test]
fn unknown_keys_are_rejected_everywhere() {
    for (edit, key) in [
        (("[defaults]", "[defaults]\npartition = 3"), "partition"),
        (("name = \"in\"\n", "name = \"in\"\nretention = 5\n"), "retention"),
        (("name = \"p\"", "name = \"p\"\ninput = []"), "input"),
        (("{ topic = \"in\", retry", "{ topic = \"in\", dql = \"x\", retry"), "dql"),
    ] {
        let doc = edited(&[edit]);
        match Topology::from_toml(&doc) {
            Err(e @ TopologyError::Parse { .. }) => {
                let text = e.to_string();
                assert!(text.contains("unknown field") && text.contains(key), "{text}");
            }
            other => panic!("{key}: expected a parse error, got {other:?}"),
        }
    }
    let e = Topology::from_toml(&format!("{BASE}\n[extra]\na = 1\n")).unwrap_err();
    assert!(e.to_string().contains("extra"), "{e}");
}

#[test]
fn missing_doc_fields_are_rejected() {
    let e = Topology::from_toml(&edited(&[("doc = \"output\"\n", "")])).unwrap_err();
    assert!(matches!(e, TopologyError::Parse { .. }) && e.to_string().contains("doc"), "{e}");
    rejects(
        &edited(&[("doc = \"output\"", "doc = \"  \"")]),
        "out",
        |v| matches!(v, Violation::MissingDoc { kind: "topic", name } if name == "out"),
    );
    rejects(&edited(&[("doc = \"the processor\"", "doc = \"\"")]), "\"p\"", |v| {
        matches!(v, Violation::MissingDoc { kind: "processor", .. })
    });
}

#[test]
fn invalid_topic_names_are_rejected() {
    for (name, fragment) in [
        ("has space", "[A-Za-z0-9._-]"),
        ("ümlaut", "[A-Za-z0-9._-]"),
        ("..", "not topic names"),
        ("__internal", "reserved"),
    ] {
        let doc = format!("{BASE}{}", topic_block(name, ""));
        rejects(&doc, name, |v| matches!(v, Violation::TopicName { topic, .. } if topic == name));
        assert!(Topology::from_toml(&doc).unwrap_err().to_string().contains(fragment));
    }
    let long = "a".repeat(250);
    rejects(
        &format!("{BASE}{}", topic_block(&long, "")),
        &long,
        |v| matches!(v, Violation::TopicName { reason, .. } if reason.contains("249")),
    );
}

#[test]
fn duplicate_and_colliding_topics_are_rejected() {
    rejects(
        &format!("{BASE}{}", topic_block("out", "")),
        "out",
        |v| matches!(v, Violation::DuplicateTopic(t) if t == "out"),
    );
    let doc = format!("{BASE}{}{}", topic_block("a.b", ""), topic_block("a_b", ""));
    rejects(
        &doc,
        "a_b",
        |v| matches!(v, Violation::TopicCollision { first, second } if first == "a.b" && second == "a_b"),
    );
}

#[test]
fn bad_topic_settings_are_rejected() {
    rejects(&format!("{BASE}{}", topic_block("zero", "partitions = 0")), "zero", |v| {
        matches!(v, Violation::Partitions { partitions: 0, .. })
    });
    for rf in [0, 40_000] {
        let doc = format!("{BASE}{}", topic_block("rf", &format!("replication_factor = {rf}")));
        rejects(
            &doc,
            "rf",
            |v| matches!(v, Violation::ReplicationFactor { replication_factor, .. } if *replication_factor == rf),
        );
    }
    for r in [0, -2] {
        let doc = format!("{BASE}{}", topic_block("ret", &format!("retention_ms = {r}")));
        rejects(
            &doc,
            "ret",
            |v| matches!(v, Violation::Retention { retention_ms, .. } if *retention_ms == r),
        );
    }
    for schema in ["NoNamespace", "ns.1bad", "ns..X", "ns.X-Y"] {
        let doc = edited(&[("schema = \"ns.Out\"", &format!("schema = \"{schema}\""))]);
        rejects(
            &doc,
            schema,
            |v| matches!(v, Violation::SchemaName { topic, .. } if topic == "out"),
        );
    }
    let e = Topology::from_toml(&edited(&[(
        "cleanup_policy = \"delete\"",
        "cleanup_policy = \"shred\"",
    )]))
    .unwrap_err();
    assert!(matches!(e, TopologyError::Parse { .. }) && e.to_string().contains("shred"), "{e}");
}

#[test]
fn processor_identity_rules() {
    rejects(
        &edited(&[(
            "name = \"p\"",
            "name = \"P_1\"\ngroup_id = \"g\"\nchangelog = \"evalstream.p.changelog\"",
        )]),
        "P_1",
        |v| matches!(v, Violation::ProcessorName { processor } if processor == "P_1"),
    );
    rejects(
        &edited(&[(
            "name = \"p\"",
            "name = \"p\"\ngroup_id = \" \"\nchangelog = \"evalstream.p.changelog\"",
        )]),
        "\"p\"",
        |v| matches!(v, Violation::GroupId { .. }),
    );
    let second = "\n[[processor]]\nname = \"q\"\ndoc = \"q\"\ngroup_id = \"evalstream.p\"\nchangelog = \"q.changelog\"\ninputs = [{ topic = \"out\" }]\n";
    let doc = format!(
        "{BASE}{second}{}{}",
        topic("q.changelog", "raw", "compact", ""),
        topic_block("out.dlq", "")
    );
    rejects(
        &doc,
        "evalstream.p",
        |v| matches!(v, Violation::SharedGroup { first, second, .. } if first == "p" && second == "q"),
    );
    let dup = "\n[[processor]]\nname = \"p\"\ndoc = \"again\"\ngroup_id = \"other\"\nchangelog = \"evalstream.p.changelog\"\ninputs = [{ topic = \"in\" }]\n";
    rejects(
        &format!("{BASE}{dup}"),
        "\"p\"",
        |v| matches!(v, Violation::DuplicateProcessor(p) if p == "p"),
    );
}

#[test]
fn inputs_must_exist_and_be_distinct() {
    rejects(
        &edited(&[("inputs = [{ topic = \"in\", retry = \"in.retry\" }]", "inputs = []")]),
        "\"p\"",
        |v| matches!(v, Violation::NoInputs { .. }),
    );
    let doc = edited(&[("retry = \"in.retry\" }]", "retry = \"in.retry\" }, { topic = \"in\" }]")]);
    rejects(
        &doc,
        "\"in\"",
        |v| matches!(v, Violation::DuplicateInput { topic, .. } if topic == "in"),
    );
}

#[test]
fn every_reference_must_name_a_declared_topic() {
    type Edits<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Edits, Role, &str); 5] = [
        (
            &[("{ topic = \"in\", retry", "{ topic = \"in\" }, { topic = \"ghost.in\", retry")],
            Role::Input,
            "ghost.in",
        ),
        (
            &[("outputs = [\"out\"]", "outputs = [\"out\", \"ghost.out\"]")],
            Role::Output,
            "ghost.out",
        ),
        (
            &[("{ topic = \"in\", retry", "{ topic = \"in\", dlq = \"ghost.dlq\", retry")],
            Role::Dlq,
            "ghost.dlq",
        ),
        (&[("retry = \"in.retry\"", "retry = \"ghost.retry\"")], Role::Retry, "ghost.retry"),
        (
            &[("name = \"p\"", "name = \"p\"\nchangelog = \"ghost.changelog\"")],
            Role::Changelog,
            "ghost.changelog",
        ),
    ];
    for (edits, role, ghost) in cases {
        rejects(
            &edited(edits),
            ghost,
            |v| matches!(v, Violation::UnknownTopic { role: r, topic, .. } if *r == role && topic == ghost),
        );
    }
}

#[test]
fn co_partitioning_covers_inputs_retry_and_changelog() {
    // A second input with another partition count.
    let doc = format!(
        "{}{}{}",
        edited(&[("retry = \"in.retry\" }]", "retry = \"in.retry\" }, { topic = \"side\" }]")]),
        topic("side", "ns.Side", "delete", "partitions = 3"),
        topic_block("side.dlq", "")
    );
    rejects(
        &doc,
        "side",
        |v| matches!(v, Violation::Partitioning { role: Role::Input, topic, partitions: 3, reference, expected: 2, .. } if topic == "side" && reference == "in"),
    );
    // The retry topic.
    let doc = edited(&[("doc = \"retries\"", "doc = \"retries\"\npartitions = 5")]);
    rejects(&doc, "in.retry", |v| {
        matches!(v, Violation::Partitioning { role: Role::Retry, partitions: 5, .. })
    });
    // The changelog.
    let doc = edited(&[("doc = \"state\"", "doc = \"state\"\npartitions = 1")]);
    rejects(&doc, "evalstream.p.changelog", |v| {
        matches!(
            v,
            Violation::Partitioning { role: Role::Changelog, partitions: 1, expected: 2, .. }
        )
    });
}

#[test]
fn role_specific_schema_and_cleanup_rules() {
    // A changelog that is not compacted.
    let doc = edited(&[("cleanup_policy = \"compact\"", "cleanup_policy = \"delete\"")]);
    rejects(&doc, "evalstream.p.changelog", |v| {
        matches!(
            v,
            Violation::Cleanup { role: Role::Changelog, expected: CleanupPolicy::Compact, .. }
        )
    });
    // A DLQ with a schema.
    let doc = edited(&[(
        "schema = \"raw\"\ncleanup_policy = \"delete\"\ndoc = \"dead letters\"",
        "schema = \"ns.In\"\ncleanup_policy = \"delete\"\ndoc = \"dead letters\"",
    )]);
    rejects(&doc, "in.dlq", |v| {
        matches!(v, Violation::Schema { role: Role::Dlq, expected: ValueSchema::Raw, .. })
    });
    // A retry topic with another schema than its input.
    let doc = edited(&[(
        "schema = \"ns.In\"\ncleanup_policy = \"delete\"\ndoc = \"retries\"",
        "schema = \"ns.Other\"\ncleanup_policy = \"delete\"\ndoc = \"retries\"",
    )]);
    rejects(
        &doc,
        "in.retry",
        |v| matches!(v, Violation::Schema { role: Role::Retry, expected: ValueSchema::Avro(s), .. } if s == "ns.In"),
    );
    // A changelog with a schema.
    let doc = edited(&[(
        "schema = \"raw\"\ncleanup_policy = \"compact\"",
        "schema = \"ns.State\"\ncleanup_policy = \"compact\"",
    )]);
    rejects(&doc, "evalstream.p.changelog", |v| {
        matches!(v, Violation::Schema { role: Role::Changelog, .. })
    });
}

#[test]
fn internal_topics_stay_in_their_role() {
    // The DLQ is also an output.
    let doc = edited(&[("outputs = [\"out\"]", "outputs = [\"out\", \"in.dlq\"]")]);
    rejects(
        &doc,
        "in.dlq",
        |v| matches!(v, Violation::RoleConflict { role: Role::Dlq, other_role: Role::Output, topic, .. } if topic == "in.dlq"),
    );
    // Two processors share one changelog.
    let second = "\n[[processor]]\nname = \"q\"\ndoc = \"q\"\nchangelog = \"evalstream.p.changelog\"\ninputs = [{ topic = \"in\", dlq = \"in.dlq\" }]\n";
    rejects(
        &format!("{BASE}{second}"),
        "evalstream.p.changelog",
        |v| matches!(v, Violation::SharedTopic { role: Role::Changelog, first, second, .. } if first == "p" && second == "q"),
    );
    // ... while sharing a DLQ for the same input is fine (headers name the origin).
    let second = "\n[[processor]]\nname = \"q\"\ndoc = \"q\"\nchangelog = \"q.changelog\"\ninputs = [{ topic = \"in\" }]\n";
    let changelog = topic("q.changelog", "raw", "compact", "");
    Topology::from_toml(&format!("{BASE}{second}{changelog}")).unwrap();
}

#[test]
fn all_violations_are_reported_at_once() {
    let doc = edited(&[
        ("partitions = 2", "partitions = 0"),
        ("outputs = [\"out\"]", "outputs = [\"nowhere\"]"),
    ]);
    let v = violations(&doc);
    assert!(v.iter().any(|v| matches!(v, Violation::Partitions { .. })));
    assert!(v.iter().any(|v| matches!(v, Violation::UnknownTopic { .. })));
    let text = Topology::from_toml(&doc).unwrap_err().to_string();
    assert!(text.starts_with("topology document: "), "{text}");
    assert!(text.contains("problem(s):\n  - "), "{text}");
}

#[test]
fn prefix_applies_to_every_name() {
    let t = Topology::from_toml(BASE).unwrap().with_prefix("t1a.").unwrap();
    assert!(t.topics().iter().all(|topic| topic.name.starts_with("t1a.")));
    let p = t.processor("p").unwrap();
    assert_eq!(p.group_id, "t1a.evalstream.p");
    assert_eq!(p.changelog, "t1a.evalstream.p.changelog");
    assert_eq!(p.inputs[0].topic, "t1a.in");
    assert_eq!(p.inputs[0].dlq, "t1a.in.dlq");
    assert_eq!(p.inputs[0].retry.as_deref(), Some("t1a.in.retry"));
    assert_eq!(p.outputs, ["t1a.out"]);
    assert_eq!(t.schema_for_topic("t1a.in"), Some("ns.In"));
    // Agrees with the runtime config's naming.
    let cfg = crate::config::RuntimeConfig { topic_prefix: "t1a.".into(), ..Default::default() };
    assert_eq!(cfg.group_for("p"), p.group_id);
    assert_eq!(cfg.topic("in"), p.inputs[0].topic);

    let e = Topology::from_toml(BASE).unwrap().with_prefix("bad prefix").unwrap_err();
    assert!(e.to_string().contains("bad prefix"), "{e}");
    let e = Topology::from_toml(BASE).unwrap().with_prefix(&"x".repeat(240)).unwrap_err();
    assert!(e.to_string().contains("249"), "{e}");
    assert_eq!(
        Topology::from_toml(BASE).unwrap().with_prefix("").unwrap(),
        Topology::from_toml(BASE).unwrap()
    );
}

#[test]
fn load_reads_files_and_names_them_in_errors() {
    let dir = std::env::temp_dir().join(format!("es-topology-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(Topology::load(&good).unwrap(), Topology::from_toml(BASE).unwrap());
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, edited(&[("partitions = 2", "partitions = -1")])).unwrap();
    let e = Topology::load(&bad).unwrap_err();
    assert!(e.to_string().contains("bad.toml"), "{e}");
    let missing = dir.join("missing.toml");
    let e = Topology::load(&missing).unwrap_err();
    assert!(matches!(e, TopologyError::Read { .. }) && e.to_string().contains("missing.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_form_is_stable() {
    let t = Topology::from_toml(BASE).unwrap();
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["topics"][0]["name"], "in");
    assert_eq!(v["topics"][0]["schema"], "ns.In");
    assert_eq!(v["topics"][1]["schema"], "raw");
    assert_eq!(v["topics"][4]["cleanup_policy"], "compact");
    assert_eq!(v["processors"][0]["inputs"][0]["retry"], "in.retry");
}

#[test]
fn every_avro_schema_of_the_bundled_topology_exists() {
    let store = crate::codec::SchemaStore::bundled().unwrap();
    for topic in Topology::bundled().unwrap().topics() {
        if let Some(name) = topic.schema.avro_name() {
            assert!(store.current(name).is_some(), "{}: schema {name} not in schemas/", topic.name);
        }
    }
}

#[test]
fn readme_diagram_is_current() {
    let readme = include_str!("../../../../topology/README.md");
    let expected = format!("```mermaid\n{}```", Topology::bundled().unwrap().render_mermaid());
    assert!(
        readme.contains(&expected),
        "topology/README.md has a stale diagram; replace the block between the mermaid markers \
         with the output of `evalstream topology show --format mermaid`"
    );
}
