//! Human views of a topology: a plain-text listing for terminals and a Mermaid flowchart for
//! docs and reviews (GitHub renders ```` ```mermaid ```` blocks), both from the same model so the
//! picture cannot fall behind the file.

use std::fmt::Write as _;

use super::{Topology, ValueSchema};

/// A retention for people: `forever`, `30d`, `12h`, or milliseconds.
pub fn retention_label(retention_ms: Option<i64>) -> String {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    match retention_ms {
        None => "default".to_string(),
        Some(-1) => "forever".to_string(),
        Some(ms) if ms > 0 && ms % DAY == 0 => format!("{}d", ms / DAY),
        Some(ms) if ms > 0 && ms % HOUR == 0 => format!("{}h", ms / HOUR),
        Some(ms) => format!("{ms}ms"),
    }
}

impl Topology {
    /// A plain-text listing: each processor with its group, inputs (and their retry and DLQ
    /// topics), outputs and changelog, then a table of every topic.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        // `write!` to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(s, "processors ({})", self.processors.len());
        for p in &self.processors {
            let _ = writeln!(s, "\n  {}: {}", p.name, p.doc);
            let _ = writeln!(s, "    group      {}", p.group_id);
            for i in &p.inputs {
                let _ = write!(s, "    consumes   {}  (dlq {}", i.topic, i.dlq);
                if let Some(r) = &i.retry {
                    let _ = write!(s, ", retry {r}");
                }
                let _ = writeln!(s, ")");
            }
            for o in &p.outputs {
                let _ = writeln!(s, "    produces   {o}");
            }
            let _ = writeln!(s, "    changelog  {}", p.changelog);
        }

