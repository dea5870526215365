//! One registration point per processor: its name, inputs and outputs, and how to build it from
//! the runtime configuration. The binary's list of processors is a slice of these.
//!
//! ```text
//!  processors/<name>: pub const REGISTRATION: Registration = { name, inputs, outputs, build }
//!  cli: PROCESSORS: &[Registration] ─ `evalstream run <name>` ─► instantiate(setup)
//!        │ build(setup) → Box<dyn Processor>; name/inputs/outputs must equal the registration
//!        │ check_topology(topology.toml): same inputs and outputs, in the same order
//!        ▼
//!       engine::spawn(Box<dyn Processor>, ..)
//! ```
//!
//! Why the order check: the engine takes a processor's DLQ, retry and changelog names from
//! `topology/topology.toml` only when the inputs agree *in order*; otherwise it silently derives
//! different names. A registration that disagrees with the topology is refused at start-up and
//! by a unit test instead.
//!
//! The engine stays generic over `P: Processor`; `Box<dyn Processor>` implements [`Processor`] by
//! delegation, one indirect call per record (see `evalstream bench --suite dispatch` for what
//! that costs next to the record's own work).

use std::error::Error;

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::metrics::Metrics;
use crate::readiness::Checks;
use crate::topology::Topology;

use super::Processor;

/// Why building a processor failed (configuration, signer, key files, ...), shown to the
/// operator by `evalstream run`.
pub type BuildError = Box<dyn Error + Send + Sync + 'static>;

/// How a processor is built from its configuration.
pub type BuildFn = fn(&Setup<'_>) -> Result<Box<dyn Processor>, BuildError>;

/// A processor as the binary knows it.
#[derive(Clone, Copy)]
pub struct Registration {
    /// `evalstream run <name>`; equals [`Processor::name`] and the topology's processor name.
    pub name: &'static str,
    /// Input topics (logical names), in the topology's order.
    pub inputs: &'static [&'static str],
    /// Output topics (logical names), in the topology's order.
    pub outputs: &'static [&'static str],
    /// Builds the processor. Runs before the engine starts; may read the environment and the
    /// `[processor]` table, register metrics and dependency checks, and fail with a message for
    /// the operator.
    pub build: BuildFn,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// What a build function gets.
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    /// The validated runtime configuration; processor settings are in `config.processor`.
    pub config: &'a RuntimeConfig,
    /// The codec the engine will use (e.g. to produce a start-up event).
    pub codec: &'a Codec,
    /// The processor's metrics registry, for processor-specific counters.
    pub metrics: &'a Metrics,
    /// Where the processor registers the checks of its own dependencies (its signer, the feed it
    /// waits on) for `/ready`: [`Checks::gating`] for what it cannot work without,
    /// [`Checks::reported`] for outages it rides out (docs/operations.md#readiness).
    pub checks: &'a Checks,
}

impl Setup<'_> {
    /// `[processor] <key>` as a positive integer, or `default` when absent.
    pub fn setting_u64(&self, key: &str, default: u64) -> Result<u64, BuildError> {
        match self.config.processor.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(i)) if *i > 0 => Ok(*i as u64),
            Some(other) => {
                Err(format!("processor.{key} must be a positive integer, got {other}").into())
            }
        }
    }

    /// `[processor] <key>` as a string, `None` when absent.
    pub fn setting_str(&self, key: &str) -> Result<Option<&str>, BuildError> {
        match self.config.processor.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("processor.{key} must be a string, got {other}").into()),
        }
    }
}

impl Registration {
    /// Input topics as owned strings (what [`Processor::inputs`] returns).
    pub fn input_topics(&self) -> Vec<String> {
        self.inputs.iter().map(|s| s.to_string()).collect()
    }

    /// Output topics as owned strings (what [`Processor::outputs`] returns).
    pub fn output_topics(&self) -> Vec<String> {
        self.outputs.iter().map(|s| s.to_string()).collect()
    }

    /// Builds the processor and checks that it describes itself as registered.
    pub fn instantiate(&self, setup: &Setup<'_>) -> Result<Box<dyn Processor>, BuildError> {
        let processor = (self.build)(setup)?;
        let (name, inputs, outputs) =
            (processor.name().to_string(), processor.inputs(), processor.outputs());
        if name != self.name || inputs != self.input_topics() || outputs != self.output_topics() {
            return Err(format!(
                "processor {name:?} (inputs {inputs:?}, outputs {outputs:?}) differs from its \
                 registration {self:?}"
            )
            .into());
        }
        Ok(processor)
    }

