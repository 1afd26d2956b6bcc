//! Builds a running pipeline from its configuration and runs it: sink tasks
//! and source tasks on the I/O runtime, one pinned thread per shard.

use std::sync::Arc;
use std::time::Instant;

use weir_config::{BatchSettings, Diagnostics, PipelineConfig};

use crate::batch::{Batch, SinkBatch};
use crate::chain::StepSpec;
use crate::checkpoint_store::CheckpointStore;
use crate::control::{ControlReceivers, PipelineControl};
use crate::error::{Error, Result};
use crate::latency::LatencyHistogram;
use crate::outputs::Outputs;
use crate::queue::{bounded, QueueLimits, QueueSender};
use crate::registry::{Registry, StepContext};
use crate::shard::{self, ShardPlan};
use crate::shutdown::ShutdownTrigger;
use crate::sink::{Sink, SinkRunner};
use crate::source::{Source, SourceContext, SourceContextParts};
use crate::step::SinkId;
use crate::telemetry::{QueueMetrics, StepMetrics};

struct BuiltSource {
    name: Arc<str>,
    source: Box<dyn Source>,
    batch: BatchSettings,
    store: CheckpointStore,
}

struct BuiltSink {
    name: Arc<str>,
    sink: Box<dyn Sink>,
    batch: BatchSettings,
}

/// A pipeline ready to run.
pub struct Pipeline {
    config: PipelineConfig,
    sources: Vec<BuiltSource>,
    sinks: Vec<BuiltSink>,
    steps: Vec<StepSpec>,
    default_sinks: Vec<SinkId>,
    dead_letter: Option<SinkId>,
    latency: Arc<LatencyHistogram>,
    /// The shards' ends of the control handle, once [`Pipeline::control`] made one.
    control: Option<ControlReceivers>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Whether every dispatched batch was delivered before the end.
    pub drained: bool,
}

