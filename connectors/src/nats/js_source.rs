//! The `jetstream` source: a durable pull consumer whose messages are acked
//! only once every sink confirmed them.
//!
//! Messages are batched and dispatched keyed by subject. Each batch's
//! messages are settled upstream by the acker (`js_acker.rs`), which awaits
//! the batch's completion: acked once every sink confirmed it (explicit
//! acks: with several processes on one durable consumer an `AckPolicy::All`
//! ack would also ack other processes' messages), nak'ed with a delay or
//! terminated at `max_deliver` when it failed, and kept alive with
//! in-progress acks while it waits inside weir. A message never settled
//! (weir crashed) is redelivered by the server after `ack_wait`.
//! Messages gathered but not dispatched at shutdown are nak'ed so they are
//! redelivered at once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::telemetry::names;
use weir_engine::{Error, Event, Origin, Result, Routing, Source, SourceContext};

use super::client::connect;
use super::config::{DeliverPolicy, JetStreamSourceOptions};
use super::js_acker::{Acker, AckerSettings, Delivered};
use super::subject::event_headers;
use crate::control::{now_ms, until};
use crate::pending::Pending;

/// How long the server waits before redelivering a nak'ed message.
const NAK_DELAY: Duration = Duration::from_secs(1);

/// Builds a `jetstream` source.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options = JetStreamSourceOptions::from_config(config)?;
    Ok(Box::new(JetStreamSource { options }))
}

/// Reads a durable pull consumer.
#[derive(Debug)]
pub struct JetStreamSource {
    options: JetStreamSourceOptions,
}

#[async_trait]
impl Source for JetStreamSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let o = self.options;
        let name = ctx.name().to_string();
        let client = connect(&o.url, &name, None, o.connect_timeout)
            .await
            .map_err(|e| e.context(format!("jetstream source `{name}`")))?;
        let js = jetstream::new(client.clone());
        let stream = match js.get_stream(&o.stream).await {
            Ok(stream) => stream,
            Err(e) if o.create_stream => js
                .get_or_create_stream(jetstream::stream::Config {
                    name: o.stream.clone(),
                    subjects: o.subjects.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e2| {
                    Error::user(format!("jetstream source `{name}`: creating stream `{}` ({e}): {e2}", o.stream))
                })?,
            Err(e) => {
                return Err(Error::user(format!(
                    "jetstream source `{name}`: stream `{}` not found on `{}`: {e} (create it, or set `create_stream = true` with `subjects`)",
                    o.stream, o.url
                )))
            }
        };
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &o.consumer,
                pull::Config {
                    durable_name: Some(o.consumer.clone()),
                    filter_subject: o.filter_subject.clone().unwrap_or_default(),
                    deliver_policy: match o.deliver_policy {
                        DeliverPolicy::All => jetstream::consumer::DeliverPolicy::All,
                        DeliverPolicy::New => jetstream::consumer::DeliverPolicy::New,
                        DeliverPolicy::Last => jetstream::consumer::DeliverPolicy::Last,
                    },
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: o.ack_wait,
                    max_ack_pending: o.max_ack_pending,
                    max_deliver: o.max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                Error::user(format!(
                    "jetstream source `{name}`: consumer `{}` on stream `{}`: {e}",
                    o.consumer, o.stream
                ))
            })?;
        let batch_max = ctx
            .batch_settings()
            .max_events
            .min(o.max_ack_pending as usize)
            .max(1);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| Error::retryable(format!("jetstream source `{name}`: pulling: {e}")))?;
        tracing::info!(source = %name, stream = %o.stream, consumer = %o.consumer, "jetstream source pulling");

        let redeliveries =
            metrics::counter!(names::JETSTREAM_REDELIVERIES, "source" => name.clone());
        let mut pending = Pending::new(ctx.batch_settings());
        let mut replies: Vec<Delivered> = Vec::new();
        let mut acker = Acker::start(
            client.clone(),
            AckerSettings {
                name: name.clone(),
                max_deliver: o.max_deliver,
                nak_delay: NAK_DELAY,
                ack_wait: o.ack_wait,
            },
        );
        let mut position = 0u64;
        let mut last_subject: Option<Bytes> = None;
        let shutdown = ctx.shutdown();
        tokio::pin!(shutdown);
        loop {
            let deadline = pending.deadline();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = ctx.checkpoint_tick() => {
                    ctx.take_checkpoints(); // keeps the ledger short and its metrics current
                }
                _ = until(deadline) => {
                    dispatch(&mut ctx, &mut pending, &mut replies, &mut acker).await?;
                }
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        let (stream_seq, delivered, published) = match m.info() {
                            Ok(info) => (info.stream_sequence, info.delivered, info.published.unix_timestamp_nanos() / 1_000_000),
                            Err(_) => (0, 1, 0),
                        };
                        if delivered > 1 {
                            redeliveries.increment(1);
                        }
                        let Some(reply) = m.message.reply.clone() else {
                            tracing::warn!(source = %name, "a jetstream message without a reply subject; skipped");
                            continue;
                        };
                        let msg = m.message;
                        if last_subject.as_deref() != Some(msg.subject.as_bytes()) {
                            last_subject = Some(Bytes::copy_from_slice(msg.subject.as_bytes()));
                        }
                        let event = Event {
                            key: last_subject.clone(),
                            value: msg.payload,
                            headers: event_headers(msg.headers.as_ref()),
                            timestamp_ms: if published > 0 { published as i64 } else { now_ms() },
                            origin: Origin { offset: stream_seq, ..Origin::default() },
                        };
                        if pending.would_overflow(event.value.len()) {
                            dispatch(&mut ctx, &mut pending, &mut replies, &mut acker).await?;
                        }
                        position += 1;
                        pending.push(event, position);
                        replies.push(Delivered { reply, delivered });
                        if pending.is_full() {
                            dispatch(&mut ctx, &mut pending, &mut replies, &mut acker).await?;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(source = %name, error = %e, "jetstream pull error; continuing");
                    }
                    None => return Err(Error::retryable(format!("jetstream source `{name}`: the message stream ended"))),
                },
            }
        }
        // not dispatched: ask for redelivery now rather than after ack_wait
        for m in replies.drain(..) {
            let _ = client.publish(m.reply, Bytes::from_static(b"-NAK")).await;
        }
        drop(pending);
        ctx.drain().await;
        ctx.take_checkpoints();
        acker.finish().await?;
        let _ = client.flush().await;
        Ok(())
    }
}

async fn dispatch(
    ctx: &mut SourceContext,
    pending: &mut Pending,
    replies: &mut Vec<Delivered>,
    acker: &mut Acker,
) -> Result<()> {
    if let Some((events, end)) = pending.take() {
        let id = acker.hold(std::mem::take(replies));
        match ctx.dispatch_tracked(0, events, end, Routing::Key).await? {
            Some(state) => acker.dispatched(id, state),
            // given up at shutdown: never delivered, ask for redelivery now
            None => acker.given_up(id),
        }
    }
    Ok(())
}
