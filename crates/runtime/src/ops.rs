//! The operator surface: `/health`, `/ready` and `/metrics` over plain HTTP/1.1.
//!
//! ```text
//!   engine thread ── set_kafka / set_assignment / set_restoring / set_dependency ──► Health
//!                                                                                    │
//!   kubelet ── GET /health (liveness) ─┐                                             │
//!   kubelet ── GET /ready (readiness) ─┼──► OpsServer (tokio, hyper 1) ◄─────────────┘
//!   Prometheus ── GET /metrics ────────┘            └──────────────────────► Metrics::encode
//! ```
//!
//! # Liveness and readiness, and why they differ
//!
//! `/health` answers "should Kubernetes restart this process?". It fails (503) only when the
//! processing loop has stopped for good ([`Health::set_stopped`]): a broker outage or a dependency
//! outage is not fixed by a restart, and restarting would only throw away restored state and
//! trigger a rebalance for the rest of the group.
//!
//! `/ready` answers "is this instance doing its job right now?". It is 200 only when
//! Kafka is reachable, the instance has received its assignment, no state restore is in progress,
//! every *gating* dependency is ok, and the loop has not stopped. Anything else is 503 with
//! `reasons` saying why.
//!
//! *Gating and reported dependencies.* A dependency without which the instance cannot process its
//! inputs at all (the schema registry, when one is configured) gates readiness. A dependency whose
//! outage the instance rides out while still doing its job is only *reported*: its check is in the
//! body and in `warnings`, but `ready` stays true. The audit chain keeps hashing and leaves
//! checkpoints `pending_signature` while KMS is down; the policy gate keeps failing closed while
//! SentinelNet is silent; settlement keeps its allocations in `pending_finance` while Finance is
//! silent. Making those instances not-ready would change nothing Kubernetes can act on (no traffic
//! is routed to them; restarting is liveness' business, and would not help), but it would stall a
//! StatefulSet rollout — including the one that carries the runbook's fix, such as setting
//! `SIGNING_PROXY_URL` — and page twice for one cause. Their own alerts page instead
//! (deploy/prometheus/alerts.yml). `docs/operations.md#readiness` has the table.
//!
//! *Zero partitions is ready.* A group with more members than partitions leaves some members with
//! nothing to do. They are healthy standbys that take over on the next rebalance; if they reported
//! not-ready, a Deployment with more replicas than partitions could never finish a rolling update
//! and "pods not ready" alerts would fire forever. So an instance that *has joined* and got zero
//! partitions is ready with `assigned_partitions: 0` and a `note`; an instance that has *not yet
//! joined* (no assignment seen) is not ready.
//!
//! *Mode does not change readiness.* `read-only` is a deliberate operator action that pauses
//! consumption and loses nothing; the instance is doing exactly what it was told. The mode is
//! reported in both bodies so that the runbook's `curl … | jq .mode` shows it.
//!
//! The processors receive no traffic through a Kubernetes Service, so readiness only gates
//! rollouts and alerts; that is what the choices above optimise for.
//!
//! # The same answer on `/metrics`
//!
//! A [`Health`] made with [`Health::with_metrics`] mirrors its verdict into `evalstream_ready`
//! (0/1) and `evalstream_mode{mode}` on every change, computed by the same function that answers
//! `/ready` and under the same lock, so the alert on the gauge (deploy/prometheus/alerts.yml) and
//! the kubelet's probe can never disagree.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::RuntimeError;
use crate::metrics::{self, Metrics};

/// The mode an instance starts in: consuming and producing.
pub const MODE_NORMAL: &str = "normal";

/// The runbook's safe mode: consumption paused, lag grows, nothing is dropped.
pub const MODE_READ_ONLY: &str = "read-only";

/// A slow or idle client may hold a connection at most this long before sending its request head,
/// so a handful of stuck sockets cannot starve the probes.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for in-flight requests before dropping them; scrapes and probes are
/// milliseconds, so this only bounds a pathological client.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The result of the last check of one component.
#[derive(Debug, Clone)]
struct Check {
    ok: bool,
    detail: String,
    /// Whether a failure makes the instance not ready (else it is only reported).
    gates: bool,
}

impl Check {
    fn to_json(&self) -> Value {
        json!({ "ok": self.ok, "detail": self.detail, "affects_readiness": self.gates })
    }
}