impl Pipeline {
    /// Builds every source, step and sink, collecting all errors.
    pub fn build(config: &PipelineConfig, registry: &Registry) -> Result<Pipeline, Diagnostics> {
        let mut errors = Diagnostics::default();
        let sink_names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        let mut sources = Vec::new();
        for c in &config.sources {
            let store =
                CheckpointStore::open(&config.checkpoint.dir, &config.pipeline.name, &c.name);
            match (registry.build_source(c), store) {
                (Ok(source), Ok(store)) => sources.push(BuiltSource {
                    name: c.name.as_str().into(),
                    source,
                    batch: c.batch.clone(),
                    store,
                }),
                (Err(d), _) => errors.push(d),
                (_, Err(e)) => errors.push(c.error(e.message)),
            }
        }
        let mut steps = Vec::new();
        let mut ctx = StepContext::new(&sink_names);
        for c in &config.steps {
            match registry.build_step(c, &mut ctx) {
                Ok(factory) => {
                    // build one instance now so that errors show before anything runs
                    if let Err(e) = factory.build() {
                        errors.push(c.error(e));
                        continue;
                    }
                    steps.push(StepSpec {
                        name: c.name.as_str().into(),
                        factory,
                        metrics: StepMetrics::new(&c.name),
                    });
                }
                Err(d) => errors.push(d),
            }
        }
        let mut sinks = Vec::new();
        for c in &config.sinks {
            match registry.build_sink(c) {
                Ok(sink) => sinks.push(BuiltSink {
                    name: c.name.as_str().into(),
                    sink,
                    batch: c.batch.clone(),
                }),
                Err(d) => errors.push(d),
            }
        }
        let dead_letter = config
            .dead_letter
            .as_ref()
            .and_then(|d| sink_names.iter().position(|s| *s == d.sink))
            .map(|i| i as SinkId);
        let routed = ctx.routed().to_vec();
        let default_sinks: Vec<SinkId> = (0..sink_names.len() as SinkId)
            .filter(|id| !routed.contains(id) && Some(*id) != dead_letter)
            .collect();
        if default_sinks.is_empty() && !sink_names.is_empty() && errors.is_empty() {
            let at = config.sinks.first().map(|c| c.location());
            let msg = "no sink receives the pipeline's output: every sink is a route target or the dead-letter sink, \
                       so events no rule matches would be lost; add a sink for them (type = \"blackhole\" to discard them on purpose)";
            errors.push(match at {
                Some(at) => weir_config::Diagnostic::at(at, msg),
                None => weir_config::Diagnostic::new(msg),
            });
        }
        for (what, n) in [
            ("sources", config.sources.len()),
            ("sinks", config.sinks.len()),
        ] {
            if n > u16::MAX as usize {
                errors.push(weir_config::Diagnostic::new(format!(
                    "{n} {what}; at most {} are supported",
                    u16::MAX
                )));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Pipeline {
            config: config.clone(),
            sources,
            sinks,
            steps,
            default_sinks,
            dead_letter,
            latency: Arc::new(LatencyHistogram::new()),
            control: None,
        })
    }

    /// A handle to steer the shards once the pipeline runs: swap a step,
    /// pause, resume, barriers (see [`crate::control`]). Call before
    /// [`run`](Self::run); calling again replaces the earlier handle.
    pub fn control(&mut self) -> PipelineControl {
        let steps: Arc<[Arc<str>]> = self.steps.iter().map(|s| Arc::clone(&s.name)).collect();
        let (control, receivers) = PipelineControl::new(self.shard_count(), steps);
        self.control = Some(receivers);
        control
    }

    /// End-to-end latency of every delivered batch.
    pub fn latency(&self) -> Arc<LatencyHistogram> {
        Arc::clone(&self.latency)
    }

    /// Number of shards this pipeline will run.
    pub fn shard_count(&self) -> usize {
        self.config
            .pipeline
            .shards
            .unwrap_or_else(|| shard::available_cores().len())
            .max(1)
    }

    /// Names of the sinks that receive the last step's output.
    pub fn default_sink_names(&self) -> Vec<String> {
        self.default_sinks
            .iter()
            .map(|&i| self.sinks[i as usize].name.to_string())
            .collect()
    }

    /// Runs until every source finished, or until `shutdown` fires and the
    /// pipeline drained. Must be called on a multi-thread tokio runtime.
    pub async fn run(mut self, shutdown: ShutdownTrigger) -> Result<RunReport> {
        let cfg = &self.config;
        let shards = self.shard_count();
        let cores = shard::available_cores();
        let q = &cfg.queues;

        // sinks
        let mut sink_senders: Vec<QueueSender<SinkBatch>> = Vec::new();
        let mut sink_receivers = Vec::new();
        for s in &self.sinks {
            let (tx, rx) = bounded(
                QueueLimits {
                    max_events: q.sink_max_events,
                    max_bytes: q.sink_max_bytes,
                },
                QueueMetrics::new(&format!("sink-{}", s.name)),
            );
            sink_senders.push(tx);
            sink_receivers.push(rx);
        }
        let source_names: Arc<[Arc<str>]> =
            self.sources.iter().map(|s| Arc::clone(&s.name)).collect();
        let mut sink_tasks = tokio::task::JoinSet::new();
        for (i, (s, rx)) in self.sinks.into_iter().zip(sink_receivers).enumerate() {
            let dead_letter = match self.dead_letter {
                Some(d) if d as usize != i => Some(sink_senders[d as usize].clone()),
                _ => None,
            };
            // a sink gathering as much as its queue holds would keep the permits
            // of everything it gathered and wait out max_wait on every write
            let mut batch = s.batch;
            let (half_events, half_bytes) = (
                (q.sink_max_events / 2).max(1),
                (q.sink_max_bytes / 2).max(1),
            );
            if batch.max_events > half_events || batch.max_bytes > half_bytes {
                tracing::warn!(sink = %s.name, max_events = half_events, max_bytes = half_bytes,
                    "sink batch limits lowered to half its queue (queues.sink_max_events / sink_max_bytes)");
                batch.max_events = batch.max_events.min(half_events);
                batch.max_bytes = batch.max_bytes.min(half_bytes);
            }
            let runner = SinkRunner {
                name: Arc::clone(&s.name),
                input: rx,
                batch,
                retry: cfg.retry.clone(),
                dead_letter,
                source_names: Arc::clone(&source_names),
            };
            sink_tasks.spawn(runner.run(s.sink));
        }

        // shards
        let outputs = Arc::new(Outputs {
            sinks: sink_senders,
            sink_names: cfg
                .sinks
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            default: self.default_sinks.clone(),
            dead_letter: self.dead_letter,
            source_names: Arc::clone(&source_names),
            step_metrics: self
                .steps
                .iter()
                .map(|s| (Arc::clone(&s.name), s.metrics.clone()))
                .collect(),
        });
        let steps: Arc<[StepSpec]> = self.steps.into();
        let mut inboxes: Vec<QueueSender<Batch>> = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        let mut controls = self.control.take().map(|c| c.into_iter());
        for index in 0..shards {
            let (tx, rx) = bounded(
                QueueLimits {
                    max_events: q.inbox_max_events,
                    max_bytes: q.inbox_max_bytes,
                },
                QueueMetrics::new(&format!("shard-{index}")),
            );
            inboxes.push(tx);
            let plan = ShardPlan {
                index,
                core: if cores.is_empty() {
                    None
                } else {
                    Some(cores[index % cores.len()])
                },
                inbox: rx,
                lanes: cfg.pipeline.max_inflight,
                ordering: cfg.pipeline.ordering,
                steps: Arc::clone(&steps),
                retry: cfg.retry.clone(),
                outputs: Arc::clone(&outputs),
                control: controls.as_mut().and_then(|c| c.next()),
            };
            threads.push(
                shard::spawn(plan)
                    .map_err(|e| Error::internal(format!("starting shard thread: {e}")))?,
            );
        }
        drop(outputs);
        let inboxes: Arc<[QueueSender<Batch>]> = inboxes.into();
        // shards report their end as it happens, so one that fails (a step
        // panicked) stops the pipeline at once, not when the sources end
        let (shard_end_tx, mut shard_ends) = tokio::sync::mpsc::unbounded_channel();
        for done in threads {
            let tx = shard_end_tx.clone();
            tokio::spawn(async move {
                let result = match done.await {
                    Ok(result) => result.map_err(|e| e.context("shard")),
                    Err(_) => Err(Error::internal("shard thread panicked")),
                };
                let _ = tx.send(result);
            });
        }
        drop(shard_end_tx);

        // sources
        let mut source_tasks = tokio::task::JoinSet::new();
        let mut incomplete = Vec::new();
        // a source reports here what must stop the pipeline while it keeps
        // running itself (a stuck partition with on_stuck = "fail")
        let (source_failures_tx, mut source_failures) = tokio::sync::mpsc::unbounded_channel();
        let drain_timeout = cfg.shutdown.timeout.mul_f64(crate::source::DRAIN_SHARE);
        for (id, s) in self.sources.into_iter().enumerate() {
            let ctx = SourceContext::new(SourceContextParts {
                id: id as u16,
                name: Arc::clone(&s.name),
                shards: Arc::clone(&inboxes),
                latency: Some(Arc::clone(&self.latency)),
                shutdown: shutdown.signal(),
                checkpoint_interval: cfg.checkpoint.interval,
                shutdown_timeout: drain_timeout,
                store: Some(s.store),
                batch: s.batch,
                on_stuck: cfg.checkpoint.on_stuck,
                failures: Some(source_failures_tx.clone()),
            });
            incomplete.push(ctx.incomplete_flag());
            let name = Arc::clone(&s.name);
            source_tasks.spawn(async move { (name, s.source.run(ctx).await) });
        }
        drop(inboxes);
        drop(source_failures_tx);

        let timeout = cfg.shutdown.timeout;
        let mut signal = shutdown.signal();
        let deadline = async move {
            signal.triggered().await;
            tokio::time::sleep(timeout).await;
        };
        let mut first_error: Option<Error> = None;
        let mut shards_ended = 0usize;
        let finish = async {
            while !source_tasks.is_empty() {
                tokio::select! {
                    biased;
                    Some(joined) = source_tasks.join_next() => match joined {
                        Ok((_, Ok(()))) => {}
                        Ok((name, Err(e))) => {
                            tracing::error!(source = %name, error = %e, "source failed; shutting down");
                            first_error.get_or_insert(e.context(format!("source `{name}`")));
                            shutdown.trigger();
                        }
                        Err(e) => {
                            first_error.get_or_insert(Error::internal(format!("source task: {e}")));
                            shutdown.trigger();
                        }
                    },
                    Some(e) = source_failures.recv() => {
                        tracing::error!(error = %e, "shutting down");
                        first_error.get_or_insert(e);
                        shutdown.trigger();
                    }
                    Some(ended) = shard_ends.recv() => {
                        shards_ended += 1;
                        if let Err(e) = ended {
                            tracing::error!(error = %e, "shard failed; shutting down");
                            first_error.get_or_insert(e);
                            shutdown.trigger();
                        }
                    }
                    // a sink that fails (cannot open, panics) must stop the reading at
                    // once; one that ends cleanly does so only after every shard ended
                    Some(joined) = sink_tasks.join_next() => {
                        let failure = match joined {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e),
                            Err(e) => Some(Error::internal(format!("sink task: {e}"))),
                        };
                        if let Some(e) = failure {
                            tracing::error!(error = %e, "sink failed; shutting down");
                            first_error.get_or_insert(e);
                            shutdown.trigger();
                        }
                    }
                }
            }
            tracing::debug!("sources finished; waiting for shards");
            while shards_ended < shards {
                match shard_ends.recv().await {
                    Some(Ok(())) => shards_ended += 1,
                    Some(Err(e)) => {
                        shards_ended += 1;
                        first_error.get_or_insert(e);
                    }
                    None => break,
                }
            }
            tracing::debug!("shards finished; waiting for sinks");
            while let Some(joined) = sink_tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(e) => {
                        first_error.get_or_insert(Error::internal(format!("sink task: {e}")));
                    }
                }
            }
        };
        let started = Instant::now();
        tokio::select! {
            _ = finish => {}
            _ = deadline => {
                return Err(Error::external(format!(
                    "shutdown did not finish within {:?}; undelivered events were not committed and will be read again",
                    timeout
                )));
            }
        }
        tracing::debug!(elapsed = ?started.elapsed(), "pipeline stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(RunReport {
                drained: !incomplete
                    .iter()
                    .any(|f| f.load(std::sync::atomic::Ordering::Relaxed)),
            }),
        }
    }
}
