//! weir's out-of-process functions: `python` and `node` steps. Each shard
//! keeps a small pool of long-lived worker processes per function version
//! (an interpreter running the shim weir ships, `shim/`), fed whole batches
//! over a framed protocol on two pipes; the handler and its `init` load once
//! per worker. Versions, deploys and canaries are the same as for
//! WebAssembly (`weir-versions`). Connector plugins (`plugin` sources and
//! sinks, any executable) speak the same framed protocol.

pub mod frame;
pub mod language;
pub mod options;
pub mod plugin;
mod pool;
pub mod protocol;
pub mod step;
pub mod version;
mod versioned;
pub mod worker;

pub use language::Language;

/// Registers the `python` and `node` step types and the `plugin` source and sink.
pub fn register(registry: &mut weir_engine::Registry) {
    registry.step("python", |config, ctx| {
        step::build(Language::Python, config, ctx)
    });
    registry.step("node", |config, ctx| {
        step::build(Language::Node, config, ctx)
    });
    registry.source("plugin", plugin::source::build);
    registry.sink("plugin", plugin::sink::build);
}
