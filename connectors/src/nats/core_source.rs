//! The `nats` source: core NATS subscriptions, optionally in a queue group.
//!
//! At-most-once: core NATS keeps nothing, so there is nothing to commit;
//! checkpoints only update metrics. Events are keyed by subject, so order
//! per subject holds across shards. A full shard makes the source wait; the
//! client buffers up to `capacity` messages per subscription meanwhile, and
//! beyond that the server drops them and reports a slow consumer (counted
//! and logged, see [`super::client`]).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Origin, Result, Routing, Source, SourceContext};

use super::client::connect;
use super::config::NatsSourceOptions;
use super::subject::event_headers;
use crate::control::{now_ms, until, Control, Wake};
use crate::pending::Pending;

/// Builds a `nats` source.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options = NatsSourceOptions::from_config(config)?;
    Ok(Box::new(NatsSource { options }))
}

/// Subscribes to core NATS subjects.
#[derive(Debug)]
pub struct NatsSource {
    options: NatsSourceOptions,
}

#[async_trait]
impl Source for NatsSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let o = self.options;
        let name = ctx.name().to_string();
        let client = connect(&o.url, &name, Some(o.capacity), o.connect_timeout)
            .await
            .map_err(|e| e.context(format!("nats source `{name}`")))?;
        let mut subscriptions = Vec::new();
        for subject in &o.subjects {
            let sub = match &o.queue_group {
                Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                None => client.subscribe(subject.clone()).await,
            }
            .map_err(|e| {
                Error::user(format!(
                    "nats source `{name}`: subscribing to `{subject}`: {e}"
                ))
            })?;
            subscriptions.push(sub);
        }
        let mut messages = futures_util::stream::select_all(subscriptions);
        let mut pending = Pending::new(ctx.batch_settings());
        let mut control = Control::new();
        let mut position = 0u64;
        let mut last_subject: Option<Bytes> = None;
        let mut clock = now_ms();
        loop {
            let deadline = pending.deadline();
            let input = async {
                tokio::select! {
                    biased;
                    _ = until(deadline) => None,
                    m = messages.next() => Some(m),
                }
            };
            match control.next(&mut ctx, input).await {
                Wake::Shutdown => break,
                Wake::Checkpoint => {
                    ctx.take_checkpoints();
                }
                Wake::Input(None) => dispatch(&mut ctx, &mut pending).await?,
                Wake::Input(Some(None)) => {
                    return Err(Error::retryable(format!(
                        "nats source `{name}`: the subscriptions ended (connection closed)"
                    )))
                }
                Wake::Input(Some(Some(first))) => {
                    // take what is already buffered without another wait
                    let mut next = Some(first);
                    while let Some(m) = next.take() {
                        // runs of one subject share one key buffer; the clock
                        // is read once per 256 messages
                        if last_subject.as_deref() != Some(m.subject.as_bytes()) {
                            last_subject = Some(Bytes::copy_from_slice(m.subject.as_bytes()));
                        }
                        if position.is_multiple_of(256) {
                            clock = now_ms();
                        }
                        let event = Event {
                            key: last_subject.clone(),
                            value: m.payload,
                            headers: event_headers(m.headers.as_ref()),
                            timestamp_ms: clock,
                            origin: Origin {
                                offset: position,
                                ..Origin::default()
                            },
                        };
                        position += 1;
                        if pending.would_overflow(event.value.len()) {
                            dispatch(&mut ctx, &mut pending).await?;
                        }
                        pending.push(event, position);
                        if pending.is_full() {
                            dispatch(&mut ctx, &mut pending).await?;
                            break;
                        }
                        next = messages.next().now_or_never().flatten();
                    }
                }
            }
        }
        // what was gathered but not dispatched is lost with core NATS anyway;
        // hand it on so a clean stop loses nothing it had received
        if let Some((events, end)) = pending.take() {
            let _ = ctx.dispatch(0, events, end, Routing::Key).await;
        }
        ctx.drain().await;
        ctx.take_checkpoints();
        let _ = client.drain().await;
        Ok(())
    }
}

async fn dispatch(ctx: &mut SourceContext, pending: &mut Pending) -> Result<()> {
    match pending.take() {
        Some((events, end)) => ctx.dispatch(0, events, end, Routing::Key).await,
        None => Ok(()),
    }
}
