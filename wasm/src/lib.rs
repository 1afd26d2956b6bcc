//! weir's WebAssembly step (`type = "wasm"`): user functions compiled to
//! WebAssembly components that implement the `weir:function` world
//! (`wasm/wit/weir-function.wit`), run on wasmtime with one instance per
//! lane, one call per batch, a deadline, a memory cap and optional fuel.
//! A version is the SHA-256 of the component; compiled versions are cached
//! on disk by hash.

mod bindings;
mod convert;
#[doc(hidden)]
pub mod fuzzing;
mod guest_log;
mod host;
mod instance;
mod limits;
pub mod module;
pub mod options;
mod runtime;
pub mod step;
mod versioned;

pub use module::{FunctionModule, LoadError};
pub use step::{WasmFactory, WasmFunction, WasmStep};
pub use versioned::WasmVersioned;

/// Registers the `wasm` step type.
pub fn register(registry: &mut weir_engine::Registry) {
    registry.step("wasm", step::build);
}
