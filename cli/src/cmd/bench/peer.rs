//! The Kafka Streams peer (`bench/peers/kafka-streams`): built by its own script on first use,
//! run as a `java` child process.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// A built Kafka Streams peer.
pub(crate) struct KafkaStreams {
    java: PathBuf,
    classpath: String,
    schemas: PathBuf,
    heap: String,
}

impl KafkaStreams {
    /// Builds the peer (once; `build.sh` caches it under `~/.cache/evalstream/peers`) and
    /// locates the schemas of this checkout.
    pub(crate) fn build(dir: Option<&Path>, heap: &str) -> anyhow::Result<KafkaStreams> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => default_dir()?,
        };
        let script = dir.join("build.sh");
        eprintln!("building the Kafka Streams peer ({})", script.display());
        let out = Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(out.status.success(), "{} failed ({})", script.display(), out.status);
        let text = String::from_utf8(out.stdout)?;
        let mut lines = text.lines();
        let (Some(java), Some(classpath)) = (lines.next(), lines.next()) else {
            anyhow::bail!("{} printed no java and class path", script.display());
        };
        let schemas = dir.join("../../../schemas");
        anyhow::ensure!(
            schemas.join("evalstream/runtime/TotalsInput.avsc").is_file(),
            "schemas not found at {}",
            schemas.display()
        );
        Ok(KafkaStreams {
            java: java.into(),
            classpath: classpath.to_string(),
            schemas,
            heap: heap.to_string(),
        })
    }

    /// The command that runs the topology with application (group) id `app_id`.
    pub(crate) fn command(
        &self,
        bootstrap: &str,
        app_id: &str,
        input: &str,
        output: &str,
        state_dir: &Path,
    ) -> Command {
        let s = &self.schemas;
        let mut cmd = Command::new(&self.java);
        cmd.arg(format!("-Xmx{}", self.heap))
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(&self.classpath)
            .arg("dev.evalstream.bench.TotalsStreams")
            .args(["--bootstrap", bootstrap, "--application-id", app_id])
            .args(["--input", input, "--output", output])
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--output-schema")
            .arg(s.join("evalstream/runtime/TotalsUpdate.avsc"))
            .arg("--input-schema")
            .arg(s.join("evalstream/runtime/TotalsInput.avsc"))
            .arg("--input-schema")
            .arg(s.join("history/evalstream.runtime.TotalsInput/v1.avsc"));
        cmd
    }
}

/// `bench/peers/kafka-streams` of the working directory's checkout, else of the checkout this
/// binary was built from.
fn default_dir() -> anyhow::Result<PathBuf> {
    let rel = Path::new("bench/peers/kafka-streams");
    let candidates = [
        std::env::current_dir()?.join(rel),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel),
    ];
    candidates
        .iter()
        .find(|d| d.join("build.sh").is_file())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("bench/peers/kafka-streams not found; pass --peer-dir"))
}
