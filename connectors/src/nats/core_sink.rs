//! The `nats` sink: publishes each event to a subject rendered from a
//! template, with its headers. A batch is done when the client flushed it
//! to the server (core NATS has no acknowledgement: delivery to subscribers
//! is at-most-once). An event whose subject cannot be rendered fails the
//! batch (and is dead-lettered with the batch).

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Result, Sink};

use super::client::connect;
use super::config::NatsSinkOptions;
use super::subject::{headers, SubjectTemplate};

/// Builds a `nats` sink.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let (options, subject) = NatsSinkOptions::from_config(config)?;
    Ok(Box::new(NatsSink {
        name: config.name.clone(),
        options,
        subject,
        client: None,
        buf: String::new(),
    }))
}

/// Publishes to core NATS.
#[derive(Debug)]
pub struct NatsSink {
    name: String,
    options: NatsSinkOptions,
    subject: SubjectTemplate,
    client: Option<async_nats::Client>,
    buf: String,
}

#[async_trait]
impl Sink for NatsSink {
    async fn open(&mut self) -> Result<()> {
        let client = connect(
            &self.options.url,
            &self.name,
            None,
            self.options.connect_timeout,
            self.options.tls.as_ref(),
        )
        .await?;
        self.client = Some(client);
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| Error::internal("the nats sink was written to before it was opened"))?;
        for e in events {
            let subject = self.subject.subject_for(e, &mut self.buf)?;
            let sent = match headers(e) {
                Some(h) => {
                    client
                        .publish_with_headers(subject, h, e.value.clone())
                        .await
                }
                None => client.publish(subject, e.value.clone()).await,
            };
            sent.map_err(|e| Error::retryable(format!("publishing: {e}")))?;
        }
        client
            .flush()
            .await
            .map_err(|e| Error::retryable(format!("flushing to the NATS server: {e}")))
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            let _ = client.flush().await;
        }
        Ok(())
    }
}
