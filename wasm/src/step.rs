//! The `wasm` step: a function version run in one guest instance per lane.
//!
//! One call per batch. When a call fails (a trap such as a panic, the
//! deadline, the memory cap, the fuel), the instance is rebuilt and the
//! batch's events are run one by one on fresh instances, so only the
//! events that fail again are failed (retryable: the engine retries them
//! with backoff, then dead-letters them with the reason) and the rest go on.
//! Once a batch has hit the deadline three times, the events it has not
//! run yet are failed for a later retry, so looping events hold a lane for
//! at most three deadlines per attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, SinkId, Step, StepContext, StepFactory, StepOutput};

use crate::bindings::weir::function::types::Batch;
use crate::convert::{event_params, header_names, header_params, Applier};
use crate::instance::{CallLimits, Instance};
use crate::module::{self, FunctionModule};
use crate::options::{parse_size, WasmOptions};
use weir_versions::metrics::VersionMetrics;
use weir_versions::split::{CanarySplit, Parts};
use weir_versions::{CanarySpec, VersionStats};

/// Validates the options and loads (compiles or reads from the cache) the module.
pub fn build(
    config: &ComponentConfig,
    ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: WasmOptions = config.options()?;
    let max_memory =
        parse_size(&options.max_memory).map_err(|e| config.option_error("max_memory", e))?;
    let mut routes = HashMap::new();
    for sink in &options.routes {
        let id = ctx
            .route_to(sink)
            .map_err(|e| config.option_error("routes", e.message))?;
        routes.insert(sink.clone(), id);
    }
    let module = module::load(
        &options.module,
        &options.cache_dir(),
        options.fuel.is_some(),
    )
    .map_err(|e| config.option_error("module", e.to_string()))?;
    tracing::info!(step = %config.name, version = %module.short_hash(), size = module.size,
        load_ms = module.load_time.as_millis() as u64, cached = module.from_cache, "wasm: function loaded");
    let function = WasmFunction {
        name: config.name.as_str().into(),
        config: options.config_pairs(),
        routes: Arc::new(routes),
        limits: CallLimits {
            deadline: options.deadline,
            max_memory,
            fuel: options.fuel,
        },
    };
    let versioned = Arc::new(crate::WasmVersioned {
        function: function.clone(),
        cache_dir: options.cache_dir(),
        fuel: options.fuel.is_some(),
    });
    weir_versions::catalog().register(&config.name, versioned, module.clone());
    Ok(Arc::new(WasmFactory {
        canary: None,
        function,
        stable: module,
    }))
}

/// What every version of a step shares: its name, config, routes, limits.
#[derive(Clone)]
pub struct WasmFunction {
    /// The step's name.
    pub name: Arc<str>,
    /// What `init` receives.
    pub config: Vec<(String, String)>,
    /// Sinks the function may route to.
    pub routes: Arc<HashMap<String, SinkId>>,
    /// Deadline, memory cap, fuel.
    pub limits: CallLimits,
}

/// Builds `wasm` step instances: one version, or a stable version and a
/// canary that gets a share of the keys.
pub struct WasmFactory {
    /// The step's settings.
    pub function: WasmFunction,
    /// The stable version.
    pub stable: Arc<FunctionModule>,
    /// A canary version, the share of keys it gets, and the counters of
    /// its control group: as many keys of the stable version, run in
    /// sub-batches of the same size as the canary's, so per-call costs
    /// weigh the same on both sides of the comparison.
    pub canary: Option<(Arc<FunctionModule>, CanarySpec)>,
}

impl StepFactory for WasmFactory {
    fn build(&self) -> Result<Box<dyn weir_engine::Step>, String> {
        Ok(Box::new(WasmStep {
            function: self.function.clone(),
            stable: Slot::new(&self.function.name, self.stable.clone()),
            canary: self.canary.as_ref().map(|(m, spec)| CanarySlot {
                slot: Slot::new(&self.function.name, m.clone()),
                split: CanarySplit::new(spec.share),
                control: Arc::clone(&spec.control),
            }),
            applier: Applier::default(),
            data: Vec::new(),
            parts: Parts::default(),
        }))
    }
}

