//! The running process's versioned functions (`wasm`, `python` and `node`
//! steps) and what an operator can do to them: list versions, deploy a new
//! one, roll back, run a canary on a share of the keys (judged, then rolled
//! back or promoted automatically), promote it. The catalog knows versions
//! only through [`Version`] and step types only through [`Versioned`], so
//! every step type gets the same deploy, rollback and canary.
//!
//! Every change loads (for WebAssembly: compiles) the new version off the
//! shards (on the blocking pool), then swaps the step's instances through the pipeline's
//! control channel, so each lane changes version between two batches:
//! nothing is lost, and a key's events stay in order (a key stays on one
//! lane, and under a canary on one version). The previous version stays
//! loaded, so a rollback only instantiates it again.
//!
//! One pipeline runs per process, so the catalog is process-wide: versioned
//! steps register here when they are built, and `weir run` attaches the
//! pipeline's control handle.

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use weir_engine::{PipelineControl, StepFactory};

use crate::canary::{judge, CanaryPolicy, Verdict};
use crate::stats::{StatsSnapshot, VersionStats};

/// A loaded, immutable version of a function, named by its content's hash.
pub trait Version: Send + Sync + 'static {
    /// Hex SHA-256 of the version's content: its name.
    fn hash(&self) -> &str;
    /// What the version has done since it was loaded.
    fn stats(&self) -> &VersionStats;
    /// What an operator sees of it besides its hash and counters (size,
    /// path, load time…), as a JSON object.
    fn describe(&self) -> serde_json::Value;
    /// The concrete version, for its step type's factory.
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The first 12 hex digits of a version's hash, as logs show it.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A canary as a step's factory runs it.
#[derive(Clone)]
pub struct CanarySpec {
    /// The canary version.
    pub version: Arc<dyn Version>,
    /// The share of keys (0.0–1.0) it gets.
    pub share: f64,
    /// The counters of its control group: as many keys of the stable
    /// version, run in sub-batches of the same size as the canary's.
    pub control: Arc<VersionStats>,
}

/// One versioned step as the catalog drives it: its type's way to load a
/// version and to build the step's instances for given versions.
pub trait Versioned: Send + Sync {
    /// The step type (`wasm`, `python`, `node`), for logs.
    fn kind(&self) -> &'static str;
    /// Loads a version (called on the blocking pool).
    fn load(&self, source: VersionSource) -> Result<Arc<dyn Version>, String>;
    /// A factory running `stable`, and `canary` beside it if given.
    fn factory(&self, stable: Arc<dyn Version>, canary: Option<CanarySpec>)
        -> Arc<dyn StepFactory>;
    /// The versions kept on disk for a rollback, as JSON.
    fn kept(&self) -> Vec<serde_json::Value>;
}

/// Why an operation on a function was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No versioned step has this name.
    #[error("no function step named `{name}` (function steps: {known})")]
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
    #[error("{0}")]
    Load(String),
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
pub enum VersionSource {
    /// A file on this machine (a component, a handler).
    Path(PathBuf),
    /// A file's bytes (an upload).
    Bytes(Vec<u8>),
}

/// One versioned step's versions.
struct Entry {
    step: Arc<dyn Versioned>,
    stable: Arc<dyn Version>,
    previous: Option<Arc<dyn Version>>,
    canary: Option<CanaryRun>,
    /// How the last canary ended.
    last_canary: Option<serde_json::Value>,
}

/// A canary in progress.
struct CanaryRun {
    id: u64,
    module: Arc<dyn Version>,
    policy: CanaryPolicy,
    started: Instant,
    stable_at_start: StatsSnapshot,
    /// The canary's counters when its current share was set.
    canary_at_start: StatsSnapshot,
    /// The stable version's control group (as many keys as the canary,
    /// in sub-batches of the same size); empty when the share is over 0.5.
    control: Arc<VersionStats>,
}

impl CanaryRun {
    /// What the canary is judged against: its control group, or (share over
    /// 0.5, no control group) all the stable version did since it started.
    fn baseline(&self, stable: &dyn Version) -> StatsSnapshot {
        let control = self.control.snapshot();
        if self.policy.share <= 0.5 {
            control
        } else {
            stable.stats().snapshot().since(&self.stable_at_start)
        }
    }

