//! A real PostgreSQL server with logical replication for the tests, started
//! through the project's `scripts/pg-dev.sh`, and psql helpers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::dev_server;

fn script() -> PathBuf {
    dev_server::script("pg-dev.sh")
}

/// A cluster in its own temporary directory, stopped and removed on drop.
pub struct Server {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// The port.
    pub port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn start_in(dir: &Path, port: Option<u16>, settings: &[&str]) -> String {
    let extra: Vec<&str> = settings.iter().flat_map(|s| ["--set", s]).collect();
    dev_server::start("pg-dev.sh", dir, port, &extra, "PG_URL")
}

impl Server {
    /// Starts a cluster on a free port.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a cluster on a free port with extra server settings (`name=value`).
    pub fn start_with(settings: &[&str]) -> Server {
        // under /tmp and open to the postgres OS user (the server runs as it)
        let tmp = tempfile::Builder::new()
            .prefix("weir-pgt")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("pg");
        let url = start_in(&dir, None, settings);
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .unwrap()
            .parse()
            .unwrap();
        Server {
            url,
            port,
            dir,
            _tmp: tmp,
        }
    }

    /// The URL of another database on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (`fast` or `immediate`), keeping its data.
    pub fn stop(&self, mode: &str) {
        dev_server::stop("pg-dev.sh", &self.dir, &["--keep", "--mode", mode]);
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        super::faults::pid_in(&self.dir.join("data/postmaster.pid"))
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        start_in(&self.dir, Some(self.port), &[]);
    }

    /// Runs SQL with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_output(sql);
        assert!(
            out.status.success(),
            "psql failed on {sql:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs SQL with psql and returns the whole output (for expected failures).
    pub fn psql_output(&self, sql: &str) -> std::process::Output {
        Command::new("bash")
            .arg(script())
            .args(["psql", "--dir"])
            .arg(&self.dir)
            .args(["--", "-Atq", "-c", sql])
            .output()
            .unwrap()
    }

    /// The confirmed position of a slot (`None` if it does not exist).
    pub fn slot_confirmed(&self, slot: &str) -> Option<u64> {
        let out = self.psql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ));
        if out.is_empty() {
            None
        } else {
            Some(parse_lsn(&out))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // slots go with the cluster: nothing keeps WAL after the test
        dev_server::remove("pg-dev.sh", &self.dir, &["--mode", "immediate"]);
    }
}

/// Parses an LSN `X/Y`.
pub fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

impl Server {
    /// A psql command that runs a SQL file (each statement its own
    /// transaction unless the file says otherwise), stopping at the first error.
    pub fn psql_file_command(&self, file: &Path) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(["psql", "--dir"])
            .arg(&self.dir)
            .args(["--", "-q", "-f"])
            .arg(file);
        cmd
    }
}
