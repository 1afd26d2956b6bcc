//! The benchmark scenarios: what weir runs and what it is compared with.

use super::baseline;

/// A benchmark scenario.
pub struct Scenario {
    /// Name on the command line.
    pub name: &'static str,
    /// Events by default.
    pub default_events: u64,
    /// Generator payload template.
    pub payload: &'static str,
    /// The step (type, options as TOML), if any.
    pub step: Option<(&'static str, &'static str)>,
    /// What the baseline is.
    pub baseline_name: &'static str,
    /// Runs the baseline over this many events (with weir's shard count,
    /// for baselines that are pipelines too); returns events per second.
    pub baseline: fn(u64, usize) -> Result<f64, String>,
}

/// A ~100-byte static payload: the generator's no-placeholder path, so the
/// figure is the engine's cost alone.
pub const PASSTHROUGH_PAYLOAD: &str =
    r#"{"id":"0a1b2c3d","user":"someone@example.org","amount":125.5,"currency":"EUR","ok":true}"#;

/// A ~80-byte JSON event with changing fields.
pub const JSON_PAYLOAD: &str =
    r#"{"id":{{seq}},"user":"user-{{rand:0:999}}","amount":{{rand:0:200}},"ok":true}"#;

/// The jq program of `jq-map`.
pub const JQ_EXPR: &str = "select(.amount > 100) | .flag = true";

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "passthrough",
        default_events: 50_000_000,
        payload: PASSTHROUGH_PAYLOAD,
        step: None,
        baseline_name: "one thread sending the same batches through one bounded channel",
        baseline: |events, _| Ok(baseline::channel(events)),
    },
    Scenario {
        name: "json-map",
        default_events: 20_000_000,
        payload: JSON_PAYLOAD,
        step: Some(("json-add-field", "field = \"seen\"\nvalue = true\n")),
        baseline_name: "the same generator and json-add-field work in a plain single-threaded loop",
        baseline: |events, _| Ok(baseline::json_map(events)),
    },
    Scenario {
        name: "jq-map",
        default_events: 4_000_000,
        payload: JSON_PAYLOAD,
        step: Some(("jq", "expr = 'select(.amount > 100) | .flag = true'\n")),
        baseline_name: "the same generator and a plain single-threaded jaq loop",
        baseline: |events, _| Ok(baseline::jq_map(events)),
    },
    Scenario {
        name: "wasm-map",
        default_events: 10_000_000,
        payload: JSON_PAYLOAD,
        step: Some(("wasm", WASM_MAP_OPTIONS)),
        baseline_name: "the json-map pipeline (native json-add-field step) on the same shards",
        baseline: super::native_json_map,
    },
    Scenario {
        name: "python-map",
        default_events: 2_000_000,
        payload: JSON_PAYLOAD,
        step: Some(("python", PYTHON_MAP_OPTIONS)),
        baseline_name: "the json-map pipeline (native json-add-field step) on the same shards",
        baseline: super::native_json_map,
    },
    Scenario {
        name: "node-map",
        default_events: 2_000_000,
        payload: JSON_PAYLOAD,
        step: Some(("node", NODE_MAP_OPTIONS)),
        baseline_name: "the json-map pipeline (native json-add-field step) on the same shards",
        baseline: super::native_json_map,
    },
];

/// The `python-map` step: examples/functions/json_add_field.py (the bench
/// runs from the repository's root).
pub const PYTHON_MAP_OPTIONS: &str = "handler = 'examples/functions/json_add_field.py'\nconfig = { field = \"seen\", value = true }\n";

/// The `node-map` step: examples/functions/json_add_field.js.
pub const NODE_MAP_OPTIONS: &str = "handler = 'examples/functions/json_add_field.js'\nconfig = { field = \"seen\", value = true }\n";

/// The `wasm-map` step: the `json-add-field` guest (built by
/// scripts/build-guests.sh; the bench runs from the repository's root).
pub const WASM_MAP_OPTIONS: &str = "module = 'wasm/guests/out/json-add-field.wasm'\nconfig = { field = \"seen\", value = \"true\" }\n";
