//! Confluent Schema Registry access through `schema_registry_converter`'s blocking API.
//!
//! Why blocking: the engine runs processors on a dedicated OS thread, and a registry call
//! happens only on a cache miss (first use of a schema id or of a subject), so a synchronous
//! call is the simplest correct thing. reqwest's blocking client must not run on a thread that
//! is inside a tokio runtime (it would panic in debug builds); [`off_async_runtime`] moves the
//! call to a short-lived scoped thread in that case, so the codec is safe from any context.
//!
//! Caches: subject+fingerprint → id (encode), id → schema (decode, immutable by the registry's
//! contract), and a small, time-limited negative cache of unknown ids so that a burst of
//! garbage records does not become a burst of HTTP requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use schema_registry_converter::blocking::schema_registry::{
    get_all_subjects, get_schema_by_id_and_type, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use super::error::{CodecError, DecodeError};
use super::fingerprint::json_schema_fingerprint;
use super::store::StoredSchema;
use super::value::root_name;

/// Registry request timeout: long enough for a loaded registry, short enough that a dead one
/// shows up in `/ready` and the logs quickly instead of stalling a transaction.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unknown schema id is remembered before asking the registry again.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Bound on remembered unknown ids (the ids come from untrusted record bytes).
const NEGATIVE_CAPACITY: usize = 1024;

/// A writer schema fetched from the registry.
#[derive(Debug)]
pub(crate) struct RegistrySchema {
    pub(crate) name: String,
    pub(crate) schema: Schema,
    pub(crate) fingerprint: u64,
}

/// Schema registry client with caches; shared by all clones of a codec.
pub(crate) struct SchemaRegistry {
    url: String,
    settings: SrSettings,
    ids: RwLock<HashMap<(String, u64), u32>>,
    schemas: RwLock<HashMap<u32, Arc<RegistrySchema>>>,
    unknown: Mutex<HashMap<u32, Instant>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Runs `f` on the current thread, or on a scoped helper thread when the current thread is
/// inside a tokio runtime (where reqwest's blocking client must not be used). `None` if `f`
/// panicked (reported as an error by callers, never propagated as a panic).
fn off_async_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Some(f());
    }
    std::thread::scope(|s| s.spawn(f).join().ok())
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

