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
use metrics::{counter, histogram, Counter, Histogram};
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, SinkId, Step, StepContext, StepFactory, StepOutput};

use crate::convert::{event_params, header_names, header_params, Applier};
use crate::instance::{CallLimits, Instance};
use crate::module::{self, FunctionModule};
use crate::options::{parse_size, WasmOptions};

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
            .map_err(|e| config.option_error("routes", e))?;
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
    Ok(Arc::new(WasmFactory {
        function: WasmFunction {
            name: config.name.as_str().into(),
            config: options.config_pairs(),
            routes: Arc::new(routes),
            limits: CallLimits {
                deadline: options.deadline,
                max_memory,
                fuel: options.fuel,
            },
        },
        module,
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

/// Builds `wasm` step instances of one version.
pub struct WasmFactory {
    /// The step's settings.
    pub function: WasmFunction,
    /// The version.
    pub module: Arc<FunctionModule>,
}

impl StepFactory for WasmFactory {
    fn build(&self) -> Result<Box<dyn weir_engine::Step>, String> {
        Ok(Box::new(WasmStep::new(
            self.function.clone(),
            self.module.clone(),
        )))
    }
}

/// Per-version metrics of a step.
struct VersionMetrics {
    events: Counter,
    errors: Counter,
    traps: Counter,
    seconds: Histogram,
}

impl VersionMetrics {
    fn new(step: &str, version: &str) -> Self {
        let (s, v) = (step.to_string(), version.to_string());
        VersionMetrics {
            events: counter!("weir_function_events_total", "step" => s.clone(), "version" => v.clone()),
            errors: counter!("weir_function_errors_total", "step" => s.clone(), "version" => v.clone()),
            traps: counter!("weir_function_traps_total", "step" => s.clone(), "version" => v.clone()),
            seconds: histogram!("weir_function_batch_seconds", "step" => s, "version" => v),
        }
    }
}

/// One lane's instance of a `wasm` step.
pub struct WasmStep {
    function: WasmFunction,
    module: Arc<FunctionModule>,
    /// `None` before `open` and after a failed call, until rebuilt.
    instance: Option<Instance>,
    applier: Applier,
    metrics: VersionMetrics,
}

impl WasmStep {
    /// An instance of `module`, started by `open` (or by the first batch).
    pub fn new(function: WasmFunction, module: Arc<FunctionModule>) -> Self {
        let metrics = VersionMetrics::new(&function.name, module.short_hash());
        WasmStep {
            function,
            module,
            instance: None,
            applier: Applier::default(),
            metrics,
        }
    }

    async fn start(&self) -> Result<Instance, String> {
        Instance::start(
            &self.module,
            &self.function.name,
            &self.function.config,
            self.function.limits,
        )
        .await
    }

    /// Calls the guest with `events`; on success applies the outcomes and
    /// returns `Ok`; on failure drops the instance and returns the reason,
    /// leaving `events` untouched.
    async fn call(
        &mut self,
        events: &mut Vec<Event>,
        output: &mut StepOutput,
    ) -> Result<(), String> {
        if self.instance.is_none() {
            self.instance = Some(self.start().await?);
        }
        let Some(instance) = self.instance.as_mut() else {
            return Err("no instance".into());
        };
        let result = {
            let names = header_names(events);
            let headers = header_params(events, &names);
            let params = event_params(events, &headers);
            instance.process(&params).await
        };
        match result {
            Ok(outcomes) => {
                let failed_before = output.failed.len();
                let misuse = self
                    .applier
                    .apply(outcomes, events, &self.function.routes, output);
                self.metrics
                    .errors
                    .increment((output.failed.len() - failed_before) as u64);
                if misuse.bad_index > 0 {
                    tracing::warn!(step = %self.function.name, version = %self.module.short_hash(),
                        outcomes = misuse.bad_index, "wasm: outcomes named inputs past the batch's end; ignored");
                }
                Ok(())
            }
            Err(reason) => {
                self.instance = None;
                self.metrics.traps.increment(1);
                Err(reason)
            }
        }
    }

    /// After a batch failed: runs its events one at a time.
    async fn isolate(&mut self, input: &mut Vec<Event>, output: &mut StepOutput, reason: &str) {
        tracing::warn!(step = %self.function.name, version = %self.module.short_hash(), events = input.len(),
            %reason, "wasm: the batch failed; running its events one by one");
        let mut timeouts = usize::from(is_timeout(reason));
        let mut events: Vec<Event> = input.drain(..).collect();
        let mut one = Vec::with_capacity(1);
        let mut rest = events.drain(..);
        while let Some(event) = rest.next() {
            one.push(event);
            if let Err(reason) = self.call(&mut one, output).await {
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
        if input.is_empty() {
            return;
        }
        let started = Instant::now();
        let n = input.len() as u64;
        if let Err(reason) = self.call(input, output).await {
            if input.len() == 1 {
                let event = input.pop().unwrap_or_default();
                output.fail_retryable(
                    event,
                    format!("function `{}` failed: {reason}", self.function.name),
                );
            } else {
                self.isolate(input, output, &reason).await;
            }
        }
        self.metrics.events.increment(n);
        self.metrics.seconds.record(started.elapsed().as_secs_f64());
    }

    async fn open(&mut self) -> Result<(), String> {
        self.instance = Some(self.start().await.map_err(|e| {
            format!(
                "function `{}` version {}: {e}",
                self.function.name,
                self.module.short_hash()
            )
        })?);
        Ok(())
    }
}
