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
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::ack::AckState;
use weir_engine::driver::{drive, Connector, Input, Positions};
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
        let client = connect(&o.url, &name, None, o.connect_timeout, o.tls.as_ref())
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
                    o.stream, crate::redact::url(&o.url)
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
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| Error::retryable(format!("jetstream source `{name}`: pulling: {e}")))?;
        tracing::info!(source = %name, stream = %o.stream, consumer = %o.consumer, "jetstream source pulling");
        let acker = Acker::start(
            client.clone(),
            AckerSettings {
                name: name.clone(),
                max_deliver: o.max_deliver,
                nak_delay: NAK_DELAY,
                ack_wait: o.ack_wait,
            },
        );
        let connector = JetStreamConnector {
            convert: Convert {
                name: name.clone(),
                redeliveries: metrics::counter!(names::JETSTREAM_REDELIVERIES, "source" => name.clone()),
                last_subject: None,
            },
            name,
            messages,
            pending: Pending::new(ctx.batch_settings(), ctx.batch_wait()),
            replies: Vec::new(),
            carry: None,
            position: 0,
            acker: Some(acker),
            read: VecDeque::new(),
            // the server delivers at most max_ack_pending unacked messages:
            // read ahead that many (in batches, and the one being built) so
            // none of them waits unread while its ack_wait runs
            read_ahead: (o.max_ack_pending.max(1) as usize).div_ceil(batch_max) + 1,
            client,
        };
        drive(connector, &mut ctx).await
    }
}

/// The `jetstream` source's connector: pulls messages into batches; every
/// batch's messages are held by the acker (in-progress acks) from the moment
/// the batch is complete until it settles.
struct JetStreamConnector {
    name: String,
    client: async_nats::Client,
    messages: jetstream::consumer::pull::Stream,
    convert: Convert,
    /// The batch being built.
    pending: Pending,
    /// Its messages' ack addresses.
    replies: Vec<Delivered>,
    /// A message that did not fit in the batch just handed on.
    carry: Option<(Event, Delivered)>,
    /// Events numbered so far (the ledger's positions).
    position: u64,
    /// Settles the messages; taken at close.
    acker: Option<Acker>,
    /// Acker ids of the batches read and not yet reported dispatched, oldest
    /// first.
    read: VecDeque<u64>,
    /// Inputs the driver reads ahead while a dispatch waits.
    read_ahead: usize,
}

impl JetStreamConnector {
    fn acker(&mut self) -> &mut Acker {
        self.acker.as_mut().expect("the acker is taken at close")
    }

    /// Hands the batch being built on; its messages are held by the acker.
    fn take(&mut self) -> Input {
        let Some((events, end)) = self.pending.take() else {
            return Input::Idle;
        };
        let replies = std::mem::take(&mut self.replies);
        let id = self.acker().hold(replies);
        self.read.push_back(id);
        Input::Batch {
            partition: 0,
            events,
            end,
        }
    }

    /// Adds a message to the batch; returns a full batch to hand on.
    fn add(&mut self, event: Event, delivered: Delivered) -> Option<Input> {
        if self.pending.would_overflow(event.value.len()) {
            self.carry = Some((event, delivered));
            return Some(self.take());
        }
        self.position += 1;
        self.pending.push(event, self.position);
        self.replies.push(delivered);
        self.pending.is_full().then(|| self.take())
    }
}

#[async_trait]
impl Connector for JetStreamConnector {
    async fn read(&mut self) -> Result<Input> {
        if let Some((event, delivered)) = self.carry.take() {
            if let Some(full) = self.add(event, delivered) {
                return Ok(full);
            }
        }
        loop {
            let deadline = self.pending.deadline();
            // both cancel safe: the stream keeps what it has not returned
            let m = tokio::select! {
                biased;
                _ = until(deadline) => return Ok(self.take()),
                m = self.messages.next() => m,
            };
            match m {
                Some(Ok(m)) => {
                    let Some((event, delivered)) = self.convert.message(m) else {
                        continue;
                    };
                    if let Some(full) = self.add(event, delivered) {
                        return Ok(full);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(source = %self.name, error = %e, "jetstream pull error; continuing");
                }
                None => {
                    return Err(Error::retryable(format!(
                        "jetstream source `{}`: the message stream ended",
                        self.name
                    )))
                }
            }
        }
    }

    fn routing(&self) -> Routing {
        Routing::Key
    }

    fn positions(&self) -> Positions {
        // each batch is settled upstream by the acker
        Positions::Untracked
    }

    fn tracks_batches(&self) -> bool {
        true
    }

    fn settles_each_batch(&self) -> bool {
        true
    }

    fn dispatched(&mut self, outcome: Option<Arc<AckState>>) {
        let Some(id) = self.read.pop_front() else {
            return;
        };
        match outcome {
            Some(state) => self.acker().dispatched(id, state),
            // never dispatched: nak now, redelivered at once
            None => self.acker().given_up(id),
        }
    }

    fn read_ahead(&self) -> usize {
        self.read_ahead
    }

    fn held(&self) -> usize {
        self.pending.len()
    }

    async fn close(&mut self) {
        // gathered, or received and not read yet: ask for redelivery now
        // rather than after ack_wait
        let mut unread: Vec<async_nats::Subject> =
            self.replies.drain(..).map(|d| d.reply).collect();
        unread.extend(self.carry.take().map(|(_, d)| d.reply));
        while let Some(Some(Ok(m))) = self.messages.next().now_or_never() {
            unread.extend(m.message.reply.clone());
        }
        for reply in unread {
            let _ = self
                .client
                .publish(reply, Bytes::from_static(b"-NAK"))
                .await;
        }
        if let Some(acker) = self.acker.take() {
            if let Err(e) = acker.finish().await {
                tracing::warn!(source = %self.name, error = %e, "settling the last jetstream acks failed");
            }
        }
        let _ = self.client.flush().await;
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
