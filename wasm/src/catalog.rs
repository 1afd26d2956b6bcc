//! The running process's WebAssembly functions and what an operator can do
//! to them: list versions, deploy a new one, roll back, run a canary on a
//! share of the keys (judged, then rolled back or promoted automatically),
//! promote it.
//!
//! Every change loads and compiles the new version off the shards (on the
//! blocking pool), then swaps the step's instances through the pipeline's
//! control channel, so each lane changes version between two batches:
//! nothing is lost, and a key's events stay in order (a key stays on one
//! lane, and under a canary on one version). The previous version stays
//! loaded, so a rollback only instantiates it again.
//!
//! One pipeline runs per process, so the catalog is process-wide: `wasm`
//! steps register here when they are built, and `weir run` attaches the
//! pipeline's control handle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use weir_engine::PipelineControl;

use crate::canary::{judge, CanaryPolicy, Verdict};
use crate::module::{self, FunctionModule, LoadError};
use crate::stats::{StatsSnapshot, VersionStats};
use crate::step::{WasmFactory, WasmFunction};

/// Why an operation on a function was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No `wasm` step has this name.
    #[error("no wasm step named `{name}` (wasm steps: {known})")]
    NoSuchFunction {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The pipeline is not running (no control handle yet).
    #[error("the pipeline is not running")]
    NotRunning,
    /// The new version could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The operation does not fit the function's state.
    #[error("{0}")]
    Conflict(String),
    /// The request was malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The swap on the shards failed (the old version stays where it did).
    #[error("swapping versions failed: {0}")]
    Swap(String),
}

/// Where a new version comes from.
#[derive(Debug)]
pub enum ModuleSource {
    /// A component file on this machine.
    Path(PathBuf),
    /// A component's bytes (an upload).
    Bytes(Vec<u8>),
}

/// One `wasm` step's versions.
struct Entry {
    function: WasmFunction,
    cache_dir: PathBuf,
    fuel: bool,
    stable: Arc<FunctionModule>,
    previous: Option<Arc<FunctionModule>>,
    canary: Option<CanaryRun>,
    /// How the last canary ended.
    last_canary: Option<serde_json::Value>,
}

/// A canary in progress.
struct CanaryRun {
    id: u64,
    module: Arc<FunctionModule>,
    policy: CanaryPolicy,
    started: Instant,
    stable_at_start: StatsSnapshot,
    /// The stable version's control group (as many keys as the canary,
    /// in sub-batches of the same size); empty when the share is over 0.5.
    control: Arc<VersionStats>,
}

impl CanaryRun {
    /// What the canary is judged against: its control group, or (share over
    /// 0.5, no control group) all the stable version did since it started.
    fn baseline(&self, stable: &FunctionModule) -> StatsSnapshot {
        let control = self.control.snapshot();
        if self.policy.share <= 0.5 {
            control
        } else {
            stable.stats.snapshot().since(&self.stable_at_start)
        }
    }
}

/// The process's functions.
#[derive(Default)]
pub struct Catalog {
    entries: Mutex<HashMap<String, Entry>>,
    control: Mutex<Option<PipelineControl>>,
    /// Serialises changes: one deploy, rollback or canary decision at a time.
    changing: tokio::sync::Mutex<()>,
    next_canary: std::sync::atomic::AtomicU64,
}

/// The process's catalog.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::default)
}

impl Catalog {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a `wasm` step as built from the pipeline file (a rebuilt
    /// pipeline replaces its entries).
    pub(crate) fn register(
        &self,
        function: WasmFunction,
        cache_dir: PathBuf,
        fuel: bool,
        module: Arc<FunctionModule>,
    ) {
        self.entries().insert(
            function.name.to_string(),
            Entry {
                function,
                cache_dir,
                fuel,
                stable: module,
                previous: None,
                canary: None,
                last_canary: None,
            },
        );
    }

    /// Gives the catalog the running pipeline's control handle.
    pub fn attach(&self, control: PipelineControl) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(control);
    }

