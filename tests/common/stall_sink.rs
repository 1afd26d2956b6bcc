//! A test sink that holds every write while it is stalled and records the
//! values it wrote. Registered as a factory function (the registry takes
//! plain functions), so its switch and record are per test binary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Sink};

/// Set while writes wait; set from the start.
pub static STALLED: AtomicBool = AtomicBool::new(true);
/// Every value written, in order.
pub static WRITTEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The sink.
struct StallSink;

#[async_trait]
impl Sink for StallSink {
    async fn write(&mut self, events: &[Event]) -> weir_engine::Result<()> {
        while STALLED.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut written = WRITTEN.lock().unwrap();
        for e in events {
            written.push(String::from_utf8_lossy(&e.value).into_owned());
        }
        Ok(())
    }
}

/// The factory to register (`registry.sink("stall", stall_sink::build)`).
pub fn build(_: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    Ok(Box::new(StallSink))
}

/// Stalls writes again and forgets what was written (for a test binary
/// whose tests use the sink one after the other).
pub fn reset() {
    STALLED.store(true, Ordering::Relaxed);
    WRITTEN.lock().unwrap().clear();
}

/// Lets every waiting and later write through.
pub fn release() {
    STALLED.store(false, Ordering::Relaxed);
}

/// A copy of what was written so far.
pub fn written() -> Vec<String> {
    WRITTEN.lock().unwrap().clone()
}

/// A pipeline `name` reading source `in` (`kind` with `options`, batches
/// of `batch` events) into this sink (`out`, the same batches) on two
/// shards with inboxes of `inbox` events and a sink queue of `sink_queue`,
/// checkpointing every 100 ms; and a registry that knows the sink.
pub fn pipeline(
    name: &str,
    kind: &str,
    options: &str,
    batch: usize,
    inbox: usize,
    sink_queue: usize,
) -> (weir_engine::Registry, weir_config::PipelineConfig) {
    let mut registry = weir::registry();
    registry.sink("stall", build);
    let source = ComponentConfig::from_toml(
        "in",
        kind,
        &format!("{options}\nbatch = {{ max_events = {batch}, max_wait = \"20ms\" }}\n"),
    )
    .unwrap();
    let sink = ComponentConfig::from_toml(
        "out",
        "stall",
        &format!("batch = {{ max_events = {batch} }}"),
    )
    .unwrap();
    let mut config = weir_config::PipelineConfig::new_in_code(vec![source], vec![], vec![sink]);
    config.pipeline.name = name.into();
    config.pipeline.shards = Some(2);
    config.queues.inbox_max_events = inbox;
    config.queues.sink_max_events = sink_queue;
    config.checkpoint.interval = Duration::from_millis(100);
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    (registry, config)
}
