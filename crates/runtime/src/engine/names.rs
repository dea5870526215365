//! The names of the topics one processor instance uses.

use std::collections::BTreeMap;

use crate::config::RuntimeConfig;
use crate::processor::Processor;

/// Names of the topics one processor instance uses, with the configured prefix applied.
///
/// They come from the bundled topology (`topology/topology.toml`) when it declares the
/// processor, so the runtime and `evalstream topology apply` agree on every name; a processor the
/// topology does not know (tests, experiments) gets the derived defaults: `<input>.dlq`,
/// `<input>.retry` and `<group>.changelog`.
#[derive(Debug, Clone)]
pub struct TopicNames {
    prefix: String,
    /// Logical input topics.
    pub inputs: Vec<String>,
    /// Logical input → logical DLQ topic.
    dlqs: BTreeMap<String, String>,
    /// Logical input → logical retry topic (only inputs that have one).
    retries: BTreeMap<String, String>,
    /// Changelog topic (physical; state entries and progress markers).
    pub changelog: String,
    /// Consumer group id.
    pub group: String,
    /// Topic specs of the internal topics, by logical name, when the topology declares them.
    specs: BTreeMap<String, crate::topology::TopicSpec>,
}

impl TopicNames {
    /// Derives the names for `processor` under `cfg`.
    pub fn new(cfg: &RuntimeConfig, processor: &dyn Processor) -> Self {
        let topology = crate::topology::Topology::bundled().ok();
        let declared = topology.as_ref().and_then(|t| {
            let spec = t.processor(processor.name())?;
            let same_inputs =
                spec.input_topics().map(str::to_string).collect::<Vec<_>>() == processor.inputs();
            same_inputs.then_some((t, spec))
        });
        let inputs = processor.inputs();
        let mut names = TopicNames {
            prefix: cfg.topic_prefix.clone(),
            dlqs: BTreeMap::new(),
            retries: BTreeMap::new(),
            changelog: String::new(),
            group: cfg.group_for(processor.name()),
            specs: BTreeMap::new(),
            inputs,
        };
        match declared {
            Some((topology, spec)) => {
                if cfg.group_id.is_none() {
                    names.group = format!("{}{}", cfg.topic_prefix, spec.group_id);
                    names.changelog = format!("{}{}", cfg.topic_prefix, spec.changelog);
                } else {
                    names.changelog = changelog_of(cfg, &names.group);
                }
                for i in &spec.inputs {
                    names.dlqs.insert(i.topic.clone(), i.dlq.clone());
                    if let Some(r) = &i.retry {
                        names.retries.insert(i.topic.clone(), r.clone());
                    }
                }
                for t in names.dlqs.values().chain(names.retries.values()).chain([&spec.changelog])
                {
                    if let Some(ts) = topology.topic(t) {
                        names.specs.insert(t.clone(), ts.clone());
                    }
                }
            }
            None => {
                names.changelog = changelog_of(cfg, &names.group);
                for i in &names.inputs {
                    names.dlqs.insert(i.clone(), format!("{i}.dlq"));
                    names.retries.insert(i.clone(), format!("{i}.retry"));
                }
            }
        }
        names
    }

    /// Physical name of a logical topic. (A concatenation rather than `format!`: it runs for
    /// every output.)
    pub fn physical(&self, logical: &str) -> String {
        [self.prefix.as_str(), logical].concat()
    }

