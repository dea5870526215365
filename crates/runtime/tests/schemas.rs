//! The wire contract in `schemas/` stays documented, well laid out and BACKWARD compatible.
//!
//! Every check reads the directory on disk (not only the bundle), so a schema added without
//! docs, a breaking edit of a current schema, or a history file in the wrong place fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use apache_avro::Schema;
use evalstream_runtime::codec::{
    encode_single_object, example_value, Codec, SchemaStore, WireFormat, HISTORY_DIR,
};
use serde_json::Value as Json;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// (relative path with `/`, contents) of every `.avsc` on disk, sorted.
fn files_on_disk() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).expect("read schemas dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "avsc") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, fs::read_to_string(&path).expect("read schema")));
            }
        }
    }
    let mut out = Vec::new();
    walk(&schemas_dir(), &schemas_dir(), &mut out);
    out.sort();
    out
}

#[test]
fn every_schema_file_parses() {
    let files = files_on_disk();
    assert!(files.len() >= 12, "expected the whole contract, found {} files", files.len());
    for (path, text) in &files {
        Schema::parse_str(text).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    SchemaStore::load_dir(&schemas_dir()).expect("schemas/ loads as a store");
}

/// Collects "<path>: <what>" for every record, enum, fixed and field without a non-empty doc.
fn missing_docs(json: &Json, where_: &str, out: &mut Vec<String>) {
    match json {
        Json::Object(o) => {
            let kind = o.get("type").and_then(Json::as_str).unwrap_or("");
            if matches!(kind, "record" | "enum" | "fixed") {
                let name = o.get("name").and_then(Json::as_str).unwrap_or("?");
                let here = format!("{where_}{kind} {name}");
                if o.get("doc").and_then(Json::as_str).is_none_or(|d| d.trim().is_empty()) {
                    out.push(format!("{here}: no doc"));
                }
                if let Some(fields) = o.get("fields").and_then(Json::as_array) {
                    for f in fields {
                        let fname = f.get("name").and_then(Json::as_str).unwrap_or("?");
                        if f.get("doc").and_then(Json::as_str).is_none_or(|d| d.trim().is_empty()) {
                            out.push(format!("{here}.{fname}: no doc"));
                        }
                        if let Some(t) = f.get("type") {
                            missing_docs(t, &format!("{here}.{fname} → "), out);
                        }
                    }
                }
            }
            for key in ["items", "values"] {
                if let Some(inner) = o.get(key) {
                    missing_docs(inner, where_, out);
                }
            }
            if let Some(Json::Array(_) | Json::Object(_)) = o.get("type") {
                if !matches!(kind, "record" | "enum" | "fixed") {
                    missing_docs(&o["type"], where_, out);
                }
            }
        }
        Json::Array(branches) => {
            for b in branches {
                missing_docs(b, where_, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_record_enum_and_field_is_documented() {
    let mut problems = Vec::new();
    for (path, text) in files_on_disk() {
        let json: Json = serde_json::from_str(&text).expect("json");
        missing_docs(&json, &format!("{path}: "), &mut problems);
    }
    assert!(problems.is_empty(), "undocumented:\n{}", problems.join("\n"));
}

#[test]
fn the_doc_check_can_fail() {
    let json: Json = serde_json::from_str(
        r#"{"type":"record","name":"R","doc":"ok","fields":[
            {"name":"a","type":"string"},
            {"name":"b","doc":"ok","type":{"type":"enum","name":"E","symbols":["x"]}},
            {"name":"c","doc":"ok","type":["null",{"type":"record","name":"In","doc":" ","fields":[]}]}]}"#,
    )
    .unwrap();
    let mut problems = Vec::new();
    missing_docs(&json, "", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn current_files_sit_at_their_namespace_path() {
    for (path, text) in files_on_disk() {
        if path.starts_with(&format!("{HISTORY_DIR}/")) {
            continue; // The store enforces history/<full name>/v<N>.avsc.
        }
        let schema = Schema::parse_str(&text).unwrap();
        let name = schema.name().expect("named").fullname(None);
        let expected = format!("{}.avsc", name.replace('.', "/"));
        assert_eq!(path, expected, "current schema {name} must live at {expected}");
    }
}

#[test]
fn the_bundle_is_exactly_the_directory() {
    let bundled: Vec<(String, String)> = SchemaStore::bundled()
        .unwrap()
        .entries()
        .map(|e| (e.path().to_string(), e.source().to_string()))
        .collect();
    let on_disk = files_on_disk();
    let paths = |v: &[(String, String)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&bundled), paths(&on_disk), "bundled files differ from schemas/ (rebuild?)");
    assert_eq!(bundled, on_disk, "bundled contents differ from schemas/ (rebuild?)");
}

#[test]
fn history_mechanism_is_exercised() {
    let store = SchemaStore::bundled().unwrap();
    let with_history: Vec<&str> = store.names().filter(|n| store.versions(n).len() > 1).collect();
    assert!(
        with_history.contains(&"evalstream.runtime.TotalsInput"),
        "TotalsInput v1 must stay in history: {with_history:?}"
    );
}

/// Checks every current schema can read data written with each of its history versions.
fn backward_problems(store: &SchemaStore) -> Vec<String> {
    let mut problems = Vec::new();
    for name in store.names() {
        let current = store.current(name).unwrap();
        for old in store.versions(name).into_iter().filter(|v| !v.is_current()) {
            match SchemaCompatibility::can_read(old.schema(), current.schema()) {
                Ok(Compatibility::Full) => {}
                other => problems.push(format!(
                    "{name}: current (v{}) cannot fully read v{}: {other:?}",
                    current.version(),
                    old.version()
                )),
            }
        }
    }
    problems
}

#[test]
fn current_schemas_are_backward_compatible_with_their_history() {
    let store = SchemaStore::load_dir(&schemas_dir()).unwrap();
    let problems = backward_problems(&store);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_compatibility_check_can_fail() {
    // v2 adds a field WITHOUT a default: old data cannot be read.
    let v1 =
        r#"{"type":"record","name":"T","namespace":"n","fields":[{"name":"a","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"T","namespace":"n","fields":[
        {"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
    let store = SchemaStore::from_sources([("n/T.avsc", v2), ("history/n.T/v1.avsc", v1)]).unwrap();
    assert_eq!(backward_problems(&store).len(), 1);
}

/// Fields present in both records must carry the same value after resolution.
fn shared_fields_equal(old: &Value, new: &Value) -> Result<(), String> {
    let (Value::Record(old), Value::Record(new)) = (old, new) else {
        return Err("not records".into());
    };
    let new: BTreeMap<&str, &Value> = new.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for (k, v) in old {
        if let Some(n) = new.get(k.as_str()) {
            if *n != v {
                return Err(format!("field {k}: {v:?} became {n:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn data_written_with_history_versions_decodes_into_the_current_schema() {
    let codec = Codec::new(SchemaStore::load_dir(&schemas_dir()).unwrap(), None).unwrap();
    let store = codec.store();
    let mut checked = 0;
    for name in store.names() {
        let current = store.current(name).unwrap();
        for old in store.versions(name).into_iter().filter(|v| !v.is_current()) {
            let value = example_value(old.schema());
            let bytes = encode_single_object(old, &value).unwrap();
            let decoded =
                codec.decode(&bytes).unwrap_or_else(|e| panic!("{name} v{}: {e}", old.version()));
            assert_eq!(decoded.schema_name, name);
            assert_eq!(decoded.format, WireFormat::SingleObject { fingerprint: old.fingerprint() });
            assert!(decoded.value.validate(current.schema()), "{name}: not in the current shape");
            shared_fields_equal(&value, &decoded.value).unwrap();
            checked += 1;
        }
    }
    assert!(checked >= 1);

    // The concrete v1 → v2 step: payload appears with its default.
    let v1 = store.version("evalstream.runtime.TotalsInput", 1).unwrap();
    let old = Value::Record(vec![
        ("key".into(), Value::String("k".into())),
        ("amount".into(), Value::Long(7)),
    ]);
    let decoded = codec.decode(&encode_single_object(v1, &old).unwrap()).unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("key".into(), Value::String("k".into())),
            ("amount".into(), Value::Long(7)),
            ("payload".into(), Value::String(String::new())),
        ])
    );
}

/// Every named type (records, enums, fixed) reachable from `schema`, by full name.
fn named_types(schema: &Schema, out: &mut Vec<(String, String)>) {
    match schema {
        Schema::Record(r) => {
            out.push((r.name.fullname(None), schema.canonical_form()));
            for f in &r.fields {
                named_types(&f.schema, out);
            }
        }
        Schema::Enum(e) => out.push((e.name.fullname(None), schema.canonical_form())),
        Schema::Fixed(f) => out.push((f.name.fullname(None), schema.canonical_form())),
        Schema::Array(a) => named_types(&a.items, out),
        Schema::Map(m) => named_types(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| named_types(v, out)),
        _ => {}
    }
}

#[test]
fn shared_named_types_are_defined_identically_everywhere() {
    // Files are self-contained (no registry references), so a type like RiskLevel is spelled out
    // in each schema that uses it; the copies must not drift apart.
    let store = SchemaStore::bundled().unwrap();
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for name in store.names() {
        let mut types = Vec::new();
        named_types(store.schema(name).unwrap(), &mut types);
        for (type_name, canonical) in types {
            if let Some((first_file, first)) = seen.get(&type_name) {
                assert_eq!(
                    first, &canonical,
                    "{type_name} differs between {first_file} and {name}"
                );
            } else {
                seen.insert(type_name, (name.to_string(), canonical));
            }
        }
    }
}

#[test]
fn the_readme_documents_every_schema() {
    let readme = fs::read_to_string(schemas_dir().join("README.md")).expect("schemas/README.md");
    let store = SchemaStore::bundled().unwrap();
    let missing: BTreeSet<&str> = store.names().filter(|n| !readme.contains(n)).collect();
    assert!(missing.is_empty(), "schemas/README.md does not mention {missing:?}");
}
