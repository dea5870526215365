//! A real Prometheus server for tests: started from a generated configuration in a temporary
//! directory, scraping the processors a test starts, queried through its HTTP API.
//!
//! The binary is `PROMETHEUS_BIN`, else the one `deploy/local/ops-tools.sh install` puts under the
//! cache, else `prometheus` on `PATH`. A missing binary fails the test (it never skips).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running Prometheus; killed (and its directory removed) on drop.
pub struct Prometheus {
    child: Child,
    /// `127.0.0.1:<port>` of its HTTP API.
    pub addr: String,
    dir: PathBuf,
}

/// One alert as `/api/v1/alerts` reports it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
}

impl Alert {
    /// Whether every `(label, value)` of `matchers` equals this alert's label.
    pub fn matches(&self, name: &str, matchers: &[(&str, &str)]) -> bool {
        self.name == name
            && matchers.iter().all(|(k, v)| self.labels.get(*k).and_then(Value::as_str) == Some(*v))
    }
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let cache = std::env::var_os("EVALSTREAM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/evalstream")
    });
    let cached = cache.join("ops-tools/bin/prometheus");
    if cached.exists() {
        return cached;
    }
    "prometheus".into()
}

/// A free loopback port (bound and released: good enough for a test's own servers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Prometheus {
    /// Starts Prometheus with `rules` (the text of a rule file), scraping `targets`
    /// (`host:port`) as job `evalstream` every second and evaluating rules every second.
    pub fn start(rules: &str, targets: &[String]) -> Prometheus {
        let dir = std::env::temp_dir().join(evalstream_integration_tests::unique_name("prom"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: evalstream\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let bin = binary();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({e}); install it with `deploy/local/ops-tools.sh install` or set PROMETHEUS_BIN",
                    bin.display()
                )
            });
        let p = Prometheus { child, addr, dir };
        p.wait_for("Prometheus to answer", Duration::from_secs(60), || {
            p.try_get("/-/ready").is_ok_and(|(status, _)| status == 200)
        });
        p
    }

    /// Directory with the configuration, rules, data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // HTTP/1.0: the server closes after the body and never uses chunked encoding.
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// GETs an API path and returns its `data`, or the API's error text.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.try_get(path).map_err(|e| format!("GET {path}: {e}"))?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: {status} {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("GET {path}: {status} {}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// Evaluates an instant query; `Err` carries Prometheus' error (bad syntax, bad function).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every alert that is pending or firing.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts").unwrap_or_else(|e| panic!("{e}"));
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let labels = a["labels"].as_object().cloned().unwrap_or_default();
                Alert {
                    name: labels.get("alertname").and_then(Value::as_str).unwrap_or("").to_owned(),
                    state: a["state"].as_str().unwrap_or("").to_owned(),
                    labels,
                }
            })
            .collect()
    }

    /// Whether an alert called `name` with these labels is firing now.
    pub fn firing(&self, name: &str, matchers: &[(&str, &str)]) -> bool {
        self.alerts().iter().any(|a| a.state == "firing" && a.matches(name, matchers))
    }

    /// Polls `cond` every 500 ms until it holds; panics with `what`, the current alerts and the
    /// tail of Prometheus' log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let alerts =
                    self.api("/api/v1/alerts").map(|d| d.to_string()).unwrap_or_else(|e| e);
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nalerts: {alerts}\nprometheus log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