impl SchemaRegistry {
    /// Validates the URL and builds the HTTP client. `basic_auth` is (user, password), e.g. a
    /// Confluent Cloud API key and secret.
    pub(crate) fn new(
        url: String,
        basic_auth: Option<(String, Option<String>)>,
    ) -> Result<SchemaRegistry, CodecError> {
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CodecError::Config(format!(
                "schema registry URL {url:?} must start with http:// or https://"
            )));
        }
        let settings = off_async_runtime(|| {
            let mut builder = SrSettings::new_builder(url.clone());
            builder.set_timeout(TIMEOUT);
            if let Some((user, password)) = &basic_auth {
                builder.set_basic_authorization(user, password.as_deref());
            }
            builder.build()
        })
        .ok_or_else(|| CodecError::Config("building the registry client panicked".into()))?
        .map_err(|e| CodecError::Config(format!("schema registry client: {}", describe(&e))))?;
        Ok(SchemaRegistry {
            url,
            settings,
            ids: RwLock::default(),
            schemas: RwLock::default(),
            unknown: Mutex::default(),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The registry id of `stored` under `subject`, registering it if needed (what Confluent
    /// serializers do with `auto.register.schemas=true`; registering an existing schema is
    /// idempotent and returns its id). The registry enforces its compatibility level here.
    pub(crate) fn id_for(&self, subject: &str, stored: &StoredSchema) -> Result<u32, CodecError> {
        let key = (subject.to_string(), stored.fingerprint());
        if let Some(id) = self.ids.read().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(id);
        }
        let supplied = SuppliedSchema::new(
            Some(stored.full_name().to_string()),
            SchemaType::Avro,
            stored.compact_json().to_string(),
        );
        let registered =
            off_async_runtime(|| post_schema(&self.settings, subject.to_string(), supplied))
                .ok_or_else(|| CodecError::Registry {
                    subject: subject.to_string(),
                    message: "registry call panicked".into(),
                    transient: false,
                })?
                .map_err(|e| CodecError::Registry {
                    subject: subject.to_string(),
                    message: describe(&e),
                    transient: e.retriable,
                })?;
        let id = registered.id;
        if let Ok(mut ids) = self.ids.write() {
            ids.insert(key, id);
        }
        // The id now provably names this schema: decoding our own output needs no fetch.
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.entry(id).or_insert_with(|| {
                Arc::new(RegistrySchema {
                    name: stored.full_name().to_string(),
                    schema: stored.schema().clone(),
                    fingerprint: stored.fingerprint(),
                })
            });
        }
        Ok(id)
    }

    /// The writer schema for a schema id, from the cache or `GET /schemas/ids/{id}`.
    pub(crate) fn schema(&self, schema_id: u32) -> Result<Arc<RegistrySchema>, DecodeError> {
        if let Some(s) = self.schemas.read().ok().and_then(|m| m.get(&schema_id).cloned()) {
            return Ok(s);
        }
        if let Ok(unknown) = self.unknown.lock() {
            if unknown.get(&schema_id).is_some_and(|at| at.elapsed() < NEGATIVE_TTL) {
                return Err(DecodeError::UnknownSchemaId { schema_id });
            }
        }
        let fetched = off_async_runtime(|| {
            get_schema_by_id_and_type(schema_id, &self.settings, SchemaType::Avro)
        })
        .ok_or_else(|| DecodeError::Registry {
            schema_id,
            message: "registry call panicked".into(),
        })?;
        let registered = match fetched {
            Ok(r) => r,
            Err(e) if e.retriable => {
                return Err(DecodeError::RegistryUnavailable { schema_id, message: describe(&e) })
            }
            // The converter reports HTTP status in the message; 404 (error code 40403) is the
            // registry's "schema not found".
            Err(e) if e.error.contains("404") => {
                if let Ok(mut unknown) = self.unknown.lock() {
                    if unknown.len() >= NEGATIVE_CAPACITY {
                        unknown.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
                        if unknown.len() >= NEGATIVE_CAPACITY {
                            unknown.clear();
                        }
                    }
                    unknown.insert(schema_id, Instant::now());
                }
                return Err(DecodeError::UnknownSchemaId { schema_id });
            }
            Err(e) => return Err(DecodeError::Registry { schema_id, message: describe(&e) }),
        };
        if !registered.references.is_empty() {
            return Err(DecodeError::Registry {
                schema_id,
                message: "schemas with references are not supported".into(),
            });
        }
        let invalid = |e: String| DecodeError::Registry {
            schema_id,
            message: format!("registry returned an invalid Avro schema: {e}"),
        };
        let json: serde_json::Value =
            serde_json::from_str(&registered.schema).map_err(|e| invalid(e.to_string()))?;
        let schema = Schema::parse(&json).map_err(|e| invalid(e.to_string()))?;
        let fingerprint = json_schema_fingerprint(&json).map_err(|e| invalid(e.to_string()))?;
        let entry = Arc::new(RegistrySchema { name: root_name(&schema), fingerprint, schema });
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.insert(schema_id, entry.clone());
        }
        Ok(entry)
    }

    /// `GET /subjects`: cheap reachability check for readiness probes.
    pub(crate) fn check(&self) -> Result<(), CodecError> {
        off_async_runtime(|| get_all_subjects(&self.settings))
            .ok_or_else(|| CodecError::Config("registry call panicked".into()))?
            .map(|_| ())
            .map_err(|e| CodecError::Registry {
                subject: String::new(),
                message: describe(&e),
                transient: e.retriable,
            })
    }
}