    /// Logical name of a physical topic.
    pub fn logical<'a>(&self, physical: &'a str) -> &'a str {
        physical.strip_prefix(self.prefix.as_str()).unwrap_or(physical)
    }

    /// DLQ topic (physical) of a logical input.
    pub fn dlq(&self, logical: &str) -> String {
        match self.dlqs.get(logical) {
            Some(d) => self.physical(d),
            None => self.physical(&format!("{logical}.dlq")),
        }
    }

    /// Retry topic (physical) of a logical input, if it has one.
    pub fn retry(&self, logical: &str) -> Option<String> {
        self.retries.get(logical).map(|r| self.physical(r))
    }

    /// The logical input a logical retry topic belongs to.
    pub fn input_of_retry(&self, logical_retry: &str) -> Option<&str> {
        self.retries.iter().find(|(_, r)| *r == logical_retry).map(|(i, _)| i.as_str())
    }

    /// Every physical topic the consumer subscribes to: inputs and their retry topics.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inputs.iter().map(|t| self.physical(t)).collect();
        v.extend(self.inputs.iter().filter_map(|t| self.retry(t)));
        v
    }

    /// Physical internal topics with their cleanup policy and retention.
    pub(super) fn internal_topics(&self) -> Vec<(String, &'static str, Option<i64>)> {
        let spec = |logical: &str, default: &'static str| match self.specs.get(logical) {
            Some(s) => (self.physical(logical), s.cleanup_policy.as_kafka_str(), s.retention_ms),
            None => (self.physical(logical), default, None),
        };
        let logical_changelog = self.logical(&self.changelog).to_string();
        let mut v = vec![spec(&logical_changelog, "compact")];
        v.extend(self.dlqs.values().map(|d| spec(d, "delete")));
        v.extend(self.retries.values().map(|r| spec(r, "delete")));
        v
    }
}

/// The physical changelog of consumer group `group`: `<group>.changelog`, under the topic prefix
/// like every topic of the instance (a group id set with `EVALSTREAM_GROUP_ID` need not carry the
/// prefix; the changelog must, or the engine would create one topic and restore another).
fn changelog_of(cfg: &RuntimeConfig, group: &str) -> String {
    if group.starts_with(&cfg.topic_prefix) {
        format!("{group}.changelog")
    } else {
        format!("{}{group}.changelog", cfg.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProcessError;
    use crate::processor::{Context, Input};

    struct Nop;
    impl Processor for Nop {
        fn name(&self) -> &str {
            "nop"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn process(&mut self, _: &Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    #[test]
    fn topic_names_apply_prefix_and_derive_internal_topics() {
        let cfg = RuntimeConfig { topic_prefix: "t1.".into(), ..RuntimeConfig::default() };
        let n = TopicNames::new(&cfg, &Nop);
        assert_eq!(n.group, "t1.evalstream.nop");
        assert_eq!(n.changelog, "t1.evalstream.nop.changelog");
        assert_eq!(n.dlq("a"), "t1.a.dlq");
        assert_eq!(n.retry("a").as_deref(), Some("t1.a.retry"));
        assert_eq!(n.input_of_retry("b.retry"), Some("b"));
        assert_eq!(n.subscriptions(), vec!["t1.a", "t1.b", "t1.a.retry", "t1.b.retry"]);
        assert_eq!(n.logical("t1.a.retry"), "a.retry");
    }

    struct Named(&'static str, &'static str);
    impl Processor for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn inputs(&self) -> Vec<String> {
            vec![self.1.into()]
        }
        fn process(&mut self, _: &Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    #[test]
    fn names_of_a_declared_processor_come_from_the_topology() {
        let cfg = RuntimeConfig { topic_prefix: "p.".into(), ..RuntimeConfig::default() };
        let n = TopicNames::new(&cfg, &Named("totals", "totals.input"));
        assert_eq!(n.group, "p.evalstream.totals");
        assert_eq!(n.changelog, "p.evalstream.totals.changelog");
        assert_eq!(n.retry("totals.input").as_deref(), Some("p.totals.input.retry"));
        // audit-chain declares no retry topic: none is subscribed or created.
        let a = TopicNames::new(&cfg, &Named("audit-chain", "audit.events"));
        assert_eq!(a.retry("audit.events"), None);
        assert_eq!(a.subscriptions(), vec!["p.audit.events"]);
        assert!(a.internal_topics().iter().all(|(t, _, _)| !t.ends_with(".retry")));
    }

    #[test]
    fn an_explicit_group_keeps_its_changelog_under_the_prefix() {
        for group in ["g1", "p.g1"] {
            let cfg = RuntimeConfig {
                topic_prefix: "p.".into(),
                group_id: Some(group.into()),
                ..RuntimeConfig::default()
            };
            for n in [
                TopicNames::new(&cfg, &Nop),
                TopicNames::new(&cfg, &Named("totals", "totals.input")),
            ] {
                assert_eq!(n.changelog, "p.g1.changelog", "group {group}");
                // The topic the engine creates is the one it restores.
                assert_eq!(n.internal_topics()[0].0, n.changelog, "group {group}");
            }
        }
    }
}
