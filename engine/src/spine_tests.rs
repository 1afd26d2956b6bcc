//! The spine end to end inside the engine: a source context, real shard
//! threads with lanes, a sink task and a recording sink — the reply path,
//! awaited completions, swapping a step under load, pause and resume,
//! barriers, a panicking step, and a key-routed dispatch given up at
//! shutdown.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use weir_config::{BatchSettings, Ordering, RetrySettings};

use crate::ack::Completion;
use crate::batch::Batch;
use crate::chain::StepSpec;
use crate::control::PipelineControl;
use crate::error::Result;
use crate::event::Event;
use crate::outputs::Outputs;
use crate::queue::{bounded, QueueLimits, QueueSender};
use crate::reply::{reply_channel, Outcome};
use crate::shard::{self, ShardPlan};
use crate::shutdown::{shutdown_channel, ShutdownTrigger};
use crate::sink::{Sink, SinkRunner};
use crate::source::{Routing, SourceContext, SourceContextParts};
use crate::step::{Step, StepOutput};
use crate::telemetry::{QueueMetrics, StepMetrics};

/// Appends `|{tag}` to each value; fails `bad…` for good, drops `drop`,
/// panics on `boom`.
struct Tag(&'static str);

#[async_trait(?Send)]
impl Step for Tag {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        for e in input.drain(..) {
            match e.value.as_ref() {
                v if v.starts_with(b"bad") => output.fail(e, "bad input"),
                b"drop" => output.drop_event(e),
                b"boom" => panic!("boom on purpose"),
                v => {
                    let mut value = v.to_vec();
                    value.extend_from_slice(format!("|{}", self.0).as_bytes());
                    output.emit(Event {
                        value: value.into(),
                        ..e
                    });
                }
            }
        }
    }
}

fn tag_spec(name: &str, tag: &'static str) -> StepSpec {
    StepSpec {
        name: name.into(),
        factory: Arc::new(move || -> Result<Box<dyn Step>, String> { Ok(Box::new(Tag(tag))) }),
        metrics: StepMetrics::new(name),
    }
}

/// Records what it writes; waits while `stalled`.
#[derive(Clone, Default)]
struct Recorder {
    written: Arc<Mutex<Vec<Event>>>,
    stalled: Arc<AtomicBool>,
}

