//! A sink that only counts, so the benchmark knows when every event went
//! through (the Kafka source never ends by itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic, PipelineConfig};
use weir_engine::{Event, Result, Sink};

/// Events written to every counting sink of this process.
pub static COUNTED: AtomicU64 = AtomicU64::new(0);
/// When the first event was written.
pub static FIRST: OnceLock<Instant> = OnceLock::new();

/// Builds the counting sink (`type = "bench-count"`).
pub fn build(_: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    Ok(Box::new(CountSink))
}

struct CountSink;

#[async_trait]
impl Sink for CountSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        FIRST.get_or_init(Instant::now);
        COUNTED.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// An in-code pipeline named `name`: one source (`kind` with the options
/// `options`, as TOML) into a counting sink, on `shards` shards.
pub fn pipeline_to_count(
    name: &str,
    kind: &str,
    options: &str,
    shards: usize,
) -> std::result::Result<PipelineConfig, String> {
    let source = ComponentConfig::from_toml("in", kind, options).map_err(|d| d.to_string())?;
    let sink = ComponentConfig::from_toml("out", "bench-count", "").map_err(|d| d.to_string())?;
    let mut config = PipelineConfig::new_in_code(vec![source], Vec::new(), vec![sink]);
    config.pipeline.name = name.into();
    config.pipeline.shards = Some(shards);
    config.checkpoint.dir = std::env::temp_dir().join("weir-bench-checkpoints");
    Ok(config)
}
