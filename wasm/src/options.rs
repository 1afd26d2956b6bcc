//! Options of the `wasm` step.
//!
//! ```toml
//! [[steps]]
//! type = "wasm"
//! name = "enrich"
//! module = "functions/enrich.wasm"   # a component built for wasm32-wasip2
//! config = { field = "env", value = "prod" }
//! routes = ["audit"]                  # sinks the function may route to
//! deadline = "1s"                     # per batch
//! max_memory = "64MiB"                # per instance
//! fuel = 100000000                    # optional, per batch
//! cache_dir = ".weir/wasm"            # compiled modules and kept versions
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Options of the `wasm` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmOptions {
    /// Path of the component (`.wasm`), relative to the working directory.
    pub module: PathBuf,
    /// Passed to the guest's `init` as (key, value) strings: strings as
    /// they are, other values as JSON text.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Sinks the function may route events to, by name.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Longest one call (a batch, or `init`) may run; past it the call
    /// traps, the batch fails and the instance is rebuilt. Default 1s.
    #[serde(
        default = "default_deadline",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub deadline: Duration,
    /// Most linear memory one instance may use, e.g. `"64MiB"`. Default 64MiB.
    #[serde(default = "default_max_memory")]
    pub max_memory: String,
    /// Fuel (roughly, WebAssembly instructions) one call may use; off by
    /// default. Metering costs every call, so prefer `deadline` unless the
    /// bound must be the same on every machine.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Where compiled modules and deployed versions are kept, by hash.
    /// Default `$WEIR_WASM_CACHE`, else `.weir/wasm` in the working directory.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_deadline() -> Duration {
    Duration::from_secs(1)
}

fn default_max_memory() -> String {
    "64MiB".to_string()
}

impl WasmOptions {
    /// The config table as the (key, value) strings `init` receives.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("WEIR_WASM_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".weir/wasm")),
        }
    }
}

/// Parses a size such as `"64MiB"`, `"512KiB"`, `"1GiB"` or `"1048576"` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().map_err(|_| {
        format!("`{text}` is not a size: expected a number and KiB, MiB or GiB, e.g. \"64MiB\"")
    })?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}`: use B, KiB, MiB or GiB"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("64MB").unwrap_err().contains("unit `MB`"));
        assert!(parse_size("lots").is_err());
    }
}
