//! The server a broker benchmark runs against: the address given on the
//! command line, or a dev server started (and stopped after) through one of
//! the project's `scripts/*-dev.sh`, embedded in the binary so `weir bench`
//! works from any directory.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// How to start one kind of dev server.
pub(super) struct DevScript {
    /// What it is, for messages: `a Kafka dev broker`.
    pub(super) what: &'static str,
    /// Its file name: `kafka-dev.sh`.
    pub(super) name: &'static str,
    /// Its text (`include_str!`).
    pub(super) text: &'static str,
    /// The line of its output that holds the address: `KAFKA_BOOTSTRAP`.
    pub(super) key: &'static str,
    /// Extra arguments of `stop`.
    pub(super) stop_args: &'static [&'static str],
}

/// A server for the run.
pub(super) struct DevServer {
    /// Its address (bootstrap servers, URL).
    pub(super) address: String,
    /// Set when this run started it: the script and the directory to remove.
    owned: Option<(&'static DevScript, PathBuf)>,
}

impl DevServer {
    /// Uses `given`, or starts a dev server with `script`.
    pub(super) fn get(given: Option<&str>, script: &'static DevScript) -> Result<Self, String> {
        if let Some(address) = given {
            return Ok(DevServer {
                address: address.to_string(),
                owned: None,
            });
        }
        // under /tmp and open to other users: a Postgres server runs as the
        // postgres OS user
        let root = PathBuf::from(format!(
            "/tmp/weir-bench-{}-{}",
            script.name,
            std::process::id()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let mut server = DevServer {
            address: String::new(),
            owned: Some((script, root.clone())),
        };
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("opening {}: {e}", root.display()))?;
        let path = root.join(script.name);
        std::fs::write(&path, script.text)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("starting {} (no address given)…", script.what);
        let out = Command::new("bash")
            .arg(&path)
            .args(["start", "--dir"])
            .arg(root.join("server"))
            .output()
            .map_err(|e| format!("running {}: {e}", script.name))?;
        if !out.status.success() {
            return Err(format!(
                "{} did not start:\n{}",
                script.what,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let prefix = format!("{}=", script.key);
        server.address = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .ok_or_else(|| format!("{} printed no {}", script.name, script.key))?
            .to_string();
        Ok(server)
    }

    /// Whether this run started the server (and will remove it).
    pub(super) fn is_owned(&self) -> bool {
        self.owned.is_some()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some((script, root)) = &self.owned {
            let _ = Command::new("bash")
                .arg(root.join(script.name))
                .arg("stop")
                .args(script.stop_args)
                .arg("--dir")
                .arg(root.join("server"))
                .output();
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
