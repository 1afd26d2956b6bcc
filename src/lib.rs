//! The `weir` command line: run, validate and test pipelines, benchmark the
//! engine, serve the admin endpoints.

pub mod admin;
pub mod admin_client;
pub mod admin_functions;
pub mod admin_live;
pub mod admin_pipeline;
pub mod bench;
pub mod functions_cli;
pub mod observability;
pub mod reload;
pub mod replay;
pub mod run;
pub mod tap_cli;
pub mod test_steps;
pub mod top_cli;
pub mod validate;

use weir_engine::Registry;

/// The registry of every built-in connector and step.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    weir_connectors::register(&mut registry);
    weir_functions::register(&mut registry);
    weir_wasm::register(&mut registry);
    weir_process::register(&mut registry);
    registry
}