#[derive(Debug)]
struct State {
    kafka: Check,
    /// `None` until the first assignment: the instance has not joined its group yet.
    assigned_partitions: Option<usize>,
    restoring: bool,
    dependencies: BTreeMap<String, Check>,
    mode: String,
    /// Where the mode came from (`{"from": "config"}` or the control command), see
    /// [`crate::control`].
    mode_source: Value,
    stopped: Option<String>,
}

/// Health and readiness of one processor instance.
///
/// Shared as `Arc<Health>`: the engine (on its own OS thread) reports what it observes, the ops
/// server renders it. Setters are cheap and never block on I/O, so the engine may call them on
/// every poll if that is convenient.
#[derive(Debug)]
pub struct Health {
    processor: String,
    started: Instant,
    state: Mutex<State>,
    /// Where `evalstream_ready` / `evalstream_mode` are mirrored, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

impl Health {
    /// Creates the health of a processor that has not yet reached Kafka nor joined its group: not
    /// ready, but alive.
    pub fn new(processor: &str) -> Arc<Self> {
        Arc::new(Self::build(processor, None))
    }

    /// As [`Health::new`], mirroring readiness and mode into `metrics` (`evalstream_ready`,
    /// `evalstream_mode`) from now on: what `evalstream run` uses.
    pub fn with_metrics(processor: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        let health = Self::build(processor, Some(metrics));
        health.update(|_| {});
        Arc::new(health)
    }

    fn build(processor: &str, metrics: Option<Arc<Metrics>>) -> Self {
        Health {
            processor: processor.to_owned(),
            started: Instant::now(),
            state: Mutex::new(State {
                kafka: Check { ok: false, detail: "not connected yet".to_owned(), gates: true },
                assigned_partitions: None,
                restoring: false,
                dependencies: BTreeMap::new(),
                mode: MODE_NORMAL.to_owned(),
                mode_source: json!({ "from": "config" }),
                stopped: None,
            }),
            metrics,
        }
    }

    /// Records whether the brokers are reachable (e.g. from a metadata call or the client's error
    /// callback). `detail` is shown to the operator: a broker list, or the error.
    pub fn set_kafka(&self, ok: bool, detail: &str) {
        self.update(|s| s.kafka = Check { ok, detail: detail.to_owned(), gates: true });
    }

    /// Records the number of partitions assigned after a rebalance. Call it when an assignment
    /// completes (including an empty one); the first call is what marks the instance as joined.
    pub fn set_assignment(&self, partitions: usize) {
        self.update(|s| s.assigned_partitions = Some(partitions));
    }

    /// Records that the instance left its group (revoked or lost everything) and has not been
    /// given a new assignment yet, so that `/ready` says "not joined" instead of a stale count.
    pub fn clear_assignment(&self) {
        self.update(|s| s.assigned_partitions = None);
    }

    /// Marks a state-store restore as running or finished. Records are not processed while
    /// restoring, so the instance is not ready.
    pub fn set_restoring(&self, restoring: bool) {
        self.update(|s| s.restoring = restoring);
    }

    /// Registers or updates a *gating* dependency (one without which the instance cannot process
    /// its inputs, e.g. the schema registry): while it is not ok, the instance is not ready.
    /// Once registered, a dependency counts until the process exits, so register every dependency
    /// at start-up, even before its first check ([`crate::readiness`] does).
    pub fn set_dependency(&self, name: &str, ok: bool, detail: &str) {
        self.update(|s| {
            s.dependencies
                .insert(name.to_owned(), Check { ok, detail: detail.to_owned(), gates: true });
        });
    }

    /// Registers or updates a *reported* dependency (signer/KMS, policy feed, Finance): shown in
    /// `dependencies` and, while not ok, in `warnings`, but readiness does not depend on it (see
    /// the module docs for why).
    pub fn report_dependency(&self, name: &str, ok: bool, detail: &str) {
        self.update(|s| {
            s.dependencies
                .insert(name.to_owned(), Check { ok, detail: detail.to_owned(), gates: false });
        });
    }

    /// Records the operating mode ([`MODE_NORMAL`], [`MODE_READ_ONLY`], …). Reported, not judged:
    /// see the module docs for why the mode does not affect readiness.
    pub fn set_mode(&self, mode: &str) {
        self.update(|s| s.mode = mode.to_owned());
    }

