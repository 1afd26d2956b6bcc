//! `batch.latency_target`: a source's partial batches wait less at low load
//! and more once work queues, against a real nats-server.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::metrics::{metric, try_metric};
use common::nats::Server;
use weir_config::{ComponentConfig, PipelineConfig};
use weir_engine::{Event, Step, StepFactory, StepOutput};

/// Milliseconds the `slow` step spends on each batch.
static STEP_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Passes events on after `STEP_DELAY_MS`: a function whose cost makes work
/// queue behind it.
struct SlowStep;

#[async_trait(?Send)]
impl Step for SlowStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        let delay = STEP_DELAY_MS.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        for e in input.drain(..) {
            output.emit(e);
        }
    }
}

struct SlowFactory;

impl StepFactory for SlowFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(SlowStep))
    }
}

/// The source's current batch wait, in seconds.
const WAIT_GAUGE: &str = "weir_source_batch_wait_seconds{source=\"in\"}";

/// Events per source batch so far: (sum, count) of the batch-size
/// histogram.
fn batches() -> (f64, f64) {
    (
        metric("weir_source_batch_events_sum{source=\"in\"}"),
        metric("weir_source_batch_events_count{source=\"in\"}"),
    )
}

/// Publishes `n` messages `every` apart on the pipeline's runtime.
fn publish_paced(
    running: &common::in_process::InProcess,
    url: &str,
    first: usize,
    n: usize,
    every: Duration,
) {
    running.runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let mut tick = tokio::time::interval(every);
        // a publisher held up by a busy machine does not burst to catch up
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in first..first + n {
            tick.tick().await;
            client
                .publish("events.x", format!("{{\"i\":{i}}}").into())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
    });
}

/// Waits until the source dispatched `total` events.
fn await_dispatched(total: usize, limit: Duration) {
    let started = Instant::now();
    while batches().0 < total as f64 {
        assert!(
            started.elapsed() < limit,
            "only {} of {total} events dispatched within {limit:?}",
            batches().0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes `n` messages `every` apart, waits until the source dispatched
/// them (within `limit`) and returns the events per batch it cut meanwhile,
/// and how many batches.
fn phase(
    running: &common::in_process::InProcess,
    url: &str,
    first: usize,
    n: usize,
    every: Duration,
    limit: Duration,
) -> (f64, f64) {
    let (sum, count) = batches();
    publish_paced(running, url, first, n, every);
    await_dispatched(sum as usize + n, limit);
    let (sum_after, count_after) = batches();
    let cut = count_after - count;
    ((sum_after - sum) / cut, cut)
}

/// With `max_wait = "200ms"` a fixed wait would gather ~20 events per batch
/// at 100 events/s. With `latency_target = "100ms"` and a quick pipeline
/// the wait shrinks to nothing: events leave one by one. Once the step
/// takes 120 ms a batch and 1000 events come 1 ms apart (work queues;
/// dispatch-to-ack latency passes half the target) the wait grows and
/// batches grow with it; once the step is quick again, the wait shrinks
/// back to nothing.
#[test]
fn a_latency_target_sends_events_at_once_at_low_load_grows_batches_when_work_queues_and_shrinks_them_again(
) {
    common::metrics::recorder();
    let server = Server::start();
    let mut registry = weir::registry();
    registry.step("slow", |_, _| Ok(Arc::new(SlowFactory)));
    let source = ComponentConfig::from_toml(
        "in",
        "nats",
        &format!(
            "url = '{}'\nsubjects = ['events.>']\nbatch = {{ max_events = 1000, max_wait = '200ms', latency_target = '100ms' }}\n",
            server.url
        ),
    )
    .unwrap();
    let step = ComponentConfig::from_toml("slow", "slow", "").unwrap();
    let sink = ComponentConfig::from_toml("out", "blackhole", "").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![step], vec![sink]);
    config.pipeline.shards = Some(1);
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    let running = common::in_process::start(&config, &registry);
    // the subscription is up once a first message goes through
    let started = Instant::now();
    while batches().1 < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the nats source never subscribed"
        );
        publish_paced(&running, &server.url, 0, 1, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(100));
    }

    // low load, quick pipeline: 40 events, 10 ms apart
    let ms = Duration::from_millis;
    let (low, low_batches) = phase(&running, &server.url, 1000, 40, ms(10), ms(30_000));
    assert!(
        low <= 2.0,
        "at low load events should leave almost one by one, got {low:.1} per batch ({low_batches} batches)"
    );

    // the wait stayed at nothing (the gauge is set every checkpoint tick)
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(try_metric(WAIT_GAUGE), Some(0.0));

    // the step now takes 120 ms a batch: 1000 events, 1 ms apart
    STEP_DELAY_MS.store(120, Ordering::Relaxed);
    let (high, high_batches) = phase(&running, &server.url, 2000, 1000, ms(1), ms(60_000));
    assert!(
        high >= 5.0,
        "with work queueing batches should grow: {high:.1} events per batch against {low:.1} at low load"
    );
    // the wait grew (to at most half the target)
    std::thread::sleep(Duration::from_millis(1_500));
    let wait = try_metric(WAIT_GAUGE).expect("the batch wait gauge");
    assert!(
        wait > 0.0 && wait <= 0.0501,
        "the adaptive wait after queueing: {wait} s"
    );

    // the step is quick again: the backlog drains, 150 events 10 ms apart
    // bring the wait down, and the next 40 leave one by one again
    STEP_DELAY_MS.store(0, Ordering::Relaxed);
    phase(&running, &server.url, 4000, 150, ms(10), ms(60_000));
    let (low_again, _) = phase(&running, &server.url, 5000, 40, ms(10), ms(30_000));
    assert!(
        low_again <= 2.0,
        "once the queue is gone the wait should shrink again: {low_again:.1} events per batch"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        try_metric(WAIT_GAUGE),
        Some(0.0),
        "the wait is back at zero"
    );
    eprintln!(
        "events per batch: {low:.1} at low load ({low_batches} batches), {high:.1} with work queueing ({high_batches} batches, wait then {wait} s), {low_again:.1} at low load again"
    );
    running.stop();
}
