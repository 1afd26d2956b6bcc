//! How the version catalog drives a `wasm` step: load a component, build
//! the step's instances for a stable version and a canary.

use std::path::PathBuf;
use std::sync::Arc;

use weir_engine::StepFactory;
use weir_versions::{CanarySpec, Version, VersionSource, Versioned};

use crate::module::{self, FunctionModule};
use crate::step::{WasmFactory, WasmFunction};

/// A `wasm` step as the catalog knows it.
pub struct WasmVersioned {
    /// The step's settings, shared by its versions.
    pub function: WasmFunction,
    /// Where compiled modules and deployed versions are kept.
    pub cache_dir: PathBuf,
    /// Whether it runs on the fuel-metering engine.
    pub fuel: bool,
}

/// The catalog's versions of a `wasm` step are always [`FunctionModule`]s.
fn module_of(version: Arc<dyn Version>) -> Arc<FunctionModule> {
    version
        .as_any()
        .downcast::<FunctionModule>()
        .unwrap_or_else(|_| unreachable!("a wasm step's versions are all FunctionModules"))
}

impl Versioned for WasmVersioned {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn load(&self, source: VersionSource) -> Result<Arc<dyn Version>, String> {
        let loaded = match source {
            VersionSource::Path(path) => module::load(&path, &self.cache_dir, self.fuel),
            // kept in the cache (by hash) only once it loaded
            VersionSource::Bytes(bytes) => {
                module::load_bytes(bytes, "upload".as_ref(), &self.cache_dir, self.fuel)
            }
        };
        loaded
            .map(|m| m as Arc<dyn Version>)
            .map_err(|e| e.to_string())
    }

    fn factory(
        &self,
        stable: Arc<dyn Version>,
        canary: Option<CanarySpec>,
    ) -> Arc<dyn StepFactory> {
        Arc::new(WasmFactory {
            function: self.function.clone(),
            stable: module_of(stable),
            canary: canary.map(|spec| (module_of(Arc::clone(&spec.version)), spec)),
        })
    }

    fn kept(&self) -> Vec<serde_json::Value> {
        weir_versions::store::kept(&self.cache_dir, "wasm")
    }
}
