//! The `python` and `node` steps: each batch goes whole to a worker of the
//! shard's pool, which runs the handler and answers with one outcome per
//! event.
//!
//! When a worker dies mid-batch (it crashed, was killed, broke the
//! protocol) it is replaced and the batch runs again; when it dies again,
//! or the batch times out, or a batch handler raises, the batch's events
//! run one by one, so only the events that fail alone are failed: an
//! exception dead-letters its event with the exception's last line; a crash
//! or a timeout fails it for a later retry. After three timeouts in one
//! batch the rest is failed for a later retry, so hanging events hold a
//! lane for at most three timeouts per attempt.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Health, SinkId, Step, StepContext, StepFactory, StepOutput};
use weir_versions::metrics::VersionMetrics;
use weir_versions::split::{CanarySplit, Parts};
use weir_versions::{CanarySpec, VersionStats};

use crate::frame::FrameBuf;
use crate::language::Language;
use crate::options::ProcessOptions;
use crate::pool::Pool;
use crate::protocol::{self, Message};
use crate::version::{HandlerVersion, Loader};
use crate::worker::{WorkerError, WorkerSpec};

/// Validates the options, checks and keeps the handler (a `weir validate`
/// error names its file and line), and registers the step's versions.
pub fn build(
    language: Language,
    config: &ComponentConfig,
    ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: ProcessOptions = config.options()?;
    if options.workers == 0 || options.workers > 64 {
        return Err(config.option_error("workers", "`workers` must be from 1 to 64"));
    }
    if !matches!(options.mode.as_str(), "auto" | "event" | "batch") {
        return Err(config.option_error("mode", "`mode` must be \"auto\", \"event\" or \"batch\""));
    }
    if options.timeout.is_zero() {
        return Err(config.option_error("timeout", "`timeout` must be more than zero"));
    }
    let mut routes = HashMap::new();
    for sink in &options.routes {
        let id = ctx
            .route_to(sink)
            .map_err(|e| config.option_error("routes", e.message))?;
        routes.insert(sink.clone(), id);
    }
    let interpreter =
        interpreter(language, &options).map_err(|e| config.option_error("venv", e))?;
    if options.requirements.is_some() && language == Language::Node {
        return Err(config.option_error(
            "requirements",
            "`requirements` is for python steps; a node step's version includes the package-lock.json beside its handler",
        ));
    }
    let loader = Loader {
        language,
        interpreter: interpreter.clone(),
        handler: options.handler.clone(),
        lock: options.requirements.clone(),
        cache_dir: options.cache_dir(),
    };
    let version = loader
        .load_path(&options.handler)
        .map_err(|e| config.option_error("handler", e))?;
    let shim = language
        .shim_path()
        .map_err(|e| config.option_error("handler", e))?;
    tracing::info!(step = %config.name, language = language.name(), version = %version.short_hash(),
        handler = %options.handler.display(), "function loaded");
    let config_json = serde_json::Value::Object(options.config.clone().into_iter().collect());
    let function = Arc::new(ProcessFunction {
        name: config.name.as_str().into(),
        language,
        interpreter,
        shim,
        mode: options.mode.clone(),
        env: options.env.clone().into_iter().collect(),
        init: protocol::init_message(&config.name, &config_json),
        timeout: options.timeout,
        workers: options.workers,
        routes: Arc::new(routes),
    });
    let versioned = Arc::new(crate::versioned::ProcessVersioned {
        function: Arc::clone(&function),
        loader,
    });
    weir_versions::catalog().register(&config.name, versioned, version.clone());
    Ok(Arc::new(ProcessFactory {
        function,
        stable: version,
        canary: None,
    }))
}

/// The interpreter: `interpreter`, else the `venv`'s, else the default on the `PATH`.
fn interpreter(language: Language, options: &ProcessOptions) -> Result<PathBuf, String> {
    if let Some(path) = &options.interpreter {
        return Ok(path.clone());
    }
    if let Some(venv) = &options.venv {
        if language != Language::Python {
            return Err("`venv` is for python steps".into());
        }
        let python = venv.join("bin").join("python");
        if !python.exists() {
            return Err(format!(
                "`{}` is not a virtual environment (no bin/python); make one with `python3 -m venv {}`",
                venv.display(),
                venv.display()
            ));
        }
        return Ok(python);
    }
    Ok(PathBuf::from(language.default_interpreter()))
}