    /// Records the operating mode and where it came from (the configuration or an operator's
    /// command on the control topic, with reason and actor): shown as `mode_source`.
    pub fn set_mode_from(&self, mode: &str, source: Value) {
        self.update(|s| {
            s.mode = mode.to_owned();
            s.mode_source = source;
        });
    }

    /// Records that the processing loop has stopped for good (a `Stop` disposition, or the end of
    /// a graceful shutdown). From then on `/health` fails, so Kubernetes restarts the pod, and
    /// `/ready` fails with the reason. The first reason wins: it is the cause, later ones are
    /// consequences.
    pub fn set_stopped(&self, reason: &str) {
        self.update(|s| {
            if s.stopped.is_none() {
                s.stopped = Some(reason.to_owned());
            }
        });
    }

    /// Applies `change` and, while still holding the lock, mirrors the resulting verdict into the
    /// metrics: two changes racing cannot leave the gauge showing the older one.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        change(&mut s);
        if let Some(m) = &self.metrics {
            m.set_ready(not_ready_reasons(&s).is_empty());
            m.set_mode(&s.mode);
        }
    }

    /// Whether the instance is ready, and the `/ready` body explaining it:
    ///
    /// ```json
    /// { "processor": "totals", "ready": false, "reasons": ["state restore in progress"],
    ///   "mode": "normal",
    ///   "kafka": {"ok": true, "detail": "127.0.0.1:9092"},
    ///   "state": {"ok": false, "restoring": true},
    ///   "assignment": {"ok": true, "assigned_partitions": 2},
    ///   "dependencies": {"schema_registry": {"ok": true, "detail": "…", "affects_readiness": true},
    ///                    "signer": {"ok": false, "detail": "…", "affects_readiness": false}},
    ///   "warnings": ["signer not ok: …"] }
    /// ```
    ///
    /// Dependencies are nested under `dependencies` rather than spread at the top level, so that a
    /// dependency can never shadow `kafka`, `state` or `mode`.
    pub fn ready_report(&self) -> (bool, Value) {
        let s = self.lock();
        let reasons = not_ready_reasons(&s);
        let mut assignment = Map::new();
        match s.assigned_partitions {
            None => {
                assignment.insert("ok".into(), Value::Bool(false));
                assignment.insert("assigned_partitions".into(), Value::Null);
            }
            Some(n) => {
                assignment.insert("ok".into(), Value::Bool(true));
                assignment.insert("assigned_partitions".into(), json!(n));
                if n == 0 {
                    assignment.insert(
                        "note".into(),
                        json!(
                            "joined with zero partitions (more group members than partitions); \
                             ready and idle until a rebalance assigns work"
                        ),
                    );
                }
            }
        }
        let mut dependencies = Map::new();
        for (name, check) in &s.dependencies {
            dependencies.insert(name.clone(), check.to_json());
        }

        let ready = reasons.is_empty();
        let body = json!({
            "processor": self.processor,
            "ready": ready,
            "reasons": reasons,
            "warnings": warnings(&s),
            "mode": s.mode,
            "mode_source": s.mode_source,
            "kafka": { "ok": s.kafka.ok, "detail": s.kafka.detail },
            "state": { "ok": !s.restoring, "restoring": s.restoring },
            "assignment": assignment,
            "dependencies": dependencies,
        });
        (ready, body)
    }

