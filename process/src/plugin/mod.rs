//! Connector plugins: an executable in any language that is a sink or a
//! source, talking to weir over the workers' framed pipes (fd 3 and 4).
//! docs/connectors/plugins.md documents the protocol message by message.
//!
//! ```toml
//! [sinks.archive]
//! type = "plugin"
//! command = ["python3", "plugins/archive.py"]
//! config = { dir = "/var/archive" }   # the plugin's `init` message
//! timeout = "30s"                     # per write (sink) or poll (source)
//! ```

pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

use crate::worker::WorkerSpec;

/// Options of a plugin source or sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOptions {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// What the plugin's `init` message carries as `config`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Environment variables for the plugin, besides weir's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Longest one write (sink) or poll (source) may take before the
    /// plugin is killed and restarted. Default 30s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub timeout: Duration,
    /// How long to wait before starting a plugin again after it died.
    /// Default 1s.
    #[serde(
        default = "default_restart_after",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub restart_after: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_restart_after() -> Duration {
    Duration::from_secs(1)
}

impl PluginOptions {
    /// Reads and checks the options of `config` (a `plugin` source or sink).
    pub fn from_config(
        config: &ComponentConfig,
        role: &str,
    ) -> Result<(Self, Arc<WorkerSpec>), Diagnostic> {
        let options: PluginOptions = config.options()?;
        let Some((program, args)) = options.command.split_first() else {
            return Err(config.option_error("command", "`command` is empty: name the program and its arguments, e.g. [\"python3\", \"plugin.py\"]"));
        };
        if options.timeout.is_zero() {
            return Err(config.option_error("timeout", "`timeout` must be more than zero"));
        }
        let init = serde_json::to_vec(&serde_json::json!({
            "t": "init",
            "role": role,
            "name": config.name,
            "config": options.config,
        }))
        .unwrap_or_default();
        let spec = Arc::new(WorkerSpec {
            function: config.name.as_str().into(),
            version: options.command.join(" "),
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: options.env.clone().into_iter().collect(),
            init,
            timeout: options.timeout,
        });
        Ok((options, spec))
    }
}