    /// What the canary did since its current share was set.
    fn canary_stats(&self) -> StatsSnapshot {
        self.module.stats().snapshot().since(&self.canary_at_start)
    }

    fn spec(&self) -> CanarySpec {
        CanarySpec {
            version: Arc::clone(&self.module),
            share: self.policy.share,
            control: Arc::clone(&self.control),
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

    /// Records a versioned step as built from the pipeline file (a
    /// rebuilt pipeline replaces its entries).
    pub fn register(&self, name: &str, step: Arc<dyn Versioned>, stable: Arc<dyn Version>) {
        self.entries().insert(
            name.to_string(),
            Entry {
                step,
                stable,
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

    /// Whether no versioned step is registered.
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
        source: VersionSource,
    ) -> Result<Arc<dyn Version>, CatalogError> {
        let step = self.step(name)?;
        tokio::task::spawn_blocking(move || step.load(source))
            .await
            .map_err(|e| CatalogError::Swap(format!("loading panicked: {e}")))?
            .map_err(CatalogError::Load)
    }

    fn step(&self, name: &str) -> Result<Arc<dyn Versioned>, CatalogError> {
        let entries = self.entries();
        Ok(Arc::clone(
            &entries
                .get(name)
                .ok_or_else(|| no_such(name, &entries))?
                .step,
        ))
    }

    /// Swaps the step's instances to `stable` (and `canary`, if any).
    async fn swap(
        &self,
        name: &str,
        stable: Arc<dyn Version>,
        canary: Option<CanarySpec>,
    ) -> Result<(), CatalogError> {
        let factory = self.step(name)?.factory(stable, canary);
        let control = self.control()?;
        let Err(e) = control.swap_step(name, factory).await else {
            return Ok(());
        };
        // some lanes may have swapped (each opens its new instance on its
        // own): put every lane back on what the catalog says runs
        let current = {
            let entries = self.entries();
            entries.get(name).map(|e| {
                e.step.factory(
                    Arc::clone(&e.stable),
                    e.canary.as_ref().map(CanaryRun::spec),
                )
            })
        };
        if let Some(current) = current {
            if let Err(again) = control.swap_step(name, current).await {
                tracing::error!(function = name, error = %again,
                    "functions: restoring the running versions after a failed swap failed too");
            }
        }
        Err(CatalogError::Swap(e.to_string()))
    }

    /// Makes the version from `source` the function's only version; the
    /// one it replaces is kept for a rollback.
    pub async fn deploy(
        &self,
        name: &str,
        source: VersionSource,
    ) -> Result<serde_json::Value, CatalogError> {
        let _changing = self.changing.lock().await;
        self.check_no_canary(name)?;
        let module = self.load(name, source).await?;
        let current = self.stable(name)?;
        if current.hash() == module.hash() {
            return self.describe(name);
        }
        self.swap(name, Arc::clone(&module), None).await?;
        tracing::info!(
            function = name,
            from = short(current.hash()),
            to = short(module.hash()),
            "functions: deployed"
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
            to = short(previous.hash()),
            "functions: rolled back"
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
        source: VersionSource,
        policy: CanaryPolicy,
    ) -> Result<serde_json::Value, CatalogError> {
        policy.validate().map_err(CatalogError::BadRequest)?;
        let _changing = self.changing.lock().await;
        self.check_no_canary(name)?;
        let module = self.load(name, source).await?;
        let stable = self.stable(name)?;
        if stable.hash() == module.hash() {
            return Err(CatalogError::Conflict(format!(
                "version {} of `{name}` is already the stable version",
                short(module.hash())
            )));
        }
        let control = Arc::new(VersionStats::default());
        self.swap(
            name,
            Arc::clone(&stable),
            Some(CanarySpec {
                version: Arc::clone(&module),
                share: policy.share,
                control: Arc::clone(&control),
            }),
        )
        .await?;
        let id = self
            .next_canary
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let check_every = policy.check_every;
        tracing::info!(
            function = name,
            stable = short(stable.hash()),
            canary = short(module.hash()),
            share = policy.share,
            "functions: canary started"
        );
        self.update(name, |e| {
            e.canary = Some(CanaryRun {
                id,
                module,
                policy,
                started: Instant::now(),
                stable_at_start: e.stable.stats().snapshot(),
                canary_at_start: StatsSnapshot::default(),
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
                    let stable = run.baseline(entry.stable.as_ref());
                    let canary = run.canary_stats();
                    judge(&run.policy, &stable, &canary, run.started.elapsed())
                };
                if verdict != Verdict::Wait {
                    let _changing = self.changing.lock().await;
                    match self.end_canary_locked(&name, id, verdict).await {
                        Ok(()) => return,
                        // the canary keeps running and is judged again next time
                        Err(e) => tracing::error!(function = %name, error = %e,
                            "functions: ending the canary failed; trying again"),
                    }
                }
            }
        });
        self.describe(name)
    }

    /// Gives the running canary `share` of the keys (its control group
    /// moves with it). Both sides are judged afresh from now on, so the
    /// verdict compares the same keys over the same time.
    pub async fn set_canary_share(
        &'static self,
        name: &str,
        share: f64,
    ) -> Result<serde_json::Value, CatalogError> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(CatalogError::BadRequest(format!(
                "share must be more than 0 and at most 1, got {share}"
            )));
        }
        let _changing = self.changing.lock().await;
        let (stable, canary) = {
            let entries = self.entries();
            let entry = entries.get(name).ok_or_else(|| no_such(name, &entries))?;
            let run = entry.canary.as_ref().ok_or_else(|| {
                CatalogError::Conflict(format!(
                    "function `{name}` has no canary whose share to set"
                ))
            })?;
            (Arc::clone(&entry.stable), Arc::clone(&run.module))
        };
        let control = Arc::new(VersionStats::default());
        self.swap(
            name,
            Arc::clone(&stable),
            Some(CanarySpec {
                version: Arc::clone(&canary),
                share,
                control: Arc::clone(&control),
            }),
        )
        .await?;
        tracing::info!(
            function = name,
            canary = short(canary.hash()),
            share,
            "functions: canary share set"
        );
        self.update(name, |e| {
            let stable_now = e.stable.stats().snapshot();
            if let Some(run) = e.canary.as_mut() {
                run.policy.share = share;
                run.control = control;
                run.stable_at_start = stable_now;
                run.canary_at_start = run.module.stats().snapshot();
            }
        })?;
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
                "stable": run.baseline(entry.stable.as_ref()).to_json(),
                "canary": run.canary_stats().to_json(),
            });
            (Arc::clone(&entry.stable), Arc::clone(&run.module), stats)
        };
        let (outcome, reason) = match &verdict {
            Verdict::Promote => {
                self.swap(name, Arc::clone(&canary), None).await?;
                tracing::info!(
                    function = name,
                    version = short(canary.hash()),
                    "functions: canary promoted"
                );
                ("promoted", None)
            }
            Verdict::RollBack(reason) => {
                self.swap(name, Arc::clone(&stable), None).await?;
                metrics::counter!("weir_function_canary_rollbacks_total", "step" => name.to_string()).increment(1);
                tracing::warn!(function = name, version = short(canary.hash()), %reason, "functions: canary rolled back");
                ("rolled back", Some(reason.clone()))
            }
            Verdict::Wait => return Ok(()),
        };
        let record = serde_json::json!({
            "version": canary.hash(),
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

    fn stable(&self, name: &str) -> Result<Arc<dyn Version>, CatalogError> {
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
                short(run.module.hash())
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

fn version(version: &dyn Version) -> serde_json::Value {
    let mut described = version.describe();
    if let Some(fields) = described.as_object_mut() {
        fields.insert("hash".into(), version.hash().into());
        fields.insert("stats".into(), version.stats().snapshot().to_json());
    }
    described
}

fn describe(name: &str, entry: &Entry) -> serde_json::Value {
    let canary = entry.canary.as_ref().map(|run| {
        serde_json::json!({
            "version": version(run.module.as_ref()),
            "share": run.policy.share,
            "running_s": run.started.elapsed().as_secs_f64(),
            "promote_after_s": run.policy.promote_after.map(|d| d.as_secs_f64()),
            "stable_since_start": entry.stable.stats().snapshot().since(&run.stable_at_start).to_json(),
            "control": run.control.snapshot().to_json(),
        })
    });
    serde_json::json!({
        "name": name,
        "type": entry.step.kind(),
        "stable": version(entry.stable.as_ref()),
        "previous": entry.previous.as_deref().map(version),
        "canary": canary,
        "last_canary": entry.last_canary,
        "kept": entry.step.kept(),
    })
}
