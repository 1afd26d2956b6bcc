//! How the version catalog drives a `python` or `node` step: the same
//! deploy, rollback and canary as every versioned step.

use std::sync::Arc;

use weir_engine::StepFactory;
use weir_versions::{CanarySpec, Version, VersionSource, Versioned};

use crate::step::{ProcessFactory, ProcessFunction};
use crate::version::{HandlerVersion, Loader};

/// A `python` or `node` step as the catalog knows it.
pub struct ProcessVersioned {
    /// The step's settings.
    pub function: Arc<ProcessFunction>,
    /// How its versions load.
    pub loader: Loader,
}

/// The catalog's versions of these steps are always [`HandlerVersion`]s.
fn handler_of(version: Arc<dyn Version>) -> Arc<HandlerVersion> {
    version
        .as_any()
        .downcast::<HandlerVersion>()
        .unwrap_or_else(|_| {
            unreachable!("a python or node step's versions are all HandlerVersions")
        })
}

impl Versioned for ProcessVersioned {
    fn kind(&self) -> &'static str {
        self.function.language.name()
    }

    fn load(&self, source: VersionSource) -> Result<Arc<dyn Version>, String> {
        let loaded = match source {
            VersionSource::Path(path) => self.loader.load_path(&path),
            VersionSource::Bytes(bytes) => self.loader.load_bytes(bytes),
        };
        loaded.map(|v| v as Arc<dyn Version>)
    }

    fn factory(
        &self,
        stable: Arc<dyn Version>,
        canary: Option<CanarySpec>,
    ) -> Arc<dyn StepFactory> {
        Arc::new(ProcessFactory {
            function: Arc::clone(&self.function),
            stable: handler_of(stable),
            canary: canary.map(|spec| (handler_of(Arc::clone(&spec.version)), spec)),
        })
    }

    fn kept(&self) -> Vec<serde_json::Value> {
        weir_versions::store::kept(&self.loader.cache_dir, self.function.language.extension())
    }
}
