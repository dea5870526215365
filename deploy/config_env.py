"""The environment variables evalstream reads, collected from the source that reads them.

Shared by deploy/k8s/check.py and deploy/compose/check.py: a deployment that sets a variable no
code reads (a typo, a renamed setting) is an error, not a silently ignored setting.
"""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Read by libraries rather than by our code: the AWS SDK's own settings.
LIBRARY_PREFIXES = ("AWS_",)
# EVALSTREAM_KAFKA_<NAME> passes librdkafka property <name> through (config.rs).
PASSTHROUGH_PREFIX = "EVALSTREAM_KAFKA_"


def known_variables():
    names = set()
    config = (ROOT / "crates/runtime/src/config.rs").read_text()
    names |= set(re.findall(r'"((?:EVALSTREAM|KAFKA)_[A-Z_]+[A-Z]|MODE)"', config))
    signer = (ROOT / "crates/audit/src/signer/config.rs").read_text()
    names |= set(re.findall(r'pub const ENV_[A-Z_]+: &str = "([A-Z_]+)"', signer))
    # Every Rust source of the product (not a list of files that goes stale when one is renamed).
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")) + sorted(ROOT.glob("processors/*/src/**/*.rs")) + sorted(ROOT.glob("cli/src/**/*.rs")):
        names |= set(re.findall(r'"((?:EVALSTREAM|SCHEMA|SIGNERS)_[A-Z_]+)"', path.read_text()))
    names |= set(re.findall(r'env = "([A-Z_]+)"', (ROOT / "cli/src/main.rs").read_text()))
    names.discard("EVALSTREAM_KAFKA_")
    return names


def unknown(variables):
    """The names in `variables` that evalstream does not read."""
    known = known_variables()
    return sorted(
        v for v in variables
        if v not in known and not v.startswith(LIBRARY_PREFIXES) and not v.startswith(PASSTHROUGH_PREFIX)
    )


def topology_processors():
    topology = tomllib.loads((ROOT / "topology/topology.toml").read_text())
    return [p["name"] for p in topology["processor"]]
