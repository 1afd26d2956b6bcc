//! The `kafka` sink: an idempotent producer. A batch is acknowledged when
//! librdkafka's delivery report confirmed every record (`acks = all`).
//!
//! - Records keep the event's key (partitioned by murmur2, like the Java
//!   client), value, headers and timestamp.
//! - librdkafka retries a failed send itself until `delivery_timeout`; a
//!   record that still fails fails its batch, which the engine retries
//!   (its other records are then written again: at-least-once) and finally
//!   dead-letters. Nothing is dropped silently.
//! - Batches are pipelined: up to `max_inflight_batches` are handed to
//!   librdkafka before the oldest is confirmed; acks still settle in order.
//! - With `transactional_id` it writes inside Kafka transactions that a
//!   `kafka` source commits together with its offsets (`transaction.rs`):
//!   exactly-once. A record Kafka refuses then aborts its epoch's
//!   transaction, and the source stops rather than commit past it.
//! - As a dead-letter sink it writes the failed events with the error, the
//!   stage and the origin in `weir.*` headers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::sink::Delivery;
use weir_engine::telemetry::names;
use weir_engine::{Error, Event, Result, Sink};

use super::config::KafkaSinkOptions;
use super::context::log_to_tracing;
use super::transaction::{self, Transactions};

/// Builds a `kafka` sink from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let options = KafkaSinkOptions::from_config(config)?;
    Ok(Box::new(KafkaSink {
        name: config.name.clone(),
        options,
        producer: None,
        transactions: None,
    }))
}

