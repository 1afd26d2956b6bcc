//! The broker a Kafka benchmark runs against: the one given with
//! `--brokers`, or a dev broker started (and stopped after) through the
//! project's kafka-dev script, embedded in the binary so `weir bench kafka`
//! works from any directory on a machine with a JDK and Maven.

use std::path::PathBuf;
use std::process::Command;

/// The script, as shipped in scripts/kafka-dev.sh.
const SCRIPT: &str = include_str!("../../../scripts/kafka-dev.sh");

/// A broker for the run.
pub struct BenchBroker {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Set when this run started the broker: its script and directory.
    owned: Option<(PathBuf, tempdir::Dir)>,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl BenchBroker {
    /// Uses `brokers`, or starts a dev broker.
    pub fn get(brokers: Option<&str>) -> Result<BenchBroker, String> {
        if let Some(b) = brokers {
            return Ok(BenchBroker {
                bootstrap: b.to_string(),
                owned: None,
            });
        }
        let root = std::env::temp_dir().join(format!("weir-bench-kafka-{}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let dir = tempdir::Dir(root.clone());
        let script = root.join("kafka-dev.sh");
        std::fs::write(&script, SCRIPT)
            .map_err(|e| format!("writing {}: {e}", script.display()))?;
        eprintln!("starting a Kafka dev broker (no --brokers given)…");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", "--dir"])
            .arg(root.join("broker"))
            .output()
            .map_err(|e| format!("running kafka-dev.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the Kafka dev broker did not start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let bootstrap = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .ok_or("kafka-dev.sh printed no KAFKA_BOOTSTRAP")?
            .to_string();
        Ok(BenchBroker {
            bootstrap,
            owned: Some((script, dir)),
        })
    }
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        if let Some((script, dir)) = &self.owned {
            let _ = Command::new("bash")
                .arg(script)
                .args(["stop", "--dir"])
                .arg(dir.0.join("broker"))
                .output();
        }
    }
}