#[async_trait]
impl Sink for Recorder {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        while self.stalled.load(AtomicOrdering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.written.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

struct Harness {
    ctx: SourceContext,
    control: PipelineControl,
    sink: Recorder,
    shards: Vec<tokio::sync::oneshot::Receiver<Result<()>>>,
    sink_task: tokio::task::JoinHandle<Result<()>>,
    trigger: ShutdownTrigger,
}

fn retry() -> RetrySettings {
    RetrySettings {
        max_attempts: 1,
        ..RetrySettings::default()
    }
}

/// `shards` shards of 2 lanes ordered by key, one step `tag`, one sink.
fn harness(shards: usize, inbox_events: usize) -> Harness {
    let sink = Recorder::default();
    let (sink_tx, sink_rx) = bounded(
        QueueLimits {
            max_events: 10_000,
            max_bytes: 1 << 24,
        },
        QueueMetrics::new("spine-sink"),
    );
    let runner = SinkRunner {
        name: "out".into(),
        input: sink_rx,
        batch: BatchSettings {
            max_wait: Duration::from_millis(1),
            ..BatchSettings::default()
        },
        retry: retry(),
        dead_letter: None,
        source_names: Arc::from(vec![Arc::from("src")]),
    };
    let sink_task = tokio::spawn(runner.run(Box::new(sink.clone())));
    let outputs = Arc::new(Outputs {
        sinks: vec![sink_tx],
        sink_names: vec!["out".into()],
        default: vec![0],
        dead_letter: None,
        source_names: Arc::from(vec![Arc::from("src")]),
        step_metrics: Vec::new(),
    });
    let steps: Arc<[StepSpec]> = Arc::from(vec![tag_spec("tag", "v1")]);
    let (control, receivers) = PipelineControl::new(shards, Arc::from(vec![Arc::from("tag")]));
    let mut inboxes: Vec<QueueSender<Batch>> = Vec::new();
    let mut threads = Vec::new();
    for (index, commands) in receivers.into_iter().enumerate() {
        let (tx, rx) = bounded(
            QueueLimits {
                max_events: inbox_events,
                max_bytes: 1 << 24,
            },
            QueueMetrics::new(&format!("spine-{index}")),
        );
        inboxes.push(tx);
        threads.push(
            shard::spawn(ShardPlan {
                index,
                core: None,
                inbox: rx,
                lanes: 2,
                ordering: Ordering::Key,
                steps: Arc::clone(&steps),
                retry: retry(),
                outputs: Arc::clone(&outputs),
                control: Some(commands),
            })
            .unwrap(),
        );
    }
    let (trigger, signal) = shutdown_channel();
    let ctx = SourceContext::new(SourceContextParts {
        id: 0,
        name: "src".into(),
        shards: inboxes.into(),
        latency: None,
        shutdown: signal,
        checkpoint_interval: Duration::from_millis(10),
        shutdown_timeout: Duration::from_millis(500),
        store: None,
        batch: BatchSettings::default(),
        on_stuck: weir_config::OnStuck::Pause,
        failures: None,
    });
    Harness {
        ctx,
        control,
        sink,
        shards: threads,
        sink_task,
        trigger,
    }
}

fn keyed(values: &[&str], first_offset: u64) -> Vec<Event> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Event::new(v.to_string())
                .with_key(format!("k{}", i % 7))
                .with_offset(first_offset + i as u64)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_gets_its_outcome_and_the_batch_completion_is_awaited() {
    let mut h = harness(2, 10_000);
    h.sink.stalled.store(true, AtomicOrdering::Relaxed);
    let (reply, mut replies) = reply_channel();
    let state = h
        .ctx
        .dispatch_with_reply(
            0,
            keyed(&["a", "drop", "bad json", "b"], 100),
            104,
            Routing::Key,
            reply,
        )
        .await
        .unwrap()
        .expect("dispatched");
    let mut outcomes = std::collections::BTreeMap::new();
    while outcomes.len() < 4 {
        let part = tokio::time::timeout(Duration::from_secs(5), replies.recv())
            .await
            .expect("replies arrive while the sink is still stalled")
            .unwrap();
        for r in part {
            assert!(
                outcomes.insert(r.offset, r.outcome).is_none(),
                "one reply per event"
            );
        }
    }
    assert!(
        matches!(&outcomes[&100], Outcome::Emitted { events, .. } if events[0].value == "a|v1")
    );
    assert_eq!(outcomes[&101], Outcome::Dropped);
    assert!(
        matches!(&outcomes[&102], Outcome::Failed { stage, reason, retryable: false } if &**stage == "tag" && reason == "bad input")
    );
    assert!(
        matches!(&outcomes[&103], Outcome::Emitted { events, .. } if events[0].value == "b|v1")
    );
    // the sinks have not acknowledged it yet
    let waiter = {
        let state = Arc::clone(&state);
        tokio::spawn(async move { state.completed().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "completion waits for the sink");
    h.sink.stalled.store(false, AtomicOrdering::Relaxed);
    // the failed event had no dead-letter sink: it counts as delivered (dropped with a counter)
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap(),
        Completion::Delivered
    );
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_swapped_under_load_loses_nothing_and_keeps_order_per_key() {
    let mut h = harness(2, 256);
    let control = h.control.clone();
    let swapper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        control
            .swap_step(
                "tag",
                Arc::new(|| -> Result<Box<dyn Step>, String> { Ok(Box::new(Tag("v2"))) }),
            )
            .await
    });
    let n = 20_000u64;
    let mut offset = 0;
    while offset < n {
        let events: Vec<Event> = (offset..offset + 100)
            .map(|i| {
                Event::new(i.to_string())
                    .with_key(format!("k{}", i % 13))
                    .with_offset(i)
            })
            .collect();
        offset += 100;
        h.ctx
            .dispatch(0, events, offset, Routing::Key)
            .await
            .unwrap();
        if offset % 2_000 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    swapper.await.unwrap().expect("every lane swapped");
    assert!(h.ctx.drain().await);
    let written = h.sink.written.lock().unwrap().clone();
    assert_eq!(written.len() as u64, n, "nothing lost or duplicated");
    let (mut v1, mut v2) = (0, 0);
    let mut per_key: std::collections::HashMap<Vec<u8>, (i64, bool)> = Default::default();
    for e in &written {
        let text = std::str::from_utf8(&e.value).unwrap();
        let (num, tag) = text.split_once('|').unwrap();
        let num: i64 = num.parse().unwrap();
        let is_v2 = tag == "v2";
        if is_v2 {
            v2 += 1
        } else {
            v1 += 1
        }
        let entry = per_key
            .entry(e.key.clone().unwrap().to_vec())
            .or_insert((-1, false));
        assert!(num > entry.0, "order per key holds across the swap");
        assert!(!entry.1 || is_v2, "no key goes back to the old version");
        *entry = (num, is_v2);
    }
    assert!(
        v1 > 0 && v2 > 0,
        "the swap happened mid-stream ({v1} v1, {v2} v2)"
    );
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_an_unknown_step_or_a_failing_build_says_why() {
    let h = harness(1, 1000);
    let err = h
        .control
        .swap_step(
            "nope",
            Arc::new(|| -> Result<Box<dyn Step>, String> { Ok(Box::new(Tag("x"))) }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no step named `nope`"), "{err}");
    let err = h
        .control
        .swap_step(
            "tag",
            Arc::new(|| -> Result<Box<dyn Step>, String> { Err("module does not compile".into()) }),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("module does not compile"), "{err}");
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_batches_back_and_resume_lets_them_through() {
    let mut h = harness(1, 1000);
    h.control.pause().await.unwrap();
    h.ctx
        .dispatch(0, keyed(&["x", "y"], 0), 2, Routing::Key)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.sink.written.lock().unwrap().is_empty(),
        "a paused shard takes nothing"
    );
    h.control.resume().await.unwrap();
    assert!(h.ctx.drain().await);
    assert_eq!(h.sink.written.lock().unwrap().len(), 2);
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_completes_only_when_what_came_before_is_durable() {
    let mut h = harness(2, 1000);
    h.sink.stalled.store(true, AtomicOrdering::Relaxed);
    h.ctx
        .dispatch(0, keyed(&["a", "b", "c", "d"], 0), 4, Routing::Key)
        .await
        .unwrap();
    let from_source = h.ctx.barrier(1).await.unwrap().expect("sent");
    let control = h.control.clone();
    let from_control = tokio::spawn(async move { control.barrier().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        from_source.completion().is_none(),
        "the sink still holds what came before"
    );
    assert!(!from_control.is_finished());
    h.sink.stalled.store(false, AtomicOrdering::Relaxed);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), from_source.completed())
            .await
            .unwrap(),
        Completion::Delivered
    );
    tokio::time::timeout(Duration::from_secs(5), from_control)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(h.sink.written.lock().unwrap().len(), 4);
    stop(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_ends_its_shard_at_once_naming_the_step() {
    let mut h = harness(1, 1000);
    h.ctx
        .dispatch(0, keyed(&["boom"], 0), 1, Routing::Key)
        .await
        .unwrap();
    let shard = h.shards.remove(0);
    let result = tokio::time::timeout(Duration::from_secs(5), shard)
        .await
        .expect("the shard ends without waiting for its inbox to close")
        .unwrap();
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("step `tag` panicked: boom on purpose"),
        "{err}"
    );
    h.trigger.trigger();
    drop(h.ctx);
    let _ = h.sink_task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_routed_batch_given_up_at_shutdown_is_not_a_failed_delivery() {
    let mut h = harness(2, 4);
    h.control.pause().await.unwrap();
    // fills both inboxes, then the next dispatch waits on a full shard
    let values: Vec<String> = (0..64).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    h.ctx
        .dispatch(0, keyed(&refs[..8], 0), 8, Routing::Key)
        .await
        .unwrap();
    let trigger = h.trigger;
    let stop_soon = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.trigger();
        trigger
    });
    h.ctx
        .dispatch(0, keyed(&refs[8..], 8), 64, Routing::Key)
        .await
        .unwrap();
    let trigger = stop_soon.await.unwrap();
    h.control.resume().await.unwrap();
    h.ctx.drain().await;
    h.ctx.take_checkpoints();
    assert!(
        !h.ctx
            .incomplete_flag()
            .load(std::sync::atomic::Ordering::Relaxed),
        "a stop at shutdown is not a delivery failure (exit 0)"
    );
    h.trigger = trigger;
    stop(h).await;
}

async fn stop(h: Harness) {
    h.trigger.trigger();
    drop(h.ctx);
    drop(h.control);
    for shard in h.shards {
        shard.await.unwrap().unwrap();
    }
    h.sink_task.await.unwrap().unwrap();
}