/// What every version of a step shares.
#[derive(Debug)]
pub struct ProcessFunction {
    /// The step's name.
    pub name: Arc<str>,
    /// The language.
    pub language: Language,
    /// The interpreter.
    pub interpreter: PathBuf,
    /// The worker shim.
    pub shim: PathBuf,
    /// `auto`, `event` or `batch`.
    pub mode: String,
    /// Extra environment for workers.
    pub env: Vec<(String, String)>,
    /// The `init` message.
    pub init: Vec<u8>,
    /// Longest a batch may take.
    pub timeout: Duration,
    /// Workers per shard.
    pub workers: usize,
    /// Sinks the function may route to.
    pub routes: Arc<HashMap<String, SinkId>>,
}

impl ProcessFunction {
    /// The workers of `version`: `INTERPRETER [FLAGS] SHIM KEPT_HANDLER MODE ORIGINAL_PATH`.
    fn spec(&self, version: &HandlerVersion) -> Arc<WorkerSpec> {
        let mut args: Vec<std::ffi::OsString> = self
            .language
            .interpreter_flags()
            .iter()
            .map(Into::into)
            .collect();
        args.extend([
            self.shim.clone().into_os_string(),
            version.kept.clone().into_os_string(),
            self.mode.clone().into(),
            version.original.clone().into_os_string(),
        ]);
        Arc::new(WorkerSpec {
            function: Arc::clone(&self.name),
            version: version.short_hash().to_string(),
            program: self.interpreter.clone(),
            args,
            env: self.env.clone(),
            init: self.init.clone(),
            timeout: self.timeout,
        })
    }
}

/// Builds `python`/`node` step instances for a stable version and, maybe, a canary.
pub struct ProcessFactory {
    /// The step's settings.
    pub function: Arc<ProcessFunction>,
    /// The stable version.
    pub stable: Arc<HandlerVersion>,
    /// A canary beside it.
    pub canary: Option<(Arc<HandlerVersion>, CanarySpec)>,
}

impl StepFactory for ProcessFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(ProcessStep {
            function: Arc::clone(&self.function),
            stable: Slot::new(&self.function, Arc::clone(&self.stable)),
            canary: self.canary.as_ref().map(|(version, spec)| CanarySlot {
                slot: Slot::new(&self.function, Arc::clone(version)),
                split: CanarySplit::new(spec.share),
                control: Arc::clone(&spec.control),
            }),
            frame: FrameBuf::default(),
            parts: Parts::default(),
            trouble: None,
        }))
    }
}

/// One version on one lane: its shard's pool of workers.
struct Slot {
    version: Arc<HandlerVersion>,
    pool: Rc<Pool>,
    metrics: VersionMetrics,
}

impl Slot {
    fn new(function: &ProcessFunction, version: Arc<HandlerVersion>) -> Self {
        let spec = function.spec(&version);
        let pool = Pool::for_shard(&spec, &version.hash, function.workers);
        Slot {
            metrics: VersionMetrics::new(
                &function.name,
                version.short_hash(),
                "weir_function_worker_restarts_total",
            ),
            version,
            pool,
        }
    }
}

/// A canary on one lane.
struct CanarySlot {
    slot: Slot,
    split: CanarySplit,
    control: Arc<VersionStats>,
}

/// One lane's instance of a `python` or `node` step.
pub struct ProcessStep {
    function: Arc<ProcessFunction>,
    stable: Slot,
    canary: Option<CanarySlot>,
    /// The batch frame (kept across batches).
    frame: FrameBuf,
    /// The parts of a batch under a canary (kept across batches).
    parts: Parts,
    /// What went wrong with the workers in the last batch (the health
    /// hook reports it until a batch runs cleanly).
    trouble: Option<String>,
}

/// Why a call did not give outcomes.
enum CallError {
    /// No worker could start.
    Start(String),
    /// The worker died or broke the protocol (it was replaced).
    Crashed(String),
    /// The batch timed out (the worker was killed).
    Timeout(String),
    /// A batch handler raised (the worker is fine).
    Raised(String),
}