    /// Whether the process is alive in the liveness sense, and the `/health` body:
    ///
    /// ```json
    /// { "status": "ok", "processor": "totals", "version": "0.1.0",
    ///   "uptime_seconds": 12.5, "mode": "normal" }
    /// ```
    ///
    /// When stopped, `status` is `"stopped"` and `stopped_reason` says why.
    pub fn health_report(&self) -> (bool, Value) {
        let s = self.lock();
        let alive = s.stopped.is_none();
        let mut body = json!({
            "status": if alive { "ok" } else { "stopped" },
            "processor": self.processor,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "mode": s.mode,
            "mode_source": s.mode_source,
        });
        if let Some(why) = &s.stopped {
            body["stopped_reason"] = json!(why);
        }
        (alive, body)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each setter is a single assignment, so the state is consistent even after a panic
        // elsewhere; keep answering probes rather than cascading the panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the instance is not ready, one line per failing condition; empty when it is ready. The one
/// definition of readiness: `/ready` and `evalstream_ready` both come from it.
fn not_ready_reasons(s: &State) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(why) = &s.stopped {
        reasons.push(format!("processing stopped: {why}"));
    }
    if !s.kafka.ok {
        reasons.push(format!("kafka unreachable: {}", s.kafka.detail));
    }
    if s.assigned_partitions.is_none() {
        reasons.push("no partition assignment yet (not joined to the group)".to_owned());
    }
    if s.restoring {
        reasons.push("state restore in progress".to_owned());
    }
    for (name, check) in &s.dependencies {
        if check.gates && !check.ok {
            reasons.push(format!("{name} unavailable: {}", check.detail));
        }
    }
    reasons
}

/// The reported (non-gating) dependencies that are not ok, one line each.
fn warnings(s: &State) -> Vec<String> {
    s.dependencies
        .iter()
        .filter(|(_, c)| !c.gates && !c.ok)
        .map(|(name, c)| format!("{name} not ok: {}", c.detail))
        .collect()
}

/// A bound but not yet serving ops server. Binding is separate from serving so that start-up fails
/// early on a taken port, and so tests can bind port 0 and learn the real address.
#[derive(Debug)]
pub struct OpsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl OpsServer {
    /// Binds the listening socket.
    pub async fn bind(addr: SocketAddr) -> Result<Self, RuntimeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| RuntimeError::Ops(format!("binding {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| RuntimeError::Ops(format!("local address of {addr}: {e}")))?;
        Ok(OpsServer { listener, local_addr })
    }

    /// The address actually bound (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish (bounded by a few
    /// seconds) and returns. Errors on individual connections are logged, never fatal: a broken
    /// scrape must not take the processor down.
    pub async fn run(
        self,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RuntimeError> {
        tracing::info!(addr = %self.local_addr, "ops server listening (/health, /ready, /metrics)");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Typically EMFILE: back off instead of spinning on the error.
                            tracing::warn!(error = %e, "ops server accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let metrics = Arc::clone(&metrics);
                    let health = Arc::clone(&health);
                    let mut stop_rx = stop_rx.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let response = respond(req.method(), req.uri().path(), &metrics, &health);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let mut builder = http1::Builder::new();
                        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        let mut conn = std::pin::pin!(conn);
                        let result = tokio::select! {
                            r = conn.as_mut() => r,
                            () = stop_requested(&mut stop_rx) => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "ops connection ended with an error");
                        }
                    });
                }
            }
        }

        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "ops server: dropping connections still open after the drain timeout"
            );
            connections.shutdown().await;
        }
        tracing::info!("ops server stopped");
        Ok(())
    }
}

/// Completes once shutdown is signalled (or the server is gone). A separate function so the
/// `watch` borrow guard is dropped here rather than held across the connection's `await`.
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Binds `addr` and serves `/health`, `/ready` and `/metrics` until `shutdown` completes.
/// Use [`OpsServer::bind`] directly to learn the bound port first.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    OpsServer::bind(addr).await?.run(metrics, health, shutdown).await
}

/// Routes one request. Pure apart from reading the shared state, so it is tested without sockets.
fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    let known = matches!(path, "/health" | "/ready" | "/metrics");
    if !known {
        return plain(StatusCode::NOT_FOUND, "not found: try /health, /ready or /metrics\n");
    }
    if method != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/health" => {
            let (ok, body) = health.health_report();
            json_response(ok, &body)
        }
        "/ready" => {
            let (ok, body) = health.ready_report();
            json_response(ok, &body)
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            r
        }
    }
}