    /// Whether any `wasm` step is registered.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Every function with its versions and their counters, as JSON.
    pub fn list(&self) -> serde_json::Value {
        let entries = self.entries();
        let mut names: Vec<&String> = entries.keys().collect();
        names.sort();
        let functions: Vec<serde_json::Value> = names
            .into_iter()
            .map(|n| describe(n, &entries[n]))
            .collect();
        serde_json::json!({ "functions": functions })
    }

    /// One function, as JSON.
    pub fn describe(&self, name: &str) -> Result<serde_json::Value, CatalogError> {
        let entries = self.entries();
        let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
        Ok(describe(name, entry))
    }

    fn control(&self) -> Result<PipelineControl, CatalogError> {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(CatalogError::NotRunning)
    }

    /// Loads a version for `name` off the runtime's threads.
    async fn load(
        &self,
        name: &str,
        source: ModuleSource,
    ) -> Result<Arc<FunctionModule>, CatalogError> {
        let (cache_dir, fuel) = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            (entry.cache_dir.clone(), entry.fuel)
        };
        let loaded = tokio::task::spawn_blocking(move || match source {
            ModuleSource::Path(path) => module::load(&path, &cache_dir, fuel),
            // kept in the cache (by hash) only once it loaded
            ModuleSource::Bytes(bytes) => {
                module::load_bytes(bytes, "upload".as_ref(), &cache_dir, fuel)
            }
        })
        .await
        .map_err(|e| CatalogError::Swap(format!("loading panicked: {e}")))??;
        Ok(loaded)
    }

    /// Swaps the step's instances to `stable` (and `canary`, if any).
    async fn swap(
        &self,
        name: &str,
        stable: Arc<FunctionModule>,
        canary: Option<(Arc<FunctionModule>, f64, Arc<VersionStats>)>,
    ) -> Result<(), CatalogError> {
        let function = {
            let entries = self.entries();
            entries
                .get(name)
                .ok_or_else(|| no_such(name, &entries))?
                .function
                .clone()
        };
        let factory = Arc::new(WasmFactory {
            function,
            stable,
            canary,
        });
        let control = self.control()?;
        let Err(e) = control.swap_step(name, factory).await else {
            return Ok(());
        };
        // some lanes may have swapped (each opens its new instance on its
        // own): put every lane back on what the catalog says runs
        let current = {
            let entries = self.entries();
            entries.get(name).map(|e| WasmFactory {
                function: e.function.clone(),
                stable: Arc::clone(&e.stable),
                canary: e.canary.as_ref().map(|c| {
                    (
                        Arc::clone(&c.module),
                        c.policy.share,
                        Arc::clone(&c.control),
                    )
                }),
            })
        };
        if let Some(current) = current {
            if let Err(again) = control.swap_step(name, Arc::new(current)).await {
                tracing::error!(function = name, error = %again,
                    "wasm: restoring the running versions after a failed swap failed too");
            }
        }
        Err(CatalogError::Swap(e.to_string()))
    }

    /// Makes the version from `source` the function's only version; the
    /// one it replaces is kept for a rollback.
    pub async fn deploy(
        &self,
        name: &str,
        source: ModuleSource,
    ) -> Result<serde_json::Value, CatalogError> {
        let _changing = self.changing.lock().await;
        self.check_no_canary(name)?;
        let module = self.load(name, source).await?;
        let current = self.stable(name)?;
        if current.hash == module.hash {
            return self.describe(name);
        }
        self.swap(name, Arc::clone(&module), None).await?;
        tracing::info!(
            function = name,
            from = current.short_hash(),
            to = module.short_hash(),
            "wasm: deployed"
        );
        self.update(name, |e| {
            e.previous = Some(std::mem::replace(&mut e.stable, module));
        })?;
        self.describe(name)
    }

    /// Goes back to the previous version (or ends a running canary).
    pub async fn rollback(&'static self, name: &str) -> Result<serde_json::Value, CatalogError> {
        let _changing = self.changing.lock().await;
        let canary = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            entry.canary.as_ref().map(|c| c.id)
        };
        if let Some(id) = canary {
            self.end_canary_locked(name, id, Verdict::RollBack("rolled back on request".into()))
                .await?;
            return self.describe(name);
        }
        let previous = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            entry.previous.clone().ok_or_else(|| {
                CatalogError::Conflict(format!(
                    "function `{name}` has no previous version to roll back to"
                ))
            })?
        };
        self.swap(name, Arc::clone(&previous), None).await?;
        tracing::warn!(
            function = name,
            to = previous.short_hash(),
            "wasm: rolled back"
        );
        self.update(name, |e| {
            e.previous = Some(std::mem::replace(&mut e.stable, previous));
        })?;
        self.describe(name)
    }

    /// Runs the version from `source` on `policy.share` of the keys beside
    /// the stable version, and judges it every `policy.check_every`.
    pub async fn start_canary(
        &'static self,
        name: &str,
        source: ModuleSource,
        policy: CanaryPolicy,
    ) -> Result<serde_json::Value, CatalogError> {
        policy.validate().map_err(CatalogError::BadRequest)?;
        let _changing = self.changing.lock().await;
        self.check_no_canary(name)?;
        let module = self.load(name, source).await?;
        let stable = self.stable(name)?;
        if stable.hash == module.hash {
            return Err(CatalogError::Conflict(format!(
                "version {} of `{name}` is already the stable version",
                module.short_hash()
            )));
        }
        let control = Arc::new(VersionStats::default());
        self.swap(
            name,
            Arc::clone(&stable),
            Some((Arc::clone(&module), policy.share, Arc::clone(&control))),
        )
        .await?;
        let id = self
            .next_canary
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let check_every = policy.check_every;
        tracing::info!(
            function = name,
            stable = stable.short_hash(),
            canary = module.short_hash(),
            share = policy.share,
            "wasm: canary started"
        );
        self.update(name, |e| {
            e.canary = Some(CanaryRun {
                id,
                module,
                policy,
                started: Instant::now(),
                stable_at_start: e.stable.stats.snapshot(),
                control,
            });
        })?;
        let watched = name.to_string();
        tokio::spawn(async move {
            let name = watched;
            loop {
                tokio::time::sleep(check_every).await;
                let verdict = {
                    let entries = self.entries();
                    let Some(entry) = entries.get(&name) else {
                        return;
                    };
                    let Some(run) = entry.canary.as_ref().filter(|c| c.id == id) else {
                        return;
                    };
                    let stable = run.baseline(&entry.stable);
                    let canary = run.module.stats.snapshot();
                    judge(&run.policy, &stable, &canary, run.started.elapsed())
                };
                if verdict != Verdict::Wait {
                    let _changing = self.changing.lock().await;
                    match self.end_canary_locked(&name, id, verdict).await {
                        Ok(()) => return,
                        // the canary keeps running and is judged again next time
                        Err(e) => tracing::error!(function = %name, error = %e,
                            "wasm: ending the canary failed; trying again"),
                    }
                }
            }
        });
        self.describe(name)
    }

    /// Makes the running canary the stable version.
    pub async fn promote(&'static self, name: &str) -> Result<serde_json::Value, CatalogError> {
        let _changing = self.changing.lock().await;
        let id = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            entry.canary.as_ref().map(|c| c.id).ok_or_else(|| {
                CatalogError::Conflict(format!("function `{name}` has no canary to promote"))
            })?
        };
        self.end_canary_locked(name, id, Verdict::Promote).await?;
        self.describe(name)
    }

    /// Ends canary `id` of `name` by rolling it back or promoting it.
    /// The caller holds `changing`.
    async fn end_canary_locked(
        &self,
        name: &str,
        id: u64,
        verdict: Verdict,
    ) -> Result<(), CatalogError> {
        let (stable, canary, stats) = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            let Some(run) = entry.canary.as_ref().filter(|c| c.id == id) else {
                return Ok(()); // already ended
            };
            let stats = serde_json::json!({
                "stable": run.baseline(&entry.stable).to_json(),
                "canary": run.module.stats.snapshot().to_json(),
            });
            (Arc::clone(&entry.stable), Arc::clone(&run.module), stats)
        };
        let (outcome, reason) = match &verdict {
            Verdict::Promote => {
                self.swap(name, Arc::clone(&canary), None).await?;
                tracing::info!(
                    function = name,
                    version = canary.short_hash(),
                    "wasm: canary promoted"
                );
                ("promoted", None)
            }
            Verdict::RollBack(reason) => {
                self.swap(name, Arc::clone(&stable), None).await?;
                metrics::counter!("weir_function_canary_rollbacks_total", "step" => name.to_string()).increment(1);
                tracing::warn!(function = name, version = canary.short_hash(), %reason, "wasm: canary rolled back");
                ("rolled back", Some(reason.clone()))
            }
            Verdict::Wait => return Ok(()),
        };
        let record = serde_json::json!({
            "version": canary.hash,
            "outcome": outcome,
            "reason": reason,
            "at_unix_ms": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "stats": stats,
        });
        self.update(name, |e| {
            e.canary = None;
            e.last_canary = Some(record);
            if verdict == Verdict::Promote {
                e.previous = Some(std::mem::replace(&mut e.stable, canary));
            }
        })
    }

    fn stable(&self, name: &str) -> Result<Arc<FunctionModule>, CatalogError> {
        let entries = self.entries();
        Ok(Arc::clone(
            &entries
                .get(name)
                .ok_or_else(|| no_such(name, &entries))?
                .stable,
        ))
    }

    fn check_no_canary(&self, name: &str) -> Result<(), CatalogError> {
        let entries = self.entries();
        let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
        match &entry.canary {
            Some(run) => Err(CatalogError::Conflict(format!(
                "a canary ({}) of `{name}` is running: promote or roll it back first",
                run.module.short_hash()
            ))),
            None => Ok(()),
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Entry)) -> Result<(), CatalogError> {
        let mut entries = self.entries();
        let known = known(&entries);
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| CatalogError::NoSuchFunction {
                name: name.to_string(),
                known,
            })?;
        change(entry);
        Ok(())
    }
}