/// How often one batch may time out before the rest of it is failed for a
/// later retry.
const MAX_TIMEOUTS_PER_BATCH: usize = 3;

struct Run<'a> {
    function: &'a ProcessFunction,
    frame: &'a mut FrameBuf,
    /// Time spent waiting for a free worker in this batch: not the
    /// function's time, so left out of its per-version counters (a canary
    /// is judged on what its calls cost, not on how busy its pool is).
    waited: Duration,
    /// What went wrong with a worker in this batch.
    trouble: &'a mut Option<String>,
}

impl Run<'_> {
    async fn batch(
        &mut self,
        slot: &Slot,
        input: &mut Vec<Event>,
        output: &mut StepOutput,
        also: Option<&VersionStats>,
    ) {
        if input.is_empty() {
            return;
        }
        let started = Instant::now();
        self.waited = Duration::ZERO;
        let n = input.len() as u64;
        let failed_before = output.failed.len();
        let mut result = self.call(slot, input, output).await;
        if let Err(CallError::Crashed(reason)) = &result {
            *self.trouble = Some(format!(
                "a worker of version {} died mid-batch: {reason}",
                slot.version.short_hash()
            ));
            tracing::warn!(function = %self.function.name, version = %slot.version.short_hash(), %reason,
                events = input.len(), "worker died mid-batch; running the batch again on a new worker");
            result = self.call(slot, input, output).await;
        }
        match &result {
            Err(CallError::Start(reason)) => {
                *self.trouble = Some(format!("no worker could start: {reason}"))
            }
            Err(CallError::Crashed(reason)) => {
                *self.trouble = Some(format!("a worker died again: {reason}"))
            }
            Err(CallError::Timeout(reason)) => {
                *self.trouble = Some(format!("a worker was killed: {reason}"))
            }
            _ => {}
        }
        match result {
            Ok(()) => {}
            Err(CallError::Start(reason)) => self.fail_all(input.drain(..), &reason, output),
            Err(error) => {
                if input.len() == 1 {
                    let event = input.pop().unwrap_or_default();
                    self.fail_one(event, error, output);
                } else {
                    self.isolate(slot, input, output, &error).await;
                }
            }
        }
        let errors = (output.failed.len() - failed_before) as u64;
        let took = started.elapsed().saturating_sub(self.waited);
        slot.metrics
            .batch(&slot.version.stats, also, n, errors, took);
    }

    /// Runs `events` on a worker; on success applies the outcomes (draining
    /// `events`); on failure leaves `events` untouched.
    async fn call(
        &mut self,
        slot: &Slot,
        events: &mut Vec<Event>,
        output: &mut StepOutput,
    ) -> Result<(), CallError> {
        let asked = Instant::now();
        let lease = slot.pool.checkout().await;
        self.waited += asked.elapsed();
        let mut lease = match lease {
            Ok(lease) => lease,
            Err(e) => return Err(CallError::Start(e.to_string())),
        };
        protocol::encode_batch(events, self.frame);
        let reply = match lease.worker().call(self.frame).await {
            Ok(reply) => reply,
            Err(e) => {
                lease.discard();
                slot.metrics.failed_call(&slot.version.stats);
                return Err(match e {
                    WorkerError::Timeout(_) => CallError::Timeout(e.to_string()),
                    WorkerError::Start(r) | WorkerError::Crashed(r) => CallError::Crashed(r),
                });
            }
        };
        let blob = reply.bytes.slice(reply.json_end..);
        let applied = match protocol::parse(&reply.bytes[..reply.json_end]) {
            Ok(Message::Done { o, vl }) => protocol::apply_done(
                o,
                vl,
                &blob,
                events,
                &self.function.routes,
                &self.function.name,
                output,
            ),
            Ok(Message::Failed { message, .. }) => {
                return Err(CallError::Raised(message.into_owned()))
            }
            Ok(other) => Err(format!("the worker answered a batch with {other:?}")),
            Err(e) => Err(e),
        };
        applied.map_err(|reason| {
            lease.discard();
            slot.metrics.failed_call(&slot.version.stats);
            CallError::Crashed(reason)
        })
    }

    /// After a batch failed: runs its events one at a time.
    async fn isolate(
        &mut self,
        slot: &Slot,
        input: &mut Vec<Event>,
        output: &mut StepOutput,
        error: &CallError,
    ) {
        let reason = match error {
            CallError::Start(r)
            | CallError::Crashed(r)
            | CallError::Timeout(r)
            | CallError::Raised(r) => r,
        };
        tracing::warn!(function = %self.function.name, version = %slot.version.short_hash(), events = input.len(),
            %reason, "the batch failed; running its events one by one");
        let mut timeouts = usize::from(matches!(error, CallError::Timeout(_)));
        let mut events = std::mem::take(input);
        let mut one = Vec::with_capacity(1);
        let mut rest = events.drain(..);
        while let Some(event) = rest.next() {
            if timeouts >= MAX_TIMEOUTS_PER_BATCH {
                output.fail_retryable(
                    event,
                    format!(
                    "function `{}`: not run, its batch timed out {timeouts} times (retried later)",
                    self.function.name),
                );
                continue;
            }
            one.push(event);
            match self.call(slot, &mut one, output).await {
                Ok(()) => {}
                Err(CallError::Start(reason)) => {
                    let left: Vec<Event> = one.drain(..).chain(rest.by_ref()).collect();
                    self.fail_all(left.into_iter(), &reason, output);
                    return;
                }
                Err(error) => {
                    timeouts += usize::from(matches!(error, CallError::Timeout(_)));
                    for e in one.drain(..) {
                        self.fail_one(e, error_clone(&error), output);
                    }
                }
            }
        }
    }

    /// Fails one event that failed alone: dead-lettered at once when its
    /// handler raised, else retried later.
    fn fail_one(&self, event: Event, error: CallError, output: &mut StepOutput) {
        let name = &self.function.name;
        match error {
            CallError::Raised(reason) => {
                output.fail(event, format!("function `{name}` raised: {reason}"))
            }
            CallError::Start(reason) => output.fail_retryable(
                event,
                format!("function `{name}` could not start: {reason}"),
            ),
            CallError::Crashed(reason) | CallError::Timeout(reason) => {
                output.fail_retryable(event, format!("function `{name}` failed: {reason}"))
            }
        }
    }

    fn fail_all(&self, events: impl Iterator<Item = Event>, reason: &str, output: &mut StepOutput) {
        for e in events {
            output.fail_retryable(
                e,
                format!(
                    "function `{}` could not start: {reason}",
                    self.function.name
                ),
            );
        }
    }
}

