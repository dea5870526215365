//! Our single-object fingerprints against the Avro reference implementations.
//!
//! `test/vectors/schema_fingerprints.json` holds the Parsing Canonical Form and CRC-64-AVRO
//! fingerprint of every schema in `schemas/` (current and history) and of edge-case schemas, as
//! computed by Java Avro (`SchemaNormalization`) and fastavro, which agree on every entry, plus
//! records a spec-conformant Python producer writes. `tools/schema_fingerprints.sh` regenerates
//! it (and `--check`, run by CI, fails when it is stale). A mismatch here means other languages'
//! producers and consumers cannot exchange single-object records with us.

use std::collections::BTreeSet;

use apache_avro::Schema;
use evalstream_runtime::codec::{
    json_schema_fingerprint, json_to_avro, schema_fingerprint, Codec, SchemaStore, WireFormat,
};
use serde_json::Value as Json;

fn vectors() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/vectors/schema_fingerprints.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).expect("vectors file is JSON")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn str_of<'a>(v: &'a Json, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn every_schema_matches_java_avro_and_fastavro() {
    let vectors = vectors();
    let store = SchemaStore::bundled().unwrap();
    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for v in vectors["schemas"].as_array().expect("schemas array") {
        let path = str_of(v, "path").strip_prefix("schemas/").expect("path under schemas/");
        covered.insert(path.to_string());
        let Some(stored) = store.entries().find(|e| e.path() == path) else {
            failures.push(format!("{path}: in the vectors but not in the bundled schemas"));
            continue;
        };
        let ours = hex(&stored.fingerprint().to_le_bytes());
        if ours != str_of(v, "fingerprint")
            || stored.canonical_form() != str_of(v, "canonical_form")
        {
            failures.push(format!(
                "{path}: ours {ours} {}\n   spec {} {}",
                stored.canonical_form(),
                str_of(v, "fingerprint"),
                str_of(v, "canonical_form")
            ));
        }
    }
    for e in store.entries() {
        if !covered.contains(e.path()) {
            failures.push(format!(
                "{}: no vector; run tools/schema_fingerprints.sh and commit the file",
                e.path()
            ));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn edge_cases_match_java_avro_and_fastavro() {
    let vectors = vectors();
    let mut failures = Vec::new();
    for v in vectors["cases"].as_array().expect("cases array") {
        let id = str_of(v, "id");
        let schema = match Schema::parse(&v["schema"]) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{id}: apache-avro cannot parse it: {e}"));
                continue;
            }
        };
        let ours = hex(&schema_fingerprint(&schema).unwrap().to_le_bytes());
        // And straight from the JSON, the way the store computes it.
        let from_json = json_schema_fingerprint(&v["schema"]).unwrap();
        assert_eq!(hex(&from_json.to_le_bytes()), str_of(v, "fingerprint"), "{id}");
        if ours != str_of(v, "fingerprint") {
            failures.push(format!("{id}: ours {ours}, spec {}", str_of(v, "fingerprint")));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn records_of_a_spec_conformant_producer_decode() {
    let vectors = vectors();
    let store = SchemaStore::bundled().unwrap();
    let codec = Codec::new(store.clone(), None).unwrap();
    for v in vectors["single_object_records"].as_array().expect("records array") {
        let path = str_of(v, "path").strip_prefix("schemas/").expect("path under schemas/");
        let writer = store.entries().find(|e| e.path() == path).expect("schema of the record");
        let current = store.current(writer.full_name()).expect("current version");
        let bytes = unhex(str_of(v, "bytes"));
        let decoded = codec
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{path}: a fastavro record does not decode: {e}"));
        assert_eq!(decoded.schema_name, writer.full_name(), "{path}");
        let expected =
            json_to_avro(writer.schema(), &v["value"]).unwrap().resolve(current.schema()).unwrap();
        assert_eq!(decoded.value, expected, "{path}");
        let mut header_fp = [0u8; 8];
        header_fp.copy_from_slice(&bytes[2..10]);
        assert_eq!(
            decoded.format,
            WireFormat::SingleObject { fingerprint: u64::from_le_bytes(header_fp) }
        );
    }
}