/// One version on one lane: its module, its live instance, its metrics.
struct Slot {
    module: Arc<FunctionModule>,
    /// `None` before `open` and after a failed call, until rebuilt.
    instance: Option<Instance>,
    metrics: VersionMetrics,
}

impl Slot {
    fn new(step: &str, module: Arc<FunctionModule>) -> Self {
        let metrics = VersionMetrics::new(step, module.short_hash(), "weir_function_traps_total");
        Slot {
            module,
            instance: None,
            metrics,
        }
    }

    async fn open(&mut self, function: &WasmFunction) -> Result<(), String> {
        self.instance = Some(start(function, &self.module).await.map_err(|e| {
            format!(
                "function `{}` version {}: {e}",
                function.name,
                self.module.short_hash()
            )
        })?);
        Ok(())
    }
}

async fn start(function: &WasmFunction, module: &FunctionModule) -> Result<Instance, String> {
    Instance::start(module, &function.name, &function.config, function.limits).await
}

/// One lane's instance of a `wasm` step.
pub struct WasmStep {
    function: WasmFunction,
    stable: Slot,
    /// The canary, if one runs.
    canary: Option<CanarySlot>,
    applier: Applier,
    /// The batch's keys and values, lent to the guest (kept across batches).
    data: Vec<u8>,
    /// The stable, control and canary parts of a batch (kept across batches).
    parts: Parts,
}

/// A canary on one lane.
struct CanarySlot {
    slot: Slot,
    /// Which keys go to the canary and to the control group.
    split: CanarySplit,
    /// The control group's counters.
    control: Arc<VersionStats>,
}

/// What running a batch on a version needs besides the version.
struct Run<'a> {
    function: &'a WasmFunction,
    applier: &'a mut Applier,
    data: &'a mut Vec<u8>,
}

