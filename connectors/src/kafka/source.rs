//! The `kafka` source: a consumer-group member whose offsets are committed
//! from the ack ledger.
//!
//! Three parts: a consumer thread that polls librdkafka and gathers
//! batches per partition (`poller.rs`), the librdkafka callbacks that hand
//! revocations to the driver and wait for it (`context.rs`), and the
//! connector that the engine's source driver runs (`connector.rs`). The
//! driver dispatches each batch to the shard that owns its partition
//! without ever blocking: a batch a full shard refuses is parked and its
//! partition paused in librdkafka until there is room, while the other
//! partitions keep flowing. Offsets are committed every checkpoint
//! interval (asynchronously), at a revocation and at shutdown
//! (synchronously).

use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::mpsc;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::driver::drive;
use weir_engine::{Error, Result, Source, SourceContext};

use super::config::KafkaSourceOptions;
use super::connector::KafkaConnector;
use super::context::KafkaContext;
use super::partitions::{LastId, PartitionIds};
use super::poller::Poller;

/// Builds a `kafka` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options = KafkaSourceOptions::from_config(config)?;
    Ok(Box::new(KafkaSource { options }))
}

/// Consumes topics as a member of a consumer group.
#[derive(Debug)]
pub struct KafkaSource {
    options: KafkaSourceOptions,
}

/// Batches the consumer thread may have sent and the driver not yet
/// received: part of what the source holds besides one batch being built
/// per partition and the batches the driver parked.
const CHANNEL_BATCHES: usize = 1;

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let options = self.options;
        let name = ctx.name().to_string();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let context = KafkaContext::new(
            name.clone(),
            PartitionIds::new(ctx.id(), ctx.shard_count()),
            tx,
        );
        let revoke_timeout = options.revoke_timeout;
        let exactly_once_sink = options.exactly_once_sink.clone();
        if let Some(sink) = &exactly_once_sink {
            // the sink writes only once a source will commit for it
            super::transaction::claim(sink, &name)?;
        }
        // creating the client and reading metadata block: off the runtime
        let consumer = tokio::task::spawn_blocking(move || subscribe(&options, context))
            .await
            .map_err(|e| Error::internal(format!("kafka source `{name}`: subscribing: {e}")))??;
        let consumer = Arc::new(consumer);
        let batch = ctx.batch_settings().clone();
        let poller = Poller {
            consumer: Arc::clone(&consumer),
            partitions: Vec::new(),
            last: LastId::default(),
            max_events: batch.max_events,
            max_bytes: batch.max_bytes,
            wait: ctx.batch_wait(),
            gaps: Vec::new(),
            held_at: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("weir-kafka-{name}"))
            .spawn(move || poller.run())
            .map_err(|e| Error::internal(format!("starting the kafka consumer thread: {e}")))?;
        // the connector's close stops the thread, which closes the consumer
        // (leaving the group); the driver bounds that wait
        drive(
            KafkaConnector::new(consumer, rx, thread, revoke_timeout, exactly_once_sink),
            &mut ctx,
        )
        .await
    }
}

/// Creates the consumer, checks the topics and subscribes.
fn subscribe(
    options: &KafkaSourceOptions,
    context: KafkaContext,
) -> Result<BaseConsumer<KafkaContext>> {
    let name = context.name.clone();
    let consumer: BaseConsumer<KafkaContext> = options
        .client_config()
        .create_with_context(context)
        .map_err(|e| {
            Error::user(format!(
                "kafka source `{name}`: invalid client configuration: {e}"
            ))
            .with_cause(e)
        })?;
    check_topics(&consumer, options, &name)?;
    let subscription = options.subscription();
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| {
        Error::user(format!(
            "kafka source `{name}`: subscribing to {topics:?}: {e}"
        ))
        .with_cause(e)
    })?;
    tracing::info!(source = %name, topics = ?topics, group = %options.group, "kafka source subscribed");
    Ok(consumer)
}

/// Fails early and clearly when the brokers cannot be reached or a listed
/// topic does not exist (weir never creates topics).
fn check_topics(
    consumer: &BaseConsumer<KafkaContext>,
    options: &KafkaSourceOptions,
    name: &str,
) -> Result<()> {
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    super::metadata::check_topics(
        consumer.client(),
        &options.brokers,
        None,
        &topics,
        options.connect_timeout,
    )
    .map_err(|e| e.context(format!("kafka source `{name}`")))
}