    /// Whether `topology` declares this processor with the same inputs and outputs in the same
    /// order; the error says what differs.
    pub fn check_topology(&self, topology: &Topology) -> Result<(), String> {
        let spec = topology
            .processor(self.name)
            .ok_or_else(|| format!("processor {:?} is not in the topology", self.name))?;
        let inputs: Vec<&str> = spec.input_topics().collect();
        let outputs: Vec<&str> = spec.outputs.iter().map(String::as_str).collect();
        if inputs != self.inputs {
            return Err(format!(
                "processor {:?}: registered inputs {:?}, topology inputs {inputs:?} (order matters)",
                self.name, self.inputs
            ));
        }
        if outputs != self.outputs {
            return Err(format!(
                "processor {:?}: registered outputs {:?}, topology outputs {outputs:?} (order matters)",
                self.name, self.outputs
            ));
        }
        Ok(())
    }
}

/// The registration called `name` in `registrations`.
pub fn find<'r>(registrations: &'r [Registration], name: &str) -> Option<&'r Registration> {
    registrations.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProcessError;
    use crate::processor::{Context, Input};

    struct Echo(&'static str);

    impl Processor for Echo {
        fn name(&self) -> &str {
            "totals"
        }
        fn inputs(&self) -> Vec<String> {
            vec![self.0.to_string()]
        }
        fn outputs(&self) -> Vec<String> {
            vec!["totals.output".into()]
        }
        fn process(&mut self, _: &Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    const GOOD: Registration = Registration {
        name: "totals",
        inputs: &["totals.input"],
        outputs: &["totals.output"],
        build: |_| Ok(Box::new(Echo("totals.input"))),
    };

    fn setup_parts() -> (RuntimeConfig, Codec, std::sync::Arc<Metrics>, Checks) {
        let codec = Codec::new(crate::codec::SchemaStore::bundled().unwrap(), None).expect("codec");
        (RuntimeConfig::from_toml("").unwrap(), codec, Metrics::new("totals"), Checks::new())
    }

    #[test]
    fn instantiate_checks_the_processor_against_its_registration() {
        let (config, codec, metrics, checks) = setup_parts();
        let setup = Setup { config: &config, codec: &codec, metrics: &metrics, checks: &checks };
        assert_eq!(GOOD.instantiate(&setup).unwrap().name(), "totals");
        let lying = Registration { build: |_| Ok(Box::new(Echo("other.input"))), ..GOOD };
        let e = lying.instantiate(&setup).err().expect("mismatch refused").to_string();
        assert!(e.contains("other.input"), "{e}");
    }

    #[test]
    fn topology_order_and_content_are_checked() {
        let topology = Topology::bundled().unwrap();
        GOOD.check_topology(&topology).unwrap();
        let policy_swapped = Registration {
            name: "policy",
            inputs: &["eval.promotion-requests", "policy.decisions", "alloc.requests"],
            outputs: &["eval.promotions", "alloc.state", "audit.events"],
            ..GOOD
        };
        let e = policy_swapped.check_topology(&topology).unwrap_err();
        assert!(e.contains("order matters"), "{e}");
        let unknown = Registration { name: "nope", ..GOOD };
        assert!(unknown.check_topology(&topology).is_err());
        let outputs = Registration { outputs: &["totals.output", "audit.events"], ..GOOD };
        assert!(outputs.check_topology(&topology).unwrap_err().contains("outputs"));
        assert_eq!(find(&[GOOD], "totals").map(|r| r.name), Some("totals"));
    }

    #[test]
    fn settings_are_typed() {
        let (mut config, codec, metrics, checks) = setup_parts();
        config.processor.insert("n".into(), toml::Value::Integer(5));
        config.processor.insert("s".into(), toml::Value::String("x".into()));
        config.processor.insert("bad".into(), toml::Value::Integer(-1));
        let setup = Setup { config: &config, codec: &codec, metrics: &metrics, checks: &checks };
        assert_eq!(setup.setting_u64("n", 1).unwrap(), 5);
        assert_eq!(setup.setting_u64("absent", 7).unwrap(), 7);
        assert!(setup.setting_u64("bad", 1).is_err());
        assert!(setup.setting_u64("s", 1).is_err());
        assert_eq!(setup.setting_str("s").unwrap(), Some("x"));
        assert_eq!(setup.setting_str("absent").unwrap(), None);
        assert!(setup.setting_str("n").is_err());
    }
}