fn json_response(ok: bool, body: &Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // A cached "ready" is worse than none: probes and operators must see the current state.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn ready(h: &Health) -> bool {
        h.ready_report().0
    }

    #[test]
    fn not_ready_until_kafka_and_assignment() {
        let h = Health::new("totals");
        let (ok, body) = h.ready_report();
        assert!(!ok);
        assert_eq!(body["reasons"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(body["assignment"]["assigned_partitions"], Value::Null);

        h.set_kafka(true, "127.0.0.1:9092");
        assert!(!ready(&h), "joined nothing yet");
        h.set_assignment(2);
        let (ok, body) = h.ready_report();
        assert!(ok, "{body}");
        assert_eq!(body["reasons"], json!([]));
        assert_eq!(body["assignment"], json!({"ok": true, "assigned_partitions": 2}));

        h.set_kafka(false, "all brokers down");
        let (ok, body) = h.ready_report();
        assert!(!ok);
        assert_eq!(body["kafka"], json!({"ok": false, "detail": "all brokers down"}));
        assert_eq!(body["reasons"][0], "kafka unreachable: all brokers down");
    }

    #[test]
    fn zero_partitions_is_ready_but_idle_and_leaving_the_group_is_not() {
        let h = Health::new("totals");
        h.set_kafka(true, "ok");
        h.set_assignment(0);
        let (ok, body) = h.ready_report();
        assert!(ok, "{body}");
        assert_eq!(body["assignment"]["assigned_partitions"], 0);
        assert!(body["assignment"]["note"].as_str().unwrap().contains("zero partitions"));
        h.clear_assignment();
        assert!(!ready(&h));
    }

    #[test]
    fn restoring_and_failed_dependencies_make_it_not_ready() {
        let h = Health::new("audit");
        h.set_kafka(true, "ok");
        h.set_assignment(1);
        h.set_restoring(true);
        let (ok, body) = h.ready_report();
        assert!(!ok);
        assert_eq!(body["state"], json!({"ok": false, "restoring": true}));
        h.set_restoring(false);
        assert!(ready(&h));

        h.set_dependency("signer", false, "KMS Sign failed: throttled");
        h.set_dependency("schema_registry", true, "http://registry:8081");
        let (ok, body) = h.ready_report();
        assert!(!ok);
        assert_eq!(
            body["dependencies"],
            json!({
                "schema_registry": {"ok": true, "detail": "http://registry:8081", "affects_readiness": true},
                "signer": {"ok": false, "detail": "KMS Sign failed: throttled", "affects_readiness": true},
            })
        );
        assert_eq!(body["reasons"], json!(["signer unavailable: KMS Sign failed: throttled"]));
        h.set_dependency("signer", true, "kid audit-2025");
        assert!(ready(&h));
    }

    #[test]
    fn reported_dependencies_warn_but_keep_readiness() {
        let h = Health::new("audit-chain");
        h.set_kafka(true, "ok");
        h.set_assignment(2);
        h.report_dependency("signer", false, "KMS DescribeKey failed: unreachable");
        let (ok, body) = h.ready_report();
        assert!(ok, "{body}");
        assert_eq!(body["reasons"], json!([]));
        assert_eq!(body["warnings"], json!(["signer not ok: KMS DescribeKey failed: unreachable"]));
        assert_eq!(body["dependencies"]["signer"]["affects_readiness"], false);
        h.report_dependency("signer", true, "kid k: key usable");
        assert_eq!(h.ready_report().1["warnings"], json!([]));
        // A gating failure next to it is what makes it not ready.
        h.set_dependency("schema_registry", false, "connection refused");
        let (ok, body) = h.ready_report();
        assert!(!ok);
        assert_eq!(body["reasons"], json!(["schema_registry unavailable: connection refused"]));
    }

    #[test]
    fn read_only_mode_is_reported_but_keeps_readiness() {
        let h = Health::new("allocator");
        h.set_kafka(true, "ok");
        h.set_assignment(3);
        h.set_mode(MODE_READ_ONLY);
        let (ok, body) = h.ready_report();
        assert!(ok);
        assert_eq!(body["mode"], "read-only");
        assert_eq!(h.health_report().1["mode"], "read-only");
        assert_eq!(body["mode_source"], json!({ "from": "config" }));
    }

    #[test]
    fn mode_source_names_the_operator_command() {
        let h = Health::new("totals");
        let source = json!({ "from": "control", "key": "read-only/*", "reason": "INC-1",
                             "actor": "alice" });
        h.set_mode_from(MODE_READ_ONLY, source.clone());
        assert_eq!(h.ready_report().1["mode"], "read-only");
        assert_eq!(h.ready_report().1["mode_source"], source);
        assert_eq!(h.health_report().1["mode_source"], source);
    }

    #[test]
    fn stopped_fails_liveness_and_readiness_with_the_first_reason() {
        let h = Health::new("totals");
        h.set_kafka(true, "ok");
        h.set_assignment(1);
        let (alive, body) = h.health_report();
        assert!(alive);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["processor"], "totals");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
        assert!(body.get("stopped_reason").is_none());

        h.set_stopped("fatal processor error: invariant broken");
        h.set_stopped("shutdown");
        let (alive, body) = h.health_report();
        assert!(!alive);
        assert_eq!(body["status"], "stopped");
        assert_eq!(body["stopped_reason"], "fatal processor error: invariant broken");
        assert!(!ready(&h));
    }

    #[test]
    fn metrics_mirror_every_change_of_readiness_and_mode() {
        let m = Metrics::new("audit");
        let h = Health::with_metrics("audit", Arc::clone(&m));
        let gauge = |m: &Metrics, series: &str| {
            m.encode()
                .lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        let ready = r#"evalstream_ready{processor="audit"}"#;
        let normal = r#"evalstream_mode{processor="audit",mode="normal"}"#;
        let read_only = r#"evalstream_mode{processor="audit",mode="read-only"}"#;
        assert_eq!(gauge(&m, ready), Some(0.0));
        assert_eq!(gauge(&m, normal), Some(1.0), "the initial mode is published at once");
        assert_eq!(gauge(&m, read_only), Some(0.0));

        // Every step of the other tests' sequences: the gauge equals /ready after each one.
        let steps: Vec<fn(&Health)> = vec![
            |h| h.set_kafka(true, "ok"),
            |h| h.set_assignment(0),
            |h| h.set_restoring(true),
            |h| h.set_restoring(false),
            |h| h.set_dependency("signer", false, "KMS down"),
            |h| h.set_dependency("signer", true, "kid k"),
            |h| h.set_mode(MODE_READ_ONLY),
            |h| h.clear_assignment(),
            |h| h.set_assignment(3),
            |h| h.set_kafka(false, "all brokers down"),
            |h| h.set_kafka(true, "back"),
            |h| h.set_stopped("shut down"),
        ];
        let mut seen = Vec::new();
        for step in steps {
            step(&h);
            let (ok, _) = h.ready_report();
            assert_eq!(gauge(&m, ready), Some(f64::from(u8::from(ok))));
            seen.push(ok);
        }
        assert!(seen.contains(&true) && seen.contains(&false), "{seen:?}");
        assert_eq!(gauge(&m, normal), Some(0.0));
        assert_eq!(gauge(&m, read_only), Some(1.0));
    }

    #[test]
    fn routing_statuses_and_content_types() {
        let m = Metrics::new("p");
        let h = Health::new("p");
        let r = respond(&Method::GET, "/metrics", &m, &h);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert_eq!(
            respond(&Method::GET, "/ready", &m, &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&Method::GET, "/health", &m, &h).status(), StatusCode::OK);
        assert_eq!(respond(&Method::GET, "/nope", &m, &h).status(), StatusCode::NOT_FOUND);
        let r = respond(&Method::POST, "/ready", &m, &h);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET");
    }

    /// Sends one HTTP/1.1 request and returns (status, headers, body).
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_health_ready_metrics_over_http() {
        let metrics = Metrics::new("totals");
        let health = Health::new("totals");
        let server = OpsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(Arc::clone(&metrics), Arc::clone(&health), async {
            let _ = stop_rx.await;
        }));

        let (status, head, body) = get(addr, "GET", "/health").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["processor"], "totals");

        let (status, _, body) = get(addr, "GET", "/ready").await;
        assert_eq!(status, 503);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], false);

        health.set_kafka(true, "127.0.0.1:9092");
        health.set_assignment(2);
        let (status, _, body) = get(addr, "GET", "/ready?verbose=1").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], true);

        metrics.record_in("orders");
        let (status, head, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(
            body.contains(r#"evalstream_records_in_total{processor="totals",topic="orders"} 1"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));

        assert_eq!(get(addr, "GET", "/").await.0, 404);
        let (status, head, _) = get(addr, "DELETE", "/metrics").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get"), "{head}");

        // An idle keep-alive connection must not hold up shutdown.
        let _idle = TcpStream::connect(addr).await.unwrap();
        stop_tx.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(3), task).await;
        result.expect("server stops promptly").unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[tokio::test]
    async fn binding_a_taken_port_is_an_ops_error() {
        let first = OpsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let err = OpsServer::bind(first.local_addr()).await.unwrap_err();
        assert!(matches!(err, RuntimeError::Ops(ref m) if m.contains("binding")), "{err}");
    }
}
