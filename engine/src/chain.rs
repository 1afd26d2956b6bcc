//! A [`StepChain`]: one lane's instances of the pipeline's steps, run in
//! order over a batch, with retries and dead-lettering of failed events.
//! Shards run one chain per lane; `weir test` runs one on its own.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use weir_config::RetrySettings;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::live;
use crate::retry::backoff;
use crate::step::{Failure, Health, SinkId, Step, StepFactory, StepOutput};
use crate::telemetry::StepMetrics;

/// A configured step: its name, how to build instances, its metrics.
#[derive(Clone)]
pub struct StepSpec {
    /// Name in the pipeline (metrics label, dead-letter `weir.stage`).
    pub name: Arc<str>,
    /// Builds one instance per lane.
    pub factory: Arc<dyn StepFactory>,
    /// Shared by every instance.
    pub metrics: StepMetrics,
}

/// An event that failed for good.
#[derive(Debug)]
pub struct DeadEvent {
    /// The event as the failing step received it.
    pub event: Event,
    /// Why.
    pub reason: String,
    /// The step that gave up.
    pub stage: Arc<str>,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the step called the failure retryable (and attempts ran out).
    pub retryable: bool,
}

/// What came out of a chain for one batch.
#[derive(Debug, Default)]
pub struct ChainOutput {
    /// Events that passed every step, for the default sinks.
    pub events: Vec<Event>,
    /// Events a step sent to a named sink.
    pub routed: Vec<(SinkId, Event)>,
    /// Events that failed for good.
    pub dead: Vec<DeadEvent>,
}

struct Stage {
    name: Arc<str>,
    step: Box<dyn Step>,
    metrics: StepMetrics,
    /// This lane's slot among the step's instances (health reports).
    instance: u64,
    /// What the instance last reported, if degraded.
    degraded: Option<String>,
}

impl Stage {
    /// Publishes the instance's health if it changed.
    fn report(&mut self, health: Health) {
        let now = match health {
            Health::Healthy => None,
            Health::Degraded(why) => Some(why),
        };
        if now == self.degraded {
            return;
        }
        if let Some(why) = &now {
            tracing::warn!(step = %self.name, reason = %why, "step instance degraded");
        } else {
            // at the level of the warning it ends, so whoever saw one sees both
            tracing::warn!(step = %self.name, "step instance healthy again");
        }
        self.publish(now);
    }

    /// The instance leaves: whatever it reported no longer counts.
    fn withdraw(&mut self) {
        if self.degraded.is_some() {
            self.publish(None);
        }
    }

    fn publish(&mut self, now: Option<String>) {
        let degraded = live::step_health(&self.name, self.instance, now.as_deref());
        self.metrics.degraded.set(degraded as u64);
        self.degraded = now;
    }
}

/// Numbers the step instances of this process (health reports).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// One instance of each step.
pub struct StepChain {
    stages: Vec<Stage>,
    retry: RetrySettings,
    scratch: StepOutput,
    /// Index of the stage running now ([`NOT_RUNNING`] between stages), so
    /// whoever sees this chain's task panic can name the step.
    running: Rc<Cell<usize>>,
}

/// [`StepChain::running_stage`] between stages.
pub const NOT_RUNNING: usize = usize::MAX;

impl StepChain {
    /// Builds an instance of every step (on the calling thread).
    pub fn build(specs: &[StepSpec], retry: RetrySettings) -> Result<Self> {
        let mut stages = Vec::with_capacity(specs.len());
        for spec in specs {
            let step = spec
                .factory
                .build()
                .map_err(|e| Error::user(format!("building step `{}`: {e}", spec.name)))?;
            stages.push(Stage {
                name: Arc::clone(&spec.name),
                step,
                metrics: spec.metrics.clone(),
                instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
                degraded: None,
            });
        }
        Ok(StepChain {
            stages,
            retry,
            scratch: StepOutput::new(),
            running: Rc::new(Cell::new(NOT_RUNNING)),
        })
    }

    /// A handle on the index of the stage running now (or [`NOT_RUNNING`]).
    pub fn running_stage(&self) -> Rc<Cell<usize>> {
        Rc::clone(&self.running)
    }

    /// Opens every instance (the steps' lifecycle hook), in order.
    pub async fn open(&mut self) -> crate::Result<()> {
        for stage in &mut self.stages {
            stage
                .step
                .open()
                .await
                .map_err(|e| e.context(format!("opening step `{}`", stage.name)))?;
        }
        Ok(())
    }

    /// Closes every instance, in order.
    pub async fn close(&mut self) {
        for stage in &mut self.stages {
            stage.step.close().await;
            stage.withdraw();
        }
    }

    /// Whether an instance last reported itself degraded.
    pub fn is_degraded(&self) -> bool {
        self.stages.iter().any(|s| s.degraded.is_some())
    }

    /// Asks every instance how it is (the steps' health hook) and
    /// publishes what changed: the admin API and
    /// `weir_step_degraded_instances` read it. Call between batches.
    pub fn check_health(&mut self) {
        for stage in &mut self.stages {
            let health = stage.step.health();
            stage.report(health);
        }
    }

    /// Opens `step` and, if that succeeds, puts it in place of stage
    /// `index`'s instance, which is closed. Call between batches.
    pub async fn swap(&mut self, index: usize, mut step: Box<dyn Step>) -> crate::Result<()> {
        let Some(stage) = self.stages.get_mut(index) else {
            return Err(crate::Error::internal(format!("no stage {index}")));
        };
        step.open()
            .await
            .map_err(|e| e.context(format!("opening the new instance of step `{}`", stage.name)))?;
        let mut old = std::mem::replace(&mut stage.step, step);
        old.close().await;
        stage.withdraw();
        Ok(())
    }