/// Writes events to one topic.
pub struct KafkaSink {
    name: String,
    options: KafkaSinkOptions,
    producer: Option<Arc<ThreadedProducer<DeliveryContext>>>,
    /// With `transactional_id`: the transactions the records go into.
    transactions: Option<Arc<Transactions>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The outcome of one batch's records, filled in by delivery reports.
#[derive(Debug)]
pub(crate) struct BatchDelivery {
    remaining: AtomicUsize,
    failed: AtomicUsize,
    /// Failures no retry can fix (a record too large, no authorization).
    permanent: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl BatchDelivery {
    fn new(records: usize) -> Self {
        BatchDelivery {
            remaining: AtomicUsize::new(records),
            failed: AtomicUsize::new(0),
            permanent: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            done: Notify::new(),
        }
    }

    /// One record is settled; `error` if it failed.
    fn settle(&self, error: Option<String>) {
        if let Some(error) = error {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(error);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The producer's librdkafka context: delivery reports settle batches.
pub(crate) struct DeliveryContext {
    name: String,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_to_tracing(&self.name, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(sink = %self.name, %error, reason, "kafka client error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<BatchDelivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchDelivery>) {
        match result {
            Ok(_) => batch.settle(None),
            Err((e, _)) => {
                metrics::counter!(names::KAFKA_DELIVERY_ERRORS, "sink" => self.name.clone())
                    .increment(1);
                if is_permanent(e) {
                    batch.permanent.fetch_add(1, Ordering::Relaxed);
                }
                batch.settle(Some(e.to_string()));
            }
        }
    }
}

/// Whether a delivery error is one that sending again cannot fix.
fn is_permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidRecord
                | C::Fatal
        )
    )
}

/// Pause before retrying a send that found librdkafka's queue full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

#[async_trait]
impl Sink for KafkaSink {
    async fn open(&mut self) -> Result<()> {
        let context = DeliveryContext {
            name: self.name.clone(),
        };
        let producer: ThreadedProducer<DeliveryContext> = self
            .options
            .client_config()
            .create_with_context(context)
            .map_err(|e| Error::user(format!("invalid client configuration: {e}")))?;
        let topic = self.options.topic.clone();
        let brokers = self.options.brokers.clone();
        let timeout = Duration::from_secs(10);
        let transactional = self.options.transactional_id.is_some();
        let name = self.name.clone();
        let producer = tokio::task::spawn_blocking(move || {
            super::metadata::check_topics(
                producer.client(),
                &brokers,
                Some(&topic),
                &[&topic],
                timeout,
            )?;
            if transactional {
                // fences an earlier producer of the id and aborts what it
                // left open
                producer.init_transactions(timeout).map_err(|e| {
                    Error::external(format!(
                        "kafka sink `{name}`: initializing transactions: {e}"
                    ))
                    .with_cause(e)
                })?;
            }
            Ok::<_, Error>(producer)
        })
        .await
        .map_err(|e| Error::internal(format!("kafka sink open: {e}")))??;
        let producer = Arc::new(producer);
        if transactional {
            let transactions = Arc::new(Transactions::new(
                self.name.clone(),
                Arc::clone(&producer),
                timeout.max(self.options.transaction_timeout / 2),
            ));
            transaction::enter(&self.name, &transactions);
            self.transactions = Some(transactions);
        }
        self.producer = Some(producer);
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.start_write(events).await?.await
    }

    async fn start_write(&mut self, events: &[Event]) -> Result<Delivery> {
        // an idempotent producer that hit a fatal error refuses every later
        // record: start a new one rather than fail every batch from now on
        let fatal = self
            .producer
            .as_ref()
            .and_then(|p| p.client().fatal_error());
        if let (Some((code, reason)), Some(_)) = (&fatal, &self.transactions) {
            // a fenced transactional producer: another process owns the id
            return Err(Error::external(format!(
                "kafka sink `{}`: the transactional producer failed ({code:?}): {reason}",
                self.name
            )));
        }
        if let Some((code, reason)) = fatal {
            tracing::error!(sink = %self.name, ?code, reason, "fatal producer error; starting a new producer");
            self.producer = None;
            self.open().await?;
        }
        let producer = self
            .producer
            .as_ref()
            .ok_or_else(|| Error::internal("the kafka sink was written to before it was opened"))?;
        let producer = Arc::clone(producer);
        // records go into the open transaction; its commit waits for them
        let mut writing = match &self.transactions {
            Some(transactions) => Some(transactions.writing().await?),
            None => None,
        };
        let batch = Arc::new(BatchDelivery::new(events.len()));
        let topic = self.options.topic.as_str();
        for e in events {
            let mut record =
                BaseRecord::with_opaque_to(topic, Arc::clone(&batch)).payload(&e.value[..]);
            if let Some(key) = &e.key {
                record = record.key(&key[..]);
            }
            if e.timestamp_ms > 0 {
                record = record.timestamp(e.timestamp_ms);
            }
            if !e.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(e.headers.len());
                for (k, v) in &e.headers {
                    headers = headers.insert(Header {
                        key: &String::from_utf8_lossy(k),
                        value: Some(&v[..]),
                    });
                }
                record = record.headers(headers);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Err((error, back)) => {
                        drop(back);
                        if let Some(state) = writing.as_mut() {
                            // the transaction holds the batch's other
                            // records: it must never commit
                            state.doom(format!("a record was refused: {error}"));
                        }
                        if is_permanent(&error) {
                            batch.permanent.fetch_add(1, Ordering::Relaxed);
                        }
                        batch.settle(Some(error.to_string()));
                        break;
                    }
                }
            }
        }
        drop(writing);
        let records = events.len();
        let topic = topic.to_string();
        Ok(Box::pin(async move {
            batch.wait().await;
            let failed = batch.failed.load(Ordering::Relaxed);
            if failed == 0 {
                return Ok(());
            }
            let permanent = batch.permanent.load(Ordering::Relaxed) > 0;
            let first = batch
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            let message =
                format!("{failed} of {records} records were not delivered to `{topic}`: {first}");
            // a permanent failure goes to the dead-letter sink without retries
            Err(if permanent {
                Error::user(message)
            } else {
                Error::retryable(message)
            })
        }))
    }

    fn max_inflight(&self) -> usize {
        self.options.max_inflight_batches
    }

    fn batches_itself(&self) -> bool {
        // librdkafka gathers records for `linger` per partition
        true
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(transactions) = self.transactions.take() {
            // committed by the source's last epoch; what is still open
            // was never committed and must not become visible
            tokio::task::spawn_blocking(move || transactions.abort())
                .await
                .map_err(|e| Error::internal(format!("kafka sink close: {e}")))?;
        }
        if let Some(producer) = self.producer.take() {
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| Error::internal(format!("kafka sink close: {e}")))?
                .map_err(|e| Error::retryable(format!("flushing the producer: {e}")))?;
        }
        Ok(())
    }
}
