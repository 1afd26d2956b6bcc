//! Test support: runs a source against real engine queues and records
//! what it dispatched, acking every batch as a sink would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_config::{BatchSettings, ComponentConfig, Diagnostic};
use weir_engine::queue::{bounded, QueueLimits, QueueSender};
use weir_engine::telemetry::QueueMetrics;
use weir_engine::{
    shutdown_channel, Batch, CheckpointStore, Error, Event, Result, Source, SourceContext,
    SourceContextParts,
};

/// A batch as a shard received it.
#[derive(Debug)]
pub(crate) struct Received {
    /// The shard whose inbox it arrived in.
    pub(crate) shard: usize,
    /// The batch's partition.
    pub(crate) partition: u32,
    /// Its events.
    pub(crate) events: Vec<Event>,
}

/// The outcome of a run.
#[derive(Debug)]
pub(crate) struct Run {
    /// What the source returned.
    pub(crate) result: Result<()>,
    /// Every batch, in the order the shards received them.
    pub(crate) batches: Vec<Received>,
}

impl Run {
    /// Panics with the source's error if it failed.
    pub(crate) fn assert_ok(&self) {
        if let Err(e) = &self.result {
            panic!("the source failed: {e}");
        }
    }

    /// Every event, batch after batch.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.batches
            .iter()
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }
}

/// Builds the context a source runs with.
pub(crate) struct Harness {
    shards: usize,
    batch: BatchSettings,
    store: Option<CheckpointStore>,
    shutdown_after: Option<Duration>,
}

impl Harness {
    /// `shards` inboxes, default batching, no store.
    pub(crate) fn new(shards: usize) -> Self {
        Harness {
            shards,
            batch: BatchSettings::default(),
            store: None,
            shutdown_after: None,
        }
    }

    /// Batching limits for the source.
    pub(crate) fn batch(mut self, batch: BatchSettings) -> Self {
        self.batch = batch;
        self
    }

    /// A local checkpoint store.
    pub(crate) fn store(mut self, store: CheckpointStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Requests shutdown after `after`.
    pub(crate) fn shutdown_after(mut self, after: Duration) -> Self {
        self.shutdown_after = Some(after);
        self
    }

    /// Runs `source` to its end (at most 20 s).
    pub(crate) async fn run(self, source: Box<dyn Source>) -> Run {
        let (trigger, signal) = shutdown_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut senders: Vec<QueueSender<Batch>> = Vec::new();
        let mut collectors = Vec::new();
        for shard in 0..self.shards {
            let limits = QueueLimits {
                max_events: 1 << 24,
                max_bytes: 1 << 32,
            };
            let (tx, mut rx) = bounded(limits, QueueMetrics::new(&format!("test-{shard}")));
            senders.push(tx);
            let log = Arc::clone(&log);
            collectors.push(tokio::spawn(async move {
                while let Some((batch, _permit)) = rx.recv().await {
                    let received = Received {
                        shard,
                        partition: batch.partition,
                        events: batch.events,
                    };
                    log.lock().unwrap().push(received);
                    batch.ack.ack();
                }
            }));
        }
        let ctx = SourceContext::new(SourceContextParts {
            id: 0,
            name: "test".into(),
            shards: senders.into(),
            latency: None,
            shutdown: signal,
            checkpoint_interval: Duration::from_millis(10),
            shutdown_timeout: Duration::from_secs(2),
            store: self.store,
            batch: self.batch,
            on_stuck: weir_config::OnStuck::Pause,
            failures: None,
        });
        if let Some(after) = self.shutdown_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                trigger.trigger();
            });
        } else {
            drop(trigger);
        }
        let result = match tokio::time::timeout(Duration::from_secs(20), source.run(ctx)).await {
            Ok(result) => result,
            Err(_) => Err(Error::internal("the source did not finish within 20s")),
        };
        for collector in collectors {
            collector.await.unwrap();
        }
        let batches = std::mem::take(&mut *log.lock().unwrap());
        Run { result, batches }
    }
}

/// The error a factory returns for options written as TOML.
pub(crate) fn options_error<T>(
    build: fn(&ComponentConfig) -> Result<T, Diagnostic>,
    options: &str,
) -> String {
    let config = match ComponentConfig::from_toml("c", "test", options) {
        Ok(config) => config,
        Err(diagnostics) => return diagnostics.to_string(),
    };
    match build(&config) {
        Ok(_) => panic!("options were accepted: {options}"),
        Err(diagnostic) => diagnostic.to_string(),
    }
}