    /// Runs `events` through every step; results are appended to `out`.
    pub async fn run(&mut self, mut events: Vec<Event>, out: &mut ChainOutput) {
        for (index, stage) in self.stages.iter_mut().enumerate() {
            if events.is_empty() {
                break;
            }
            self.running.set(index);
            let output = &mut self.scratch;
            output.clear();
            let n_in = events.len();
            let started = Instant::now();
            stage.step.process(&mut events, output).await;
            output.events.append(&mut events);
            stage
                .metrics
                .latency
                .record(started.elapsed().as_secs_f64());
            stage.metrics.events_in.increment(n_in as u64);
            if !output.failed.is_empty() {
                handle_failures(stage, &self.retry, output, &mut out.dead).await;
            }
            stage
                .metrics
                .events_out
                .increment((output.events.len() + output.routed.len()) as u64);
            stage.metrics.dropped.increment(output.dropped as u64);
            stage.metrics.tap.offer(&output.events);
            out.routed.append(&mut output.routed);
            std::mem::swap(&mut events, &mut output.events);
        }
        self.running.set(NOT_RUNNING);
        if out.events.is_empty() {
            out.events = events;
        } else {
            out.events.append(&mut events);
        }
    }
}

async fn handle_failures(
    stage: &mut Stage,
    retry: &RetrySettings,
    output: &mut StepOutput,
    dead: &mut Vec<DeadEvent>,
) {
    let started = Instant::now();
    let mut attempt = 1u32;
    let mut failed: Vec<Failure> = std::mem::take(&mut output.failed);
    loop {
        stage.metrics.errors.increment(failed.len() as u64);
        let out_of_tries = attempt >= retry.max_attempts || started.elapsed() >= retry.max_age;
        let mut again = Vec::new();
        for f in failed.drain(..) {
            if f.retryable && !out_of_tries {
                again.push(f.event);
            } else {
                dead.push(DeadEvent {
                    event: f.event,
                    reason: f.reason,
                    stage: Arc::clone(&stage.name),
                    attempts: attempt,
                    retryable: f.retryable,
                });
            }
        }
        if again.is_empty() {
            return;
        }
        attempt += 1;
        stage.metrics.retries.increment(again.len() as u64);
        tokio::time::sleep(backoff(retry, attempt)).await;
        let mut retry_out = StepOutput::new();
        stage.step.process(&mut again, &mut retry_out).await;
        retry_out.events.append(&mut again);
        output.events.append(&mut retry_out.events);
        output.routed.append(&mut retry_out.routed);
        output.dropped += retry_out.dropped;
        failed = retry_out.failed;
        if failed.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::time::Duration;

    /// Fails events whose value is "poison" for good, "flaky" the first
    /// `flaky` times, and upper-cases the rest.
    struct Upper {
        flaky: u32,
    }

    #[async_trait(?Send)]
    impl Step for Upper {
        async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
            for e in input.drain(..) {
                match e.value.as_ref() {
                    b"poison" => output.fail(e, "poisoned"),
                    b"flaky" if self.flaky > 0 => {
                        self.flaky -= 1;
                        output.fail_retryable(e, "try later")
                    }
                    b"drop" => output.drop_event(e),
                    v => {
                        let upper = v.to_ascii_uppercase();
                        output.emit(Event {
                            value: upper.into(),
                            ..e
                        })
                    }
                }
            }
        }
    }

    fn spec(flaky: u32) -> StepSpec {
        let factory = move || -> Result<Box<dyn Step>, String> { Ok(Box::new(Upper { flaky })) };
        StepSpec {
            name: "upper".into(),
            factory: Arc::new(factory),
            metrics: StepMetrics::new("upper"),
        }
    }

    fn retry(max_attempts: u32) -> RetrySettings {
        RetrySettings {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_age: Duration::from_secs(5),
        }
    }

    fn values(events: &[Event]) -> Vec<&[u8]> {
        events.iter().map(|e| e.value.as_ref()).collect()
    }

    #[tokio::test]
    async fn keeps_changes_drops_and_dead_letters() {
        let mut chain = StepChain::build(&[spec(0)], retry(3)).unwrap();
        let mut out = ChainOutput::default();
        let input = ["a", "poison", "drop", "b"]
            .into_iter()
            .map(Event::new)
            .collect();
        chain.run(input, &mut out).await;
        assert_eq!(values(&out.events), vec![b"A".as_ref(), b"B"]);
        assert_eq!(out.dead.len(), 1);
        assert_eq!(out.dead[0].reason, "poisoned");
        assert_eq!(
            out.dead[0].attempts, 1,
            "non-retryable failures are not retried"
        );
    }

    #[tokio::test]
    async fn retries_then_succeeds() {
        let mut chain = StepChain::build(&[spec(2)], retry(3)).unwrap();
        let mut out = ChainOutput::default();
        chain
            .run(vec![Event::new("flaky"), Event::new("x")], &mut out)
            .await;
        assert_eq!(values(&out.events), vec![b"X".as_ref(), b"FLAKY"]);
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let mut chain = StepChain::build(&[spec(5)], retry(3)).unwrap();
        let mut out = ChainOutput::default();
        chain.run(vec![Event::new("flaky")], &mut out).await;
        assert!(out.events.is_empty());
        assert_eq!(out.dead.len(), 1);
        assert_eq!(out.dead[0].attempts, 3);
    }

    #[tokio::test]
    async fn runs_steps_in_order() {
        let mut chain = StepChain::build(&[spec(0), spec(0)], retry(1)).unwrap();
        let mut out = ChainOutput::default();
        chain.run(vec![Event::new("q")], &mut out).await;
        assert_eq!(values(&out.events), vec![b"Q".as_ref()]);
    }
}