impl Run<'_> {
    /// Runs `input` on `slot`, isolating failures; records its metrics.
    async fn batch(
        &mut self,
        slot: &mut Slot,
        input: &mut Vec<Event>,
        output: &mut StepOutput,
        also: Option<&VersionStats>,
    ) {
        if input.is_empty() {
            return;
        }
        let started = Instant::now();
        let n = input.len() as u64;
        let failed_before = output.failed.len();
        match self.call(slot, input, output).await {
            Ok(()) => {}
            Err(CallError::Start(reason)) => {
                fail_all(&self.function.name, input.drain(..), &reason, output)
            }
            Err(CallError::Call(reason)) => {
                if input.len() == 1 {
                    let event = input.pop().unwrap_or_default();
                    output.fail_retryable(
                        event,
                        format!("function `{}` failed: {reason}", self.function.name),
                    );
                } else {
                    self.isolate(slot, input, output, &reason).await;
                }
            }
        }
        let errors = (output.failed.len() - failed_before) as u64;
        slot.metrics
            .batch(&slot.module.stats, also, n, errors, started.elapsed());
    }

    /// Calls the guest with `events`; on success applies the outcomes and
    /// returns `Ok`; on failure drops the instance and returns the reason,
    /// leaving `events` untouched.
    async fn call(
        &mut self,
        slot: &mut Slot,
        events: &mut Vec<Event>,
        output: &mut StepOutput,
    ) -> Result<(), CallError> {
        if slot.instance.is_none() {
            slot.instance = Some(
                start(self.function, &slot.module)
                    .await
                    .map_err(CallError::Start)?,
            );
        }
        let Some(instance) = slot.instance.as_mut() else {
            return Err(CallError::Start("no instance".into()));
        };
        let result = {
            let names = header_names(events);
            let headers = header_params(events, &names);
            let params = event_params(events, &headers, self.data);
            instance
                .process(Batch {
                    data: self.data,
                    events: &params,
                })
                .await
        };
        match result {
            Ok(outcomes) => {
                let misuse = self
                    .applier
                    .apply(outcomes, events, &self.function.routes, output);
                if misuse.bad_span > 0 || misuse.bad_index > 0 || misuse.conflicting > 0 {
                    tracing::warn!(step = %self.function.name, version = %slot.module.short_hash(),
                        bad_spans = misuse.bad_span, bad_indexes = misuse.bad_index,
                        conflicting = misuse.conflicting,
                        "wasm: the function returned outcomes that do not fit its batch");
                }
                Ok(())
            }
            Err(reason) => {
                slot.instance = None;
                slot.metrics.failed_call(&slot.module.stats);
                Err(CallError::Call(reason))
            }
        }
    }

    /// After a batch failed: runs its events one at a time.
    async fn isolate(
        &mut self,
        slot: &mut Slot,
        input: &mut Vec<Event>,
        output: &mut StepOutput,
        reason: &str,
    ) {
        tracing::warn!(step = %self.function.name, version = %slot.module.short_hash(), events = input.len(),
            %reason, "wasm: the batch failed; running its events one by one");
        let mut timeouts = usize::from(is_timeout(reason));
        let mut events: Vec<Event> = std::mem::take(input);
        let mut one = Vec::with_capacity(1);
        let mut rest = events.drain(..);
        while let Some(event) = rest.next() {
            one.push(event);
            let reason = match self.call(slot, &mut one, output).await {
                Ok(()) => continue,
                Err(CallError::Start(reason)) => {
                    // no instance: nothing more can run in this batch
                    fail_all(
                        &self.function.name,
                        one.drain(..).chain(rest.by_ref()),
                        &reason,
                        output,
                    );
                    return;
                }
                Err(CallError::Call(reason)) => reason,
            };
            {
                for e in one.drain(..) {
                    output.fail_retryable(
                        e,
                        format!("function `{}` failed: {reason}", self.function.name),
                    );
                }
                timeouts += usize::from(is_timeout(&reason));
                if timeouts >= MAX_TIMEOUTS_PER_BATCH {
                    for e in rest.by_ref() {
                        output.fail_retryable(e, format!(
                            "function `{}`: not run, its batch hit the deadline {timeouts} times (retried later)",
                            self.function.name));
                    }
                }
            }
        }
    }
}

/// Why a call did not happen or failed.
enum CallError {
    /// No instance could be started (instantiation or `init` failed).
    Start(String),
    /// The call trapped; the instance was dropped.
    Call(String),
}

/// Fails `events` for a later retry because the function could not start.
fn fail_all(
    function: &str,
    events: impl Iterator<Item = Event>,
    reason: &str,
    output: &mut StepOutput,
) {
    for e in events {
        output.fail_retryable(
            e,
            format!("function `{function}` could not start: {reason}"),
        );
    }
}

/// How often one batch may hit the deadline before the rest of it is
/// failed for a later retry, so a batch of looping events holds its lane
/// for at most this many deadlines per attempt.
const MAX_TIMEOUTS_PER_BATCH: usize = 3;

fn is_timeout(reason: &str) -> bool {
    reason.starts_with("deadline")
}

#[async_trait(?Send)]
impl Step for WasmStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        let mut run = Run {
            function: &self.function,
            applier: &mut self.applier,
            data: &mut self.data,
        };
        match &mut self.canary {
            None => run.batch(&mut self.stable, input, output, None).await,
            Some(c) => {
                let parts = &mut self.parts;
                c.split.split(input, parts);
                run.batch(&mut self.stable, &mut parts.stable, output, None)
                    .await;
                run.batch(
                    &mut self.stable,
                    &mut parts.control,
                    output,
                    Some(&c.control),
                )
                .await;
                run.batch(&mut c.slot, &mut parts.canary, output, None)
                    .await;
            }
        }
    }

    async fn open(&mut self) -> weir_engine::Result<()> {
        self.stable
            .open(&self.function)
            .await
            .map_err(weir_engine::Error::user)?;
        if let Some(c) = &mut self.canary {
            c.slot
                .open(&self.function)
                .await
                .map_err(weir_engine::Error::user)?;
        }
        Ok(())
    }
}
