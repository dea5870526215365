//! The processors this binary runs: one [`Registration`] each, in one slice. Adding a processor
//! is one line here plus its entry in `topology/topology.toml`; a unit test holds the two in
//! agreement (names, inputs and outputs, in order).

use evalstream_runtime::processor::Registration;

/// Every processor `evalstream run` knows.
pub const PROCESSORS: &[Registration] = &[
    evalstream_totals::REGISTRATION,
    evalstream_audit_chain::REGISTRATION,
    evalstream_audit_verifier::REGISTRATION,
    evalstream_submissions::REGISTRATION,
    evalstream_policy::REGISTRATION,
    evalstream_settlement::REGISTRATION,
];

/// The registration of `name`, or an error listing the known names.
pub fn find(name: &str) -> anyhow::Result<&'static Registration> {
    evalstream_runtime::processor::find(PROCESSORS, name).ok_or_else(|| {
        let known: Vec<&str> = PROCESSORS.iter().map(|r| r.name).collect();
        anyhow::anyhow!("unknown processor {name:?}; known: {}", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use evalstream_runtime::topology::Topology;

    use super::*;

    #[test]
    fn every_processor_matches_the_topology_in_order() {
        let topology = Topology::bundled().expect("bundled topology");
        for r in PROCESSORS {
            r.check_topology(&topology).unwrap_or_else(|e| panic!("{e}"));
        }
        let names: BTreeSet<&str> = PROCESSORS.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), PROCESSORS.len(), "a processor is registered twice");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        assert_eq!(find("totals").unwrap().name, "totals");
        let e = find("nope").unwrap_err().to_string();
        assert!(e.contains("totals, audit-chain, audit-verifier"), "{e}");
    }
}