fn known(entries: &HashMap<String, Entry>) -> String {
    let mut names: Vec<String> = entries.keys().map(|n| format!("`{n}`")).collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn no_such(name: &str, entries: &HashMap<String, Entry>) -> CatalogError {
    CatalogError::NoSuchFunction {
        name: name.to_string(),
        known: known(entries),
    }
}

fn version(module: &FunctionModule) -> serde_json::Value {
    serde_json::json!({
        "hash": module.hash,
        "size": module.size,
        "path": module.path.display().to_string(),
        "load_ms": module.load_time.as_secs_f64() * 1000.0,
        "from_cache": module.from_cache,
        "stats": module.stats.snapshot().to_json(),
    })
}

fn describe(name: &str, entry: &Entry) -> serde_json::Value {
    let canary = entry.canary.as_ref().map(|run| {
        serde_json::json!({
            "version": version(&run.module),
            "share": run.policy.share,
            "running_s": run.started.elapsed().as_secs_f64(),
            "promote_after_s": run.policy.promote_after.map(|d| d.as_secs_f64()),
            "stable_since_start": entry.stable.stats.snapshot().since(&run.stable_at_start).to_json(),
            "control": run.control.snapshot().to_json(),
        })
    });
    serde_json::json!({
        "name": name,
        "stable": version(&entry.stable),
        "previous": entry.previous.as_deref().map(version),
        "canary": canary,
        "last_canary": entry.last_canary,
        "kept": kept_versions(&entry.cache_dir),
    })
}

/// The versions kept in the cache directory: (hash, size) of each `<hash>.wasm`.
fn kept_versions(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut kept: Vec<serde_json::Value> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hash = name.strip_suffix(".wasm")?;
            (hash.len() == 64).then(|| {
                serde_json::json!({ "hash": hash, "size": e.metadata().map(|m| m.len()).unwrap_or(0) })
            })
        })
        .collect();
    kept.sort_by(|a, b| a["hash"].as_str().cmp(&b["hash"].as_str()));
    kept
}
