//! Options of the `python` and `node` steps.
//!
//! ```toml
//! [[steps]]
//! type = "python"                    # or "node"
//! name = "enrich"
//! handler = "functions/enrich.py"    # def handler(context, event) / (context, events)
//! config = { field = "env" }         # context.config
//! routes = ["audit"]                 # sinks the function may route to
//! workers = 1                        # worker processes per shard
//! timeout = "10s"                    # per batch; past it the worker is killed
//! mode = "auto"                      # "event", "batch" or by the parameter's name
//! venv = ".venv"                     # python: run this virtual environment's interpreter
//! requirements = "requirements.txt"  # python: part of the version's hash
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Options of a `python` or `node` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessOptions {
    /// The handler file (`.py` for `python`, `.js`/`.cjs` for `node`).
    pub handler: PathBuf,
    /// What the handler sees as `context.config`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Sinks the function may route events to, by name.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Worker processes per shard; the shard's lanes share them. Default 1:
    /// an interpreter runs one batch at a time, so one per core keeps the
    /// core busy; more help handlers that wait on I/O.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Longest a worker may take over one batch (and over start and `init`);
    /// past it the worker is killed and restarted, and the batch's events are
    /// run one by one to find the one that hangs. Default 10s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub timeout: Duration,
    /// `"event"` (the handler takes one event), `"batch"` (a list), or
    /// `"auto"`: batch when the handler's second parameter is named `events`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The interpreter to run (default `python3` or `node` on the `PATH`).
    #[serde(default)]
    pub interpreter: Option<PathBuf>,
    /// Python: a virtual environment whose interpreter runs the function.
    #[serde(default)]
    pub venv: Option<PathBuf>,
    /// Python: the requirements file the function was tested with; its
    /// content is part of the version. (Node: a `package-lock.json` beside
    /// the handler is, on its own.)
    #[serde(default)]
    pub requirements: Option<PathBuf>,
    /// Environment variables for the workers, besides weir's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where deployed versions are kept, by hash. Default
    /// `$WEIR_FUNCTIONS_CACHE`, else `.weir/functions` in the working directory.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_workers() -> usize {
    1
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_mode() -> String {
    "auto".into()
}

impl ProcessOptions {
    /// The cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("WEIR_FUNCTIONS_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".weir/functions")),
        }
    }
}