fn error_clone(error: &CallError) -> CallError {
    match error {
        CallError::Start(r) => CallError::Start(r.clone()),
        CallError::Crashed(r) => CallError::Crashed(r.clone()),
        CallError::Timeout(r) => CallError::Timeout(r.clone()),
        CallError::Raised(r) => CallError::Raised(r.clone()),
    }
}

#[async_trait(?Send)]
impl Step for ProcessStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        self.trouble = None;
        let mut run = Run {
            function: &self.function,
            frame: &mut self.frame,
            waited: Duration::ZERO,
            trouble: &mut self.trouble,
        };
        match &self.canary {
            None => run.batch(&self.stable, input, output, None).await,
            Some(c) => {
                let parts = &mut self.parts;
                c.split.split(input, parts);
                run.batch(&self.stable, &mut parts.stable, output, None)
                    .await;
                run.batch(&self.stable, &mut parts.control, output, Some(&c.control))
                    .await;
                run.batch(&c.slot, &mut parts.canary, output, None).await;
            }
        }
    }

    /// Degraded while the last batch met a dead, stuck or unstartable
    /// worker.
    fn health(&self) -> Health {
        match &self.trouble {
            Some(why) => Health::Degraded(why.clone()),
            None => Health::Healthy,
        }
    }

    /// Starts a worker of each version (running `init`), so a handler that
    /// cannot start stops the pipeline at start, or keeps the old version
    /// in a swap.
    async fn open(&mut self) -> weir_engine::Result<()> {
        for slot in std::iter::once(&self.stable).chain(self.canary.as_ref().map(|c| &c.slot)) {
            slot.pool.checkout().await.map_err(|e| {
                weir_engine::Error::user(format!(
                    "function `{}` version {}: {e}",
                    self.function.name,
                    slot.version.short_hash()
                ))
            })?;
        }
        Ok(())
    }
}
