#!/usr/bin/env bash
# Regenerate (or with --check, verify) test/vectors/schema_fingerprints.json: the Avro Parsing
# Canonical Form and CRC-64-AVRO fingerprint of every schema, computed by Java Avro and fastavro
# (see tools/schema_fingerprints.py for what and why).
#
#   tools/schema_fingerprints.sh           regenerate the file after a schema change; commit it
#   tools/schema_fingerprints.sh --check   exit 1 when the committed file is not current (CI)
#
# Installs what it needs once per machine under EVALSTREAM_CACHE (default ~/.cache/evalstream):
# fastavro in a venv (PyPI), Java Avro's class path through Maven (Maven Central). Needs python3,
# Java 11+ and mvn.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOG_PREFIX=fingerprints
# shellcheck source=deploy/local/common.sh
source "$ROOT/deploy/local/common.sh"

FASTAVRO_VERSION="1.13.1"
VENV="$CACHE/fastavro-$FASTAVRO_VERSION"
POM="$ROOT/tools/fingerprints/pom.xml"
CLASSPATH_FILE="$CACHE/schema-fingerprints-$(sha256sum "$POM" | cut -c1-12).classpath"

if [[ ! -f "$VENV/.installed" ]]; then
    log "creating $VENV with fastavro==$FASTAVRO_VERSION from PyPI"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "fastavro==$FASTAVRO_VERSION"
    touch "$VENV/.installed"
fi
if [[ ! -s "$CLASSPATH_FILE" ]]; then
    log "resolving Java Avro from Maven Central"
    es_mvn -f "$POM" "$DEPENDENCY_PLUGIN:build-classpath" -Dmdep.outputFile="$CLASSPATH_FILE.tmp"
    mv "$CLASSPATH_FILE.tmp" "$CLASSPATH_FILE"
fi
java=$(es_find_java 11)
exec "$VENV/bin/python" "$ROOT/tools/schema_fingerprints.py" \
    --java "$java" --classpath "$(cat "$CLASSPATH_FILE")" "$@"
