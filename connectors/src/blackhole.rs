//! The `blackhole` sink: discards every event, for benchmarks.
//!
//! - **Delivery**: none: events are dropped and acked at once, so sources
//!   commit as if they had been delivered.
//! - **Ordering**, **partitions**: not applicable.
//! - **Backpressure**: never pushes back; the pipeline runs as fast as its
//!   sources and steps.
//! - **Cost**: one relaxed atomic add per batch.
//!
//! ```toml
//! [sinks.null]
//! type = "blackhole"
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Result, Sink};

/// Options of the `blackhole` sink: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeOptions {}

/// Builds a `blackhole` sink from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let _: BlackholeOptions = config.options()?;
    Ok(Box::new(BlackholeSink::new()))
}

/// Discards events, counting them.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    events: Arc<AtomicU64>,
}

impl BlackholeSink {
    /// A sink with a fresh counter.
    pub fn new() -> Self {
        BlackholeSink::default()
    }

    /// The counter of discarded events, readable while the sink runs.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.events)
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        tracing::debug!(
            events = self.events.load(Ordering::Relaxed),
            "blackhole discarded events"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::options_error;

    #[tokio::test]
    async fn counts_and_discards() {
        let mut sink = BlackholeSink::new();
        let counter = sink.counter();
        sink.write(&[Event::new("a"), Event::new("b")])
            .await
            .unwrap();
        sink.write(&[]).await.unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn takes_no_options() {
        let config = ComponentConfig::from_toml("b", "blackhole", "").unwrap();
        assert!(build(&config).is_ok());
        assert!(options_error(build, "rate = 1")
            .starts_with("error: <inline>:1:1: unknown field `rate`"));
    }
}