        let width = self.topics.iter().map(|t| t.name.len()).max().unwrap_or(0).max(5);
        let _ = writeln!(s, "\ntopics ({})\n", self.topics.len());
        let _ = writeln!(
            s,
            "  {:width$}  {:>10}  {:>3}  {:7}  {:9}  SCHEMA",
            "TOPIC", "PARTITIONS", "RF", "CLEANUP", "RETENTION"
        );
        for t in &self.topics {
            let _ = writeln!(
                s,
                "  {:width$}  {:>10}  {:>3}  {:7}  {:9}  {}",
                t.name,
                t.partitions,
                t.replication_factor,
                t.cleanup_policy.as_kafka_str(),
                retention_label(t.retention_ms),
                t.schema,
            );
        }
        s
    }

    /// A Mermaid flowchart: topics as cylinders, processors as boxes; solid edges for
    /// input → processor → output, dashed edges for DLQ, retry (both ways: the runtime writes and
    /// reads it) and changelog traffic.
    ///
    /// Node ids are positional (`t0`, `p0`, ...) rather than derived from names, because topic
    /// names may contain `.` and `-`, and `a.b` and `a_b` must not collide; labels carry names.
    pub fn render_mermaid(&self) -> String {
        let tid =
            |name: &str| self.topics.iter().position(|t| t.name == name).map(|i| format!("t{i}"));
        let mut s = String::from("flowchart LR\n");
        for (i, t) in self.topics.iter().enumerate() {
            let schema = match &t.schema {
                ValueSchema::Raw => String::new(),
                ValueSchema::Avro(name) => {
                    format!("<br/><small>{}</small>", name.rsplit('.').next().unwrap_or(name))
                }
            };
            let _ = writeln!(s, "    t{i}[(\"{}{schema}\")]", t.name);
        }
        for (i, p) in self.processors.iter().enumerate() {
            let _ = writeln!(s, "    p{i}[[\"{}\"]]", p.name);
        }
        let (mut dlq, mut retry, mut changelog) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in self.processors.iter().enumerate() {
            let pid = format!("p{i}");
            for input in &p.inputs {
                if let Some(t) = tid(&input.topic) {
                    let _ = writeln!(s, "    {t} --> {pid}");
                }
            }
            for o in &p.outputs {
                if let Some(t) = tid(o) {
                    let _ = writeln!(s, "    {pid} --> {t}");
                }
            }
            for input in &p.inputs {
                if let Some(t) = tid(&input.dlq) {
                    let _ = writeln!(s, "    {pid} -.->|dlq| {t}");
                    dlq.push(t);
                }
                if let Some(t) = input.retry.as_deref().and_then(tid) {
                    let _ = writeln!(s, "    {pid} -.->|retry| {t}");
                    let _ = writeln!(s, "    {t} -.->|retry| {pid}");
                    retry.push(t);
                }
            }
            if let Some(t) = tid(&p.changelog) {
                let _ = writeln!(s, "    {pid} -.->|changelog| {t}");
                changelog.push(t);
            }
        }
        s.push_str("    classDef processor fill:#e8f0fe,stroke:#3367d6\n");
        s.push_str("    classDef dlq fill:#fde8e8,stroke:#c5221f\n");
        s.push_str("    classDef retry fill:#fef7e0,stroke:#e37400\n");
        s.push_str("    classDef changelog fill:#f1f3f4,stroke:#5f6368\n");
        let processors: Vec<String> = (0..self.processors.len()).map(|i| format!("p{i}")).collect();
        for (class, ids) in
            [("processor", processors), ("dlq", dlq), ("retry", retry), ("changelog", changelog)]
        {
            // A shared DLQ appears once per user; keep the first mention, in file order.
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<String> = ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
            if !ids.is_empty() {
                let _ = writeln!(s, "    class {} {class}", ids.join(","));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    /// Reads node labels and edges back out of the Mermaid text, so the test checks the drawing
    /// against the model instead of against a copy of the renderer's format strings.
    /// `(from label, edge kind, to label)`; kind is `solid` or the dashed edge's label.
    type Edge = (String, String, String);

    fn parse(mermaid: &str) -> (HashMap<String, String>, BTreeSet<Edge>) {
        let mut labels = HashMap::new();
        let mut edges = BTreeSet::new();
        for line in mermaid.lines().map(str::trim) {
            if let Some((id, rest)) = line.split_once("[(\"").or_else(|| line.split_once("[[\"")) {
                let label = rest.split(['"', '<']).next().unwrap_or_default();
                labels.insert(id.to_string(), label.to_string());
            } else if let Some((from, to)) = line.split_once(" --> ") {
                edges.insert((from.to_string(), "solid".to_string(), to.to_string()));
            } else if let Some((from, rest)) = line.split_once(" -.->|") {
                let (kind, to) = rest.split_once("| ").expect("labelled dashed edge");
                edges.insert((from.to_string(), kind.to_string(), to.to_string()));
            }
        }
        let named = edges
            .into_iter()
            .map(|(a, k, b)| (labels[&a].clone(), k, labels[&b].clone()))
            .collect();
        (labels, named)
    }

    #[test]
    fn mermaid_has_every_processor_topic_and_edge() {
        let t = Topology::bundled().unwrap();
        let m = t.render_mermaid();
        assert!(m.starts_with("flowchart LR\n"));
        let (labels, edges) = parse(&m);
        let names: BTreeSet<&str> = labels.values().map(String::as_str).collect();
        for p in t.processors() {
            assert!(names.contains(p.name.as_str()), "processor {} missing", p.name);
        }
        for topic in t.topics() {
            assert!(names.contains(topic.name.as_str()), "topic {} missing", topic.name);
        }
        let mut expected = BTreeSet::new();
        let e = |a: &str, k: &str, b: &str| (a.to_string(), k.to_string(), b.to_string());
        for p in t.processors() {
            for i in &p.inputs {
                expected.insert(e(&i.topic, "solid", &p.name));
                expected.insert(e(&p.name, "dlq", &i.dlq));
                if let Some(r) = &i.retry {
                    expected.insert(e(&p.name, "retry", r));
                    expected.insert(e(r, "retry", &p.name));
                }
            }
            for o in &p.outputs {
                expected.insert(e(&p.name, "solid", o));
            }
            expected.insert(e(&p.name, "changelog", &p.changelog));
        }
        assert_eq!(edges, expected);
        // Spot-check one known edge of each kind against the contract names.
        assert!(edges.contains(&e("policy.decisions", "solid", "policy")));
        assert!(edges.contains(&e("settlement", "retry", "finance.settlements.retry")));
        assert!(edges.contains(&e("settlement", "dlq", "finance.settlements.dlq")));
        assert!(edges.contains(&e("audit-chain", "solid", "audit.chain")));
    }

    #[test]
    fn dashed_edges_are_dashed_and_solid_ones_are_not() {
        let m = Topology::bundled().unwrap().render_mermaid();
        for line in m.lines().filter(|l| l.contains("-.->")) {
            assert!(["|dlq|", "|retry|", "|changelog|"].iter().any(|k| line.contains(k)), "{line}");
        }
        for line in m.lines().filter(|l| l.contains(" --> ")) {
            assert!(!line.contains('|'), "{line}");
        }
    }

    #[test]
    fn text_lists_processors_and_topics() {
        let t = Topology::bundled().unwrap();
        let text = t.render_text();
        for p in t.processors() {
            assert!(text.contains(&format!("  {}: ", p.name)), "{}", p.name);
            assert!(text.contains(&p.group_id));
        }
        for topic in t.topics() {
            assert!(text.contains(&topic.name), "{}", topic.name);
        }
        assert!(text.contains("retry finance.settlements.retry"));
        assert!(text.contains("forever"));
        assert!(text.contains("30d"));
    }

    #[test]
    fn retention_labels() {
        assert_eq!(retention_label(None), "default");
        assert_eq!(retention_label(Some(-1)), "forever");
        assert_eq!(retention_label(Some(2_592_000_000)), "30d");
        assert_eq!(retention_label(Some(7_200_000)), "2h");
        assert_eq!(retention_label(Some(1500)), "1500ms");
    }
}
