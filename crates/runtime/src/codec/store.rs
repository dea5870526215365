//! The schema store: the repository's `schemas/` directory as a lookup table.
//!
//! ```text
//!   schemas/<namespace path>/<Name>.avsc           current version of <namespace>.<Name>
//!   schemas/history/<namespace>.<Name>/v<N>.avsc    previous version N (N = 1, 2, ...)
//! ```
//!
//! Without a schema registry the store *is* the registry: single-object data names its writer
//! schema by fingerprint, which may be any version (current or history), and decodes into the
//! current version of the same name. The current version's number is one more than the newest
//! history version, so adding a version is: move the current file to `history/` as `v<N>`, then
//! edit the current file. `tests/schemas.rs` enforces BACKWARD compatibility across versions.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

use super::error::CodecError;
use super::fingerprint::{crc64_avro, legacy_schema_fingerprint, parsing_canonical_form};
use super::value::Names;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_schemas.rs"));
}

/// Directory (relative to the schemas root) that holds previous versions.
pub const HISTORY_DIR: &str = "history";

/// One version of one schema, with everything the codec needs precomputed.
#[derive(Debug)]
pub struct StoredSchema {
    full_name: String,
    version: u32,
    current: bool,
    path: String,
    source: String,
    compact_json: String,
    schema: Schema,
    canonical_form: String,
    fingerprint: u64,
    legacy_fingerprint: u64,
    pub(crate) names: Names,
}

impl StoredSchema {
    /// Full name, `namespace.Name`: the key producers encode with and `Decoded::schema_name`.
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// Version number: history files carry theirs in the file name, the current version is one
    /// more than the newest history version (1 when there is no history).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// True for the current version, the one producers write and consumers read into.
    pub fn is_current(&self) -> bool {
        self.current
    }

    /// Path relative to the schemas directory, with `/` separators (where it came from).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's text as written, docs included.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file's JSON without insignificant whitespace: what is registered with a schema
    /// registry (docs and defaults kept, which the registry's compatibility checks need).
    pub fn compact_json(&self) -> &str {
        &self.compact_json
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The Avro specification's Parsing Canonical Form: what the fingerprint is computed over.
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }

    /// CRC-64-AVRO fingerprint of the Parsing Canonical Form: the single-object header's schema
    /// id, the same value Java Avro and fastavro compute. What the codec writes.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The fingerprint evalstream wrote for this schema before it followed the specification
    /// (see [`crate::codec::legacy_schema_fingerprint`]); equal to [`StoredSchema::fingerprint`]
    /// for schemas without logical types. Decoding accepts it; nothing writes it.
    pub fn legacy_fingerprint(&self) -> u64 {
        self.legacy_fingerprint
    }
}

/// Every schema version the codec knows, by full name and by fingerprint. Cheap to clone
/// (shared), immutable once built.
#[derive(Debug, Clone)]
pub struct SchemaStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Sorted by path.
    entries: Vec<Arc<StoredSchema>>,
    /// Full name → index of the current version.
    current: BTreeMap<String, usize>,
    /// Fingerprint → index (the current version wins when a history file has the same
    /// canonical form, e.g. a version that only changed docs). Legacy fingerprints are in it too,
    /// below every spec fingerprint, so that records written before the fix still decode.
    by_fingerprint: HashMap<u64, usize>,
}

fn schema_error(path: &str, message: impl Into<String>) -> CodecError {
    CodecError::Schema { path: path.to_string(), message: message.into() }
}

/// `history/<full name>/v<N>.avsc` → (full name, N); anything else under `history/` is an error.
fn history_location(path: &str) -> Result<Option<(&str, u32)>, CodecError> {
    let mut parts = path.split('/');
    if parts.next() != Some(HISTORY_DIR) {
        return Ok(None);
    }
    let (dir, file, extra) = (parts.next(), parts.next(), parts.next());
    let bad = || schema_error(path, "history files must be history/<namespace>.<Name>/v<N>.avsc");
    let (Some(dir), Some(file), None) = (dir, file, extra) else { return Err(bad()) };
    let n = file
        .strip_prefix('v')
        .and_then(|f| f.strip_suffix(".avsc"))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(bad)?;
    Ok(Some((dir, n)))
}

