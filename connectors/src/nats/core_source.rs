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
use weir_engine::driver::{self, Connector, Input, Positions};
use weir_engine::{Error, Event, Origin, Result, Routing, Source, SourceContext};

use super::client::connect;
use super::config::NatsSourceOptions;
use super::subject::event_headers;
use crate::control::{now_ms, until};
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
        let client = connect(
            &o.url,
            &name,
            Some(o.capacity),
            o.connect_timeout,
            o.tls.as_ref(),
        )
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
        let connector = NatsConnector {
            name,
            client,
            messages: futures_util::stream::select_all(subscriptions),
            pending: Pending::new(ctx.batch_settings(), ctx.batch_wait()),
            position: 0,
            last_subject: None,
            clock: now_ms(),
            carry: None,
        };
        driver::drive(connector, &mut ctx).await
    }
}

/// The subscriptions as a [`Connector`]; the engine's driver runs the loop.
struct NatsConnector {
    name: String,
    client: async_nats::Client,
    messages: futures_util::stream::SelectAll<async_nats::Subscriber>,
    pending: Pending,
    /// Messages received so far (an event's offset).
    position: u64,
    /// The subject of the last message: runs of one subject share one key.
    last_subject: Option<Bytes>,
    /// Read once per 256 messages.
    clock: i64,
    /// An event that did not fit the batch handed on before it.
    carry: Option<(Event, u64)>,
}

impl NatsConnector {
    fn event_of(&mut self, m: async_nats::Message) -> (Event, u64) {
        if self.last_subject.as_deref() != Some(m.subject.as_bytes()) {
            self.last_subject = Some(Bytes::copy_from_slice(m.subject.as_bytes()));
        }
        if self.position.is_multiple_of(256) {
            self.clock = now_ms();
        }
        let event = Event {
            key: self.last_subject.clone(),
            value: m.payload,
            headers: event_headers(m.headers.as_ref()),
            timestamp_ms: self.clock,
            origin: Origin {
                offset: self.position,
                ..Origin::default()
            },
        };
        self.position += 1;
        (event, self.position)
    }

    fn take(&mut self) -> Input {
        self.pending.take_input(0)
    }
}

#[async_trait]
impl Connector for NatsConnector {
    async fn read(&mut self) -> Result<Input> {
        if let Some((event, end)) = self.carry.take() {
            self.pending.push(event, end);
        }
        let deadline = self.pending.deadline();
        let first = tokio::select! {
            biased;
            _ = until(deadline) => return Ok(self.take()),
            m = self.messages.next() => m,
        };
        let Some(first) = first else {
            return Err(Error::retryable(format!(
                "nats source `{}`: the subscriptions ended (connection closed)",
                self.name
            )));
        };
        // take what is already buffered without another wait
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let (event, end) = self.event_of(m);
            if self.pending.would_overflow(event.value.len()) {
                self.carry = Some((event, end));
                return Ok(self.take());
            }
            self.pending.push(event, end);
            if self.pending.is_full() {
                return Ok(self.take());
            }
            next = self.messages.next().now_or_never().flatten();
        }
        Ok(Input::Idle)
    }

    fn routing(&self) -> Routing {
        Routing::Key
    }

    fn positions(&self) -> Positions {
        Positions::Untracked
    }

    /// Core NATS keeps nothing: what was received is handed on at a clean
    /// stop rather than lost.
    fn rest(&mut self) -> Option<Input> {
        if let Some((event, end)) = self.carry.take() {
            self.pending.push(event, end);
        }
        match self.take() {
            Input::Idle => None,
            batch => Some(batch),
        }
    }

    async fn close(&mut self) {
        let _ = self.client.drain().await;
    }
}
