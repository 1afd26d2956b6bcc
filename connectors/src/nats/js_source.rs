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

use std::collections::VecDeque;
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

        let mut convert = Convert {
            name: name.clone(),
            redeliveries: metrics::counter!(names::JETSTREAM_REDELIVERIES, "source" => name.clone()),
            last_subject: None,
        };
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
        let mut blocked = WhileBlocked {
            backlog: VecDeque::new(),
            // the server delivers at most max_ack_pending unacked messages, so
            // that bounds what is held; a smaller cap would leave the pull
            // stream's prefetched messages unread (and redelivered)
            cap: o.max_ack_pending.max(1) as usize,
            client: client.clone(),
            every: (o.ack_wait / 3).max(Duration::from_millis(50)),
        };
        let mut position = 0u64;
        let shutdown = ctx.shutdown();
        tokio::pin!(shutdown);
        'read: loop {
            // what was read while a dispatch waited goes first, in order
            while let Some((event, delivered)) = blocked.backlog.pop_front() {
                if ctx.is_shutdown() {
                    blocked.backlog.push_front((event, delivered));
                    break 'read;
                }
                accept(
                    event,
                    delivered,
                    &mut position,
                    &mut pending,
                    &mut replies,
                    &mut ctx,
                    &mut acker,
                    &mut messages,
                    &mut convert,
                    &mut blocked,
                )
                .await?;
            }
            let deadline = pending.deadline();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = ctx.checkpoint_tick() => {
                    ctx.take_checkpoints(); // keeps the ledger short and its metrics current
                }
                _ = until(deadline) => {
                    dispatch(&mut ctx, &mut pending, &mut replies, &mut acker, &mut messages, &mut convert, &mut blocked).await?;
                }
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        let Some((event, delivered)) = convert.message(m) else { continue };
                        accept(event, delivered, &mut position, &mut pending, &mut replies, &mut ctx, &mut acker, &mut messages, &mut convert, &mut blocked).await?;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(source = %name, error = %e, "jetstream pull error; continuing");
                    }
                    None => return Err(Error::retryable(format!("jetstream source `{name}`: the message stream ended"))),
                },
            }
        }
        replies.extend(blocked.backlog.drain(..).map(|(_, d)| d));
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

/// Turns pulled messages into events.
struct Convert {
    name: String,
    redeliveries: metrics::Counter,
    last_subject: Option<Bytes>,
}

impl Convert {
    fn message(&mut self, m: jetstream::Message) -> Option<(Event, Delivered)> {
        let (stream_seq, delivered, published) = match m.info() {
            Ok(info) => (
                info.stream_sequence,
                info.delivered,
                info.published.unix_timestamp_nanos() / 1_000_000,
            ),
            Err(_) => (0, 1, 0),
        };
        if delivered > 1 {
            self.redeliveries.increment(1);
        }
        let Some(reply) = m.message.reply.clone() else {
            tracing::warn!(source = %self.name, "a jetstream message without a reply subject; skipped");
            return None;
        };
        let msg = m.message;
        if self.last_subject.as_deref() != Some(msg.subject.as_bytes()) {
            self.last_subject = Some(Bytes::copy_from_slice(msg.subject.as_bytes()));
        }
        let event = Event {
            key: self.last_subject.clone(),
            value: msg.payload,
            headers: event_headers(msg.headers.as_ref()),
            timestamp_ms: if published > 0 {
                published as i64
            } else {
                now_ms()
            },
            origin: Origin {
                offset: stream_seq,
                ..Origin::default()
            },
        };
        Some((event, Delivered { reply, delivered }))
    }
}

/// What the source keeps doing while a dispatch waits on a full shard: the
/// pull stream has already received the next messages from the server (their
/// `ack_wait` runs), so they are read into a backlog of at most `cap`
/// (`max_ack_pending`: the server delivers no more unacked messages) and
/// kept alive with in-progress acks until the dispatch is through.
struct WhileBlocked {
    backlog: VecDeque<(Event, Delivered)>,
    cap: usize,
    client: async_nats::Client,
    every: Duration,
}

type Messages = jetstream::consumer::pull::Stream;

/// Adds one message to the batch being built, dispatching when it is full.
#[allow(clippy::too_many_arguments)]
async fn accept(
    event: Event,
    delivered: Delivered,
    position: &mut u64,
    pending: &mut Pending,
    replies: &mut Vec<Delivered>,
    ctx: &mut SourceContext,
    acker: &mut Acker,
    messages: &mut Messages,
    convert: &mut Convert,
    blocked: &mut WhileBlocked,
) -> Result<()> {
    if pending.would_overflow(event.value.len()) {
        dispatch(ctx, pending, replies, acker, messages, convert, blocked).await?;
    }
    *position += 1;
    pending.push(event, *position);
    replies.push(delivered);
    if pending.is_full() {
        dispatch(ctx, pending, replies, acker, messages, convert, blocked).await?;
    }
    Ok(())
}

async fn dispatch(
    ctx: &mut SourceContext,
    pending: &mut Pending,
    replies: &mut Vec<Delivered>,
    acker: &mut Acker,
    messages: &mut Messages,
    convert: &mut Convert,
    blocked: &mut WhileBlocked,
) -> Result<()> {
    let Some((events, end)) = pending.take() else {
        return Ok(());
    };
    let id = acker.hold(std::mem::take(replies));
    let send = ctx.dispatch_tracked(0, events, end, Routing::Key);
    tokio::pin!(send);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + blocked.every, blocked.every);
    let mut ended = false;
    let result = loop {
        tokio::select! {
            biased;
            result = &mut send => break result,
            m = messages.next(), if !ended && blocked.backlog.len() < blocked.cap => match m {
                Some(Ok(m)) => {
                    if let Some(item) = convert.message(m) {
                        blocked.backlog.push_back(item);
                    }
                }
                // the main loop reports errors and the stream's end
                Some(Err(_)) => {}
                None => ended = true,
            },
            _ = progress.tick() => {
                for (_, d) in &blocked.backlog {
                    let _ = blocked.client.publish(d.reply.clone(), Bytes::from_static(b"+WPI")).await;
                }
                let _ = blocked.client.flush().await;
            }
        }
    };
    match result? {
        Some(state) => acker.dispatched(id, state),
        // given up at shutdown: never delivered, ask for redelivery now
        None => acker.given_up(id),
    }
    Ok(())
}