impl SchemaStore {
    /// The schemas embedded at compile time from the repository's `schemas/` directory
    /// (current and history versions), so that every binary can decode every version it was
    /// built with, with no file system or registry at run time. Parsed once per process.
    pub fn bundled() -> Result<SchemaStore, CodecError> {
        Self::bundled_ref().cloned()
    }

    /// [`SchemaStore::bundled`] without a copy: the process-wide parsed store.
    pub(crate) fn bundled_ref() -> Result<&'static SchemaStore, CodecError> {
        static BUNDLED: OnceLock<Result<SchemaStore, CodecError>> = OnceLock::new();
        BUNDLED
            .get_or_init(|| SchemaStore::from_sources(bundled::BUNDLED.iter().copied()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Loads every `*.avsc` below `dir` (same layout as the repository's `schemas/`), for tools
    /// and tests that work with schemas other than the bundled ones.
    pub fn load_dir(dir: &Path) -> Result<SchemaStore, CodecError> {
        fn walk(
            root: &Path,
            dir: &Path,
            out: &mut Vec<(String, String)>,
        ) -> Result<(), CodecError> {
            let io = |p: &Path, e: std::io::Error| CodecError::Io {
                path: p.display().to_string(),
                message: e.to_string(),
            };
            for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
                let path = entry.map_err(|e| io(dir, e))?.path();
                if path.is_dir() {
                    walk(root, &path, out)?;
                } else if path.extension().is_some_and(|e| e == "avsc") {
                    let relative = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    let text = fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                    out.push((relative, text));
                }
            }
            Ok(())
        }
        let mut sources = Vec::new();
        walk(dir, dir, &mut sources)?;
        SchemaStore::from_sources(sources)
    }

    /// Builds a store from (path relative to the schemas root, file text) pairs. Paths under
    /// `history/` are previous versions and must be `history/<full name>/v<N>.avsc`; every
    /// other path is a current version, and each full name may have only one. Every schema
    /// must be named (record, enum or fixed) because the name is how producers select it.
    pub fn from_sources<P, S>(
        sources: impl IntoIterator<Item = (P, S)>,
    ) -> Result<SchemaStore, CodecError>
    where
        P: AsRef<str>,
        S: AsRef<str>,
    {
        let mut parsed: Vec<(String, String, Schema, Json, Option<u32>)> = Vec::new();
        for (path, text) in sources {
            let (path, text) = (path.as_ref().to_string(), text.as_ref().to_string());
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| schema_error(&path, format!("not JSON: {e}")))?;
            let schema = Schema::parse(&json).map_err(|e| schema_error(&path, e.to_string()))?;
            let full_name = match schema.name() {
                Some(name) => name.fullname(None),
                None => return Err(schema_error(&path, "top-level schema must be a named type")),
            };
            let version = match history_location(&path)? {
                Some((dir, n)) if dir == full_name => Some(n),
                Some((dir, _)) => {
                    return Err(schema_error(
                        &path,
                        format!("history directory {dir} does not match schema name {full_name}"),
                    ))
                }
                None => None,
            };
            parsed.push((path, text, schema, json, version));
        }
        parsed.sort_by(|a, b| a.0.cmp(&b.0));

        // Current version numbers follow the newest history version.
        let mut newest: HashMap<String, u32> = HashMap::new();
        for (_, _, schema, _, version) in &parsed {
            if let (Some(name), Some(v)) = (schema.name(), version) {
                let slot = newest.entry(name.fullname(None)).or_insert(0);
                *slot = (*slot).max(*v);
            }
        }

        let mut entries = Vec::with_capacity(parsed.len());
        let mut current = BTreeMap::new();
        for (path, source, schema, json, version) in parsed {
            let full_name = schema.name().map(|n| n.fullname(None)).unwrap_or_default();
            let is_current = version.is_none();
            if is_current {
                if let Some(&other) = current.get(&full_name) {
                    let other: &Arc<StoredSchema> = &entries[other];
                    return Err(schema_error(
                        &path,
                        format!("{full_name} is already defined by {}", other.path),
                    ));
                }
                current.insert(full_name.clone(), entries.len());
            }
            let version =
                version.unwrap_or_else(|| newest.get(&full_name).copied().unwrap_or(0) + 1);
            // The canonical form comes from the file's JSON, as the specification defines it.
            let canonical_form =
                parsing_canonical_form(&json).map_err(|e| schema_error(&path, e.to_string()))?;
            entries.push(Arc::new(StoredSchema {
                names: Names::of(&schema),
                fingerprint: crc64_avro(canonical_form.as_bytes()),
                legacy_fingerprint: legacy_schema_fingerprint(&schema),
                compact_json: json.to_string(),
                full_name,
                version,
                current: is_current,
                path,
                source,
                schema,
                canonical_form,
            }));
        }
        for name in newest.keys() {
            if !current.contains_key(name) {
                return Err(schema_error(
                    &format!("{HISTORY_DIR}/{name}"),
                    format!("history versions of {name} but no current version"),
                ));
            }
        }

        let mut by_fingerprint = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            // Current versions first so that they win a tie with an equivalent history version.
            if e.current {
                by_fingerprint.insert(e.fingerprint, i);
            }
        }
        for (i, e) in entries.iter().enumerate() {
            by_fingerprint.entry(e.fingerprint).or_insert(i);
        }
        // Records written before the codec followed the specification (current versions first).
        for current_first in [true, false] {
            for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.current == current_first) {
                by_fingerprint.entry(e.legacy_fingerprint).or_insert(i);
            }
        }
        Ok(SchemaStore { inner: Arc::new(Inner { entries, current, by_fingerprint }) })
    }

    /// The CURRENT version of a schema by full name: what producers write and what consumers
    /// decode into.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.current(name).map(StoredSchema::schema)
    }

    /// The current version of a schema with its metadata (fingerprint, version, path).
    pub fn current(&self, name: &str) -> Option<&StoredSchema> {
        self.inner.current.get(name).map(|&i| &*self.inner.entries[i])
    }

    /// `value` checked strictly against the current version of `name` and shaped the way the
    /// Avro writer needs it (union branches chosen, enum indexes set, defaults filled): what
    /// [`super::Codec::encode`] writes, before framing. Errors name the field path.
    pub fn conform(&self, name: &str, value: &Value) -> Result<Value, CodecError> {
        let stored =
            self.current(name).ok_or_else(|| CodecError::UnknownSchema(name.to_string()))?;
        super::value::conform(stored.schema(), &stored.names, value)
            .map_err(|m| m.into_error(stored.full_name()))
    }

    /// A specific version of a schema (current or history), e.g. to produce old-format data in
    /// compatibility tests.
    pub fn version(&self, name: &str, version: u32) -> Option<&StoredSchema> {
        self.inner
            .entries
            .iter()
            .find(|e| e.full_name == name && e.version == version)
            .map(|e| &**e)
    }

    /// All versions of a schema, oldest first.
    pub fn versions(&self, name: &str) -> Vec<&StoredSchema> {
        let mut v: Vec<&StoredSchema> =
            self.inner.entries.iter().filter(|e| e.full_name == name).map(|e| &**e).collect();
        v.sort_by_key(|e| e.version);
        v
    }

    /// The schema version whose single-object fingerprint this is (any version; the
    /// specification's fingerprint or the legacy one evalstream wrote before).
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&StoredSchema> {
        self.inner.by_fingerprint.get(&fingerprint).map(|&i| &*self.inner.entries[i])
    }

    /// Full names of all schemas, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.current.keys().map(String::as_str)
    }

    /// Every stored file (current and history), sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = &StoredSchema> + '_ {
        self.inner.entries.iter().map(|e| &**e)
    }

    pub(crate) fn current_arc(&self, name: &str) -> Option<&Arc<StoredSchema>> {
        self.inner.current.get(name).map(|&i| &self.inner.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"T","namespace":"n","fields":[
        {"name":"a","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"T","namespace":"n","fields":[
        {"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;

    #[test]
    fn versions_and_fingerprints() {
        let store =
            SchemaStore::from_sources([("n/T.avsc", V2), ("history/n.T/v1.avsc", V1)]).unwrap();
        let cur = store.current("n.T").unwrap();
        assert_eq!(cur.version(), 2);
        assert!(cur.is_current());
        let old = store.version("n.T", 1).unwrap();
        assert!(!old.is_current());
        assert_eq!(store.by_fingerprint(old.fingerprint()).unwrap().path(), "history/n.T/v1.avsc");
        assert_eq!(store.by_fingerprint(cur.fingerprint()).unwrap().path(), "n/T.avsc");
        assert_eq!(store.versions("n.T").len(), 2);
        assert_eq!(store.names().collect::<Vec<_>>(), ["n.T"]);
        assert!(store.schema("n.T").is_some());
        assert!(store.schema("n.U").is_none());
        assert!(cur.compact_json().starts_with("{\""));
    }

    #[test]
    fn layout_errors_are_typed() {
        let err = |r: Result<SchemaStore, CodecError>| match r {
            Err(CodecError::Schema { message, .. }) => message,
            other => panic!("expected schema error, got {other:?}"),
        };
        assert!(err(SchemaStore::from_sources([("a.avsc", V1), ("b.avsc", V2)]))
            .contains("already defined"));
        assert!(err(SchemaStore::from_sources([("a.avsc", V2), ("history/n.X/v1.avsc", V1)]))
            .contains("does not match"));
        assert!(err(SchemaStore::from_sources([("a.avsc", V2), ("history/n.T/one.avsc", V1)]))
            .contains("history files"));
        assert!(err(SchemaStore::from_sources([("history/n.T/v1.avsc", V1)]))
            .contains("no current version"));
        assert!(err(SchemaStore::from_sources([("a.avsc", "{")])).contains("not JSON"));
        assert!(err(SchemaStore::from_sources([("a.avsc", r#""int""#)])).contains("named"));
        assert!(!err(SchemaStore::from_sources([("a.avsc", r#"{"type":"record"}"#)])).is_empty());
    }

    /// The fingerprints evalstream wrote before it followed the Avro specification (header bytes
    /// in wire order, as `xxd` shows them), for every schema whose fingerprint changed: records
    /// carrying them are in topics and archives, so they must keep decoding. Pinned here, not
    /// recomputed, so that an apache-avro upgrade that changes `canonical_form()` is noticed.
    /// Schemas changed since are named by their history file (the version those records have).
    const LEGACY: [(&str, &str); 9] = [
        ("evalstream/alloc/AllocationRequest.avsc", "150485d40522cffb"),
        ("history/evalstream.alloc.AllocationStateChanged/v1.avsc", "4c3923bc73bd7bca"),
        ("evalstream/audit/AuditEvent.avsc", "62bcd1ea788a716d"),
        ("evalstream/audit/ChainRecord.avsc", "c57bf644751d910c"),
        ("history/evalstream.eval.EvalSubmission/v1.avsc", "1dd27bc0c52401b9"),
        ("history/evalstream.eval.PromotionOutcome/v1.avsc", "07600bf42b54b764"),
        ("evalstream/eval/PromotionRequest.avsc", "1e147c8ec1b484a2"),
        ("evalstream/finance/FinanceSettlement.avsc", "135faf68eb89b0af"),
        ("evalstream/policy/PolicyDecision.avsc", "573a7db455de581b"),
    ];

    #[test]
    fn legacy_fingerprints_still_name_their_schema() {
        let store = SchemaStore::bundled().unwrap();
        for (path, wire) in LEGACY {
            let bytes: Vec<u8> = (0..16)
                .step_by(2)
                .map(|i| u8::from_str_radix(&wire[i..i + 2], 16).unwrap())
                .collect();
            let legacy = u64::from_le_bytes(bytes.try_into().unwrap());
            let stored = store.by_fingerprint(legacy).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(stored.path(), path);
            assert_eq!(stored.legacy_fingerprint(), legacy, "{path}");
            assert_ne!(stored.fingerprint(), legacy, "{path}: the spec's differs");
        }
        // Without logical types both are the same number.
        let totals = store.current("evalstream.runtime.TotalsInput").unwrap();
        assert_eq!(totals.fingerprint(), totals.legacy_fingerprint());
    }

    #[test]
    fn bundled_store_has_the_contract() {
        let store = SchemaStore::bundled().unwrap();
        for name in [
            "evalstream.eval.EvalSubmission",
            "evalstream.eval.PromotionRequest",
            "evalstream.eval.PromotionOutcome",
            "evalstream.alloc.AllocationRequest",
            "evalstream.alloc.AllocationStateChanged",
            "evalstream.policy.PolicyDecision",
            "evalstream.finance.FinanceSettlement",
            "evalstream.audit.AuditEvent",
            "evalstream.runtime.ProgressMarker",
            "evalstream.runtime.TotalsInput",
            "evalstream.runtime.TotalsUpdate",
        ] {
            assert!(store.schema(name).is_some(), "{name} missing from the bundle");
        }
        assert_eq!(store.current("evalstream.runtime.TotalsInput").unwrap().version(), 2);
    }
}
