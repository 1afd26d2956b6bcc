//! The `jetstream` sink: publishes to a subject a stream captures; a batch
//! is durable when the server acknowledged every message (`PubAck`).
//!
//! Every message carries `Nats-Msg-Id` = `<source>-<partition>-<offset>` of
//! the event's origin, so a batch published again (a retry, or a replay
//! after a crash) is dropped by the server as a duplicate within the
//! stream's duplicate window. Up to `max_inflight_batches` batches are
//! published before the oldest's acks are awaited; the client's limit of
//! pending acks is raised to match, with backpressure.

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::sink::Delivery;
use weir_engine::{Error, Event, Result, Sink};

use super::client::connect;
use super::config::JetStreamSinkOptions;
use super::subject::{headers, SubjectTemplate};

/// Builds a `jetstream` sink.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let (options, subject) = JetStreamSinkOptions::from_config(config)?;
    Ok(Box::new(JetStreamSink {
        name: config.name.clone(),
        options,
        subject,
        js: None,
        buf: String::new(),
    }))
}

/// Publishes to JetStream.
pub struct JetStreamSink {
    name: String,
    options: JetStreamSinkOptions,
    subject: SubjectTemplate,
    js: Option<jetstream::Context>,
    buf: String,
}

impl std::fmt::Debug for JetStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSink")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Pending acks the client allows; above the sink's in-flight bound.
const MAX_ACK_INFLIGHT: usize = 1 << 20;

#[async_trait]
impl Sink for JetStreamSink {
    async fn open(&mut self) -> Result<()> {
        let client = connect(
            &self.options.url,
            &self.name,
            None,
            self.options.connect_timeout,
            self.options.tls.as_ref(),
        )
        .await?;
        let js = jetstream::ContextBuilder::new()
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .backpressure_on_inflight(true)
            .build(client);
        if let Some(subject) = self.subject.fixed() {
            // a subject no stream captures would time out on every publish
            js.stream_by_subject(subject).await.map_err(|e| {
                Error::user(format!(
                    "no JetStream stream captures subject `{subject}`: {e}"
                ))
            })?;
        }
        self.js = Some(js);
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.start_write(events).await?.await
    }

    async fn start_write(&mut self, events: &[Event]) -> Result<Delivery> {
        let js = self.js.as_ref().ok_or_else(|| {
            Error::internal("the jetstream sink was written to before it was opened")
        })?;
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        for e in events {
            let subject = self.subject.subject_for(e, &mut self.buf)?;
            let id = format!(
                "{}-{}-{}",
                e.origin.source, e.origin.partition, e.origin.offset
            );
            let mut message = PublishMessage::build()
                .payload(e.value.clone())
                .message_id(id);
            if let Some(h) = headers(e) {
                for (k, values) in h.iter() {
                    for v in values {
                        message = message.header(k.clone(), v.clone());
                    }
                }
            }
            let ack = js
                .send_publish(subject, message)
                .await
                .map_err(|e| Error::retryable(format!("publishing: {e}")))?;
            acks.push(ack);
        }
        Ok(Box::pin(async move {
            for ack in acks {
                ack.await
                    .map_err(|e| Error::retryable(format!("waiting for the PubAck: {e}")))?;
            }
            Ok(())
        }))
    }

    fn max_inflight(&self) -> usize {
        self.options.max_inflight_batches
    }
}
