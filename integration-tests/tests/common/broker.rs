//! A broker of a test's own, for tests that pause or kill the broker: started through the local
//! Kafka script (`deploy/local/kafka.sh`, or `EVALSTREAM_TEST_KAFKA_SCRIPT`) on free ports with its
//! own log directory, so the shared broker other tests use is never disturbed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use evalstream_integration_tests as it;

/// A dedicated single-node Apache Kafka (KRaft) broker.
pub struct DedicatedBroker {
    script: PathBuf,
    port: u16,
    controller_port: u16,
    log_dir: PathBuf,
}

impl DedicatedBroker {
    /// Starts a broker on free ports with a fresh log directory and waits until it answers.
    pub fn start() -> Self {
        let script =
            std::env::var_os("EVALSTREAM_TEST_KAFKA_SCRIPT").map(PathBuf::from).unwrap_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/kafka.sh"),
            );
        assert!(
            script.exists(),
            "{} not found: the broker fault tests start their own Apache Kafka through it \
             (set EVALSTREAM_TEST_KAFKA_SCRIPT to use another copy)",
            script.display()
        );
        let (port, controller_port) = (it::free_port(), it::free_port());
        let log_dir = std::env::temp_dir().join(it::unique_name("kafka-fault"));
        let b = DedicatedBroker { script, port, controller_port, log_dir };
        b.script("start");
        b
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, action: &str) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_LOG_DIR", &self.log_dir)
            .output()
            .unwrap_or_else(|e| panic!("running {} {action}: {e}", self.script.display()));
        assert!(
            out.status.success(),
            "{} {action} failed:\n{}{}",
            self.script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.script("pid").parse().expect("the script prints a pid")
    }

    fn try_pid(&self) -> Option<u32> {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg("pid")
            .env("KAFKA_PORT", self.port.to_string())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// Whether the broker process is stopped (state `T` in ps): proof that a pause happened.
    pub fn is_paused(&self) -> bool {
        let out = Command::new("ps")
            .args(["-o", "stat=", "-p", &self.pid().to_string()])
            .output()
            .expect("ps");
        String::from_utf8_lossy(&out.stdout).trim().starts_with('T')
    }

    /// SIGSTOP the broker.
    pub fn pause(&self) {
        self.signal("STOP");
        assert!(self.is_paused(), "the broker did not stop");
    }

    /// SIGCONT the broker.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGKILL the broker and wait until it is gone. Returns its pid.
    pub fn kill9(&self) -> u32 {
        let pid = self.pid();
        self.signal("KILL");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "broker pid {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(100));
        }
        pid
    }

    /// Starts the broker again on the same log directory (it recovers from its log).
    pub fn restart(&self) {
        self.script("start");
    }
}

impl Drop for DedicatedBroker {
    fn drop(&mut self) {
        // A paused broker cannot stop.
        if let Some(pid) = self.try_pid() {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("wipe")
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_LOG_DIR", &self.log_dir)
            .status();
    }
}
