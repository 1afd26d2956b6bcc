//! Loading a function version: read the component, hash it, compile it
//! (or load it precompiled from the cache), link WASI and check that it
//! implements the `weir:function` world.
//!
//! A version's identity is the SHA-256 of its component's bytes. The
//! cache directory keeps, by hash, the component as it was deployed
//! (`<hash>.wasm`: the versions kept for a rollback) and its compiled form
//! (`<hash>.<engine>.cwasm`), so a restart loads in milliseconds instead
//! of compiling again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use crate::bindings::FunctionPre;
use crate::host::HostState;
use crate::runtime;
use weir_versions::store::{self, sha256_hex, write_atomically};
use weir_versions::VersionStats;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The module's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid component for this engine.
    #[error("`{path}` is not a WebAssembly component weir can run: {reason}")]
    Invalid {
        /// The module's path.
        path: PathBuf,
        /// What wasmtime said, with a hint.
        reason: String,
    },
    /// The component does not implement the `weir:function` world.
    #[error("`{path}` does not implement weir:function/function@0.1.0 (see wasm/wit/weir-function.wit): {reason}")]
    WrongInterface {
        /// The module's path.
        path: PathBuf,
        /// The missing or mistyped export or import.
        reason: String,
    },
    /// The engine could not start.
    #[error("{0}")]
    Engine(String),
}

/// A loaded function version, ready to instantiate.
pub struct FunctionModule {
    /// Hex SHA-256 of the component's bytes: the version.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// How long loading took (reading, compiling or deserializing, linking).
    pub load_time: Duration,
    /// Whether the compiled form came from the cache.
    pub from_cache: bool,
    /// Whether it runs on the fuel-metering engine.
    pub fuel: bool,
    /// What this version has done since it was loaded.
    pub stats: VersionStats,
    /// Linked and type-checked, instantiated once per lane.
    pub(crate) pre: FunctionPre<HostState>,
}

impl std::fmt::Debug for FunctionModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionModule")
            .field("hash", &self.hash)
            .field("size", &self.size)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FunctionModule {
    /// The first 12 hex digits of the hash: how logs and metrics name the version.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12]
    }

    /// The engine the module was compiled for.
    pub fn engine(&self) -> &Engine {
        self.pre.engine()
    }
}

/// Loads the component at `path`, using and filling the cache in `cache_dir`.
pub fn load(path: &Path, cache_dir: &Path, fuel: bool) -> Result<Arc<FunctionModule>, LoadError> {
    let started = Instant::now();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_from(bytes, path, cache_dir, fuel, started)
}

/// Loads a component from its bytes (an upload); `path` names it in errors.
pub fn load_bytes(
    bytes: Vec<u8>,
    path: &Path,
    cache_dir: &Path,
    fuel: bool,
) -> Result<Arc<FunctionModule>, LoadError> {
    load_from(bytes, path, cache_dir, fuel, Instant::now())
}

fn load_from(
    bytes: Vec<u8>,
    path: &Path,
    cache_dir: &Path,
    fuel: bool,
    started: Instant,
) -> Result<Arc<FunctionModule>, LoadError> {
    let hash = sha256_hex(&bytes);
    let engine = runtime::engine(fuel).map_err(LoadError::Engine)?;
    let (component, from_cache) =
        compile_cached(&engine, &bytes, &hash, cache_dir, fuel).map_err(|reason| {
            LoadError::Invalid {
                path: path.to_path_buf(),
                reason,
            }
        })?;
    keep_version(cache_dir, &hash, &bytes);
    let pre = link(&engine, &component).map_err(|reason| LoadError::WrongInterface {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(Arc::new(FunctionModule {
        hash,
        size: bytes.len() as u64,
        path: path.to_path_buf(),
        load_time: started.elapsed(),
        from_cache,
        fuel,
        stats: VersionStats::default(),
        pre,
    }))
}

fn compiled_path(cache_dir: &Path, hash: &str, fuel: bool) -> PathBuf {
    cache_dir.join(format!(
        "{hash}.{}.cwasm",
        if fuel { "fuel" } else { "plain" }
    ))
}

/// The compiled component: from the cache if it holds a usable copy
/// (wasmtime refuses one made by another version or configuration, and
/// then it is compiled again), else compiled and stored.
fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    hash: &str,
    cache_dir: &Path,
    fuel: bool,
) -> Result<(Component, bool), String> {
    let cached = compiled_path(cache_dir, hash, fuel);
    if cached.exists() {
        // SAFETY: the file is one weir wrote into its own cache directory
        // from `Component::serialize` (below); its name is the hash of the
        // source it was compiled from. Deserializing trusts that the cache
        // directory is not writable by anyone who may not run code as weir,
        // as the docs say. wasmtime itself refuses files from another
        // version or configuration.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok((component, true)),
            Err(e) => tracing::info!(file = %cached.display(), error = %format!("{e:#}"),
                "wasm: cached compilation not usable, compiling again"),
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| explain_invalid(bytes, &e))?;
    match component.serialize() {
        Ok(compiled) => {
            if let Err(e) = write_atomically(&cached, &compiled) {
                tracing::warn!(file = %cached.display(), error = %e,
                    "wasm: cannot cache the compiled module; the next start compiles again");
            }
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "wasm: cannot serialize the compiled module")
        }
    }
    Ok((component, false))
}

/// Keeps the deployed component by hash, the version store a rollback
/// and `weir functions list` read.
fn keep_version(cache_dir: &Path, hash: &str, bytes: &[u8]) {
    if let Err(e) = store::keep(cache_dir, hash, "wasm", bytes) {
        tracing::warn!(dir = %cache_dir.display(), error = %e, "wasm: cannot keep the version");
    }
}

fn explain_invalid(bytes: &[u8], error: &wasmtime::Error) -> String {
    let hint = match bytes.get(4..8) {
        _ if bytes.get(..4) != Some(b"\0asm") => {
            "; the file does not start with the WebAssembly magic bytes"
        }
        Some([1, 0, 0, 0]) => {
            "; this is a core module, not a component: build with `--target wasm32-wasip2`"
        }
        _ => "",
    };
    format!("{error:#}{hint}")
}

fn link(engine: &Engine, component: &Component) -> Result<FunctionPre<HostState>, String> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("it imports something weir does not provide: {e:#}"))?;
    FunctionPre::new(pre).map_err(|e| format!("{e:#}"))
}

impl weir_versions::Version for FunctionModule {
    fn hash(&self) -> &str {
        &self.hash
    }

    fn stats(&self) -> &VersionStats {
        &self.stats
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size,
            "path": self.path.display().to_string(),
            "load_ms": self.load_time.as_secs_f64() * 1000.0,
            "from_cache": self.from_cache,
        })
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
