#!/usr/bin/env python3
"""Generate or check test/vectors/schema_fingerprints.json from two independent Avro libraries.

The wire contract's single-object header carries the CRC-64-AVRO fingerprint of a schema's
Parsing Canonical Form (Avro specification, "Schema Fingerprints" and "Parsing Canonical Form for
Schemas"). Our Rust codec implements both itself; this script pins what the reference
implementations compute, for every schema in schemas/ (current and history) and for the edge
cases in tools/fingerprints/cases.json:

- Java Avro (org.apache.avro:avro, SchemaNormalization.toParsingForm / parsingFingerprint64), run
  as tools/fingerprints/SchemaFingerprints.java on the class path given with --classpath;
- fastavro (fastavro.schema.to_parsing_canonical_form / fingerprint(..., "CRC-64-AVRO")).

It also writes a few records in Avro single-object encoding as a spec-conformant producer would
(C3 01, fastavro's fingerprint, fastavro's schemaless_writer body), which the Rust test decodes
with our codec: a Python producer's records must not be dead-lettered as unknown.

Both must agree on every schema, or the script fails without writing anything. The Rust test
crates/runtime/tests/schema_fingerprints.rs then checks our codec against the file.

    tools/schema_fingerprints.sh            # installs the tools, regenerates the file
    tools/schema_fingerprints.sh --check    # CI: fails when the committed file is not current

Fingerprints are written as the 8 header bytes in wire order (little-endian), in hex: what
`xxd` shows after the C3 01 marker of a record, and what fastavro's fingerprint() returns.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fastavro
from fastavro import schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CASES = ROOT / "tools" / "fingerprints" / "cases.json"
JAVA_TOOL = ROOT / "tools" / "fingerprints" / "SchemaFingerprints.java"
VECTORS = ROOT / "test" / "vectors" / "schema_fingerprints.json"
AVRO_VERSION = "1.12.2"  # keep in step with tools/fingerprints/pom.xml
SINGLE_OBJECT_MARKER = b"\xc3\x01"

# Records a Python producer writes (schema file, value): one with a logical type (the case the
# old fingerprint broke), one without, and one in an older schema version.
RECORDS = [
    (
        "schemas/evalstream/audit/AuditEvent.avsc",
        {
            "event_id": "py-1",
            "type": "audit.test",
            "actor": "fastavro",
            "subject": "model-7",
            "occurred_at": 1714557600000,
            "payload": '{"k":"v"}',
        },
    ),
    ("schemas/evalstream/runtime/TotalsInput.avsc", {"key": "k1", "amount": -42, "payload": "x"}),
    ("schemas/history/evalstream.runtime.TotalsInput/v1.avsc", {"key": "k2", "amount": 7}),
]


def java_reference(java: str, classpath: str, files: list[Path]) -> dict[str, tuple[str, str]]:
    """path -> (fingerprint hex, canonical form) from Java Avro."""
    out = subprocess.run(
        [java, "-cp", classpath, str(JAVA_TOOL), *map(str, files)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = {}
    for line in out.splitlines():
        path, fp, form = line.split("\t", 2)
        result[path] = (fp, form)
    return result


def fastavro_reference(schema) -> tuple[str, str]:
    form = to_parsing_canonical_form(parse_schema(schema, _write_hint=False))
    return fingerprint(form, "CRC-64-AVRO"), form


def single_object(schema, value) -> str:
    """Avro single-object encoding of value, as hex: marker, fingerprint, schemaless body."""
    parsed = parse_schema(schema, _write_hint=False)
    header = SINGLE_OBJECT_MARKER + bytes.fromhex(fastavro_reference(schema)[0])
    body = io.BytesIO()
    schemaless_writer(body, parsed, value)
    return (header + body.getvalue()).hex()


def build(java: str, classpath: str) -> dict:
    entries = []  # (kind, id, schema json, path of the file Java reads)
    for path in sorted(SCHEMAS.rglob("*.avsc")):
        rel = path.relative_to(ROOT).as_posix()
        entries.append(("schema", rel, json.loads(path.read_text(encoding="utf-8")), path))
    with tempfile.TemporaryDirectory() as tmp:
        for case in json.loads(CASES.read_text(encoding="utf-8")):
            path = Path(tmp) / f"{case['id']}.avsc"
            path.write_text(json.dumps(case["schema"]), encoding="utf-8")
            entries.append(("case", case, case["schema"], path))
        java = java_reference(java, classpath, [e[3] for e in entries])

        disagreements = []
        schemas, cases = [], []
        for kind, ident, schema, path in entries:
            java_fp, java_form = java[str(path)]
            py_fp, py_form = fastavro_reference(schema)
            label = ident if kind == "schema" else f"case {ident['id']}"
            if (java_fp, java_form) != (py_fp, py_form):
                disagreements.append(
                    f"{label}:\n  java     {java_fp} {java_form}\n  fastavro {py_fp} {py_form}"
                )
            if kind == "schema":
                name = schema.get("name", "")
                if "." not in name and schema.get("namespace"):
                    name = f"{schema['namespace']}.{name}"
                schemas.append(
                    {"path": ident, "name": name, "canonical_form": java_form, "fingerprint": java_fp}
                )
            else:
                cases.append(
                    {
                        "id": ident["id"],
                        "about": ident["about"],
                        "schema": schema,
                        "canonical_form": java_form,
                        "fingerprint": java_fp,
                    }
                )
    if disagreements:
        sys.exit("Java Avro and fastavro disagree:\n" + "\n".join(disagreements))
    return {
        "about": (
            "Avro Parsing Canonical Form and CRC-64-AVRO fingerprint (the 8 bytes of the "
            "single-object header, little-endian, in hex) of every schema in schemas/ and of the "
            "edge cases in tools/fingerprints/cases.json, as computed by Java Avro and by "
            "fastavro, which agree on every entry. Generated by tools/schema_fingerprints.sh; "
            "do not edit by hand."
        ),
        "generated_by": {
            "java": f"org.apache.avro:avro:{AVRO_VERSION} SchemaNormalization",
            "python": f"fastavro {fastavro.__version__}",
        },
        "schemas": schemas,
        "cases": cases,
        "single_object_records": [
            {
                "path": path,
                "value": value,
                "bytes": single_object(json.loads((ROOT / path).read_text(encoding="utf-8")), value),
            }
            for path, value in RECORDS
        ],
    }


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--java", default="java", help="java binary (11 or newer)")
    ap.add_argument("--classpath", required=True, help="class path holding Java Avro")
    ap.add_argument("--check", action="store_true", help="compare with the committed file")
    args = ap.parse_args()
    text = render(build(args.java, args.classpath))
    if args.check:
        current = VECTORS.read_text(encoding="utf-8") if VECTORS.exists() else ""
        if current != text:
            print(
                f"{VECTORS.relative_to(ROOT)} is not current: run tools/schema_fingerprints.sh "
                "and commit the result",
                file=sys.stderr,
            )
            return 1
        count = text.count('"fingerprint"')
        print(f"{VECTORS.relative_to(ROOT)} is current ({count} fingerprints; Java Avro and fastavro agree)")
        return 0
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    tmp = VECTORS.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, VECTORS)
    print(f"wrote {VECTORS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
