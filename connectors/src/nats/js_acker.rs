//! Settles a `jetstream` source's messages upstream, on a task of its own.
//!
//! The source hands every batch's messages to the acker *before* it
//! dispatches the batch ([`Acker::hold`]), then the batch's completion state
//! ([`Acker::dispatched`]). The acker awaits each batch's completion (pushed
//! by the engine, never polled) and then acks its messages (`+ACK`), or, if
//! the batch failed, naks them with a delay (`-NAK`) or terminates those
//! delivered `max_deliver` times (`+TERM`). Batches settle independently:
//! JetStream acks are per message, so one batch in flight holds back none
//! of the others.
//!
//! While a batch waits inside weir — a full shard blocks the source's
//! dispatch, a sink retries — the acker sends in-progress acks (`+WPI`) for
//! its messages every third of `ack_wait`, so the server does not redeliver
//! them (a duplicate) or count a delivery towards `max_deliver`. That is why
//! it is a task of its own: the source itself may be blocked in `dispatch`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use weir_engine::ack::{AckState, Completion};
use weir_engine::telemetry::names;
use weir_engine::{Error, Result};

/// One received message: where to ack it and how often it was delivered.
#[derive(Debug)]
pub struct Delivered {
    /// The message's reply subject (its ack address).
    pub reply: Subject,
    /// How many times the server delivered it.
    pub delivered: i64,
}

enum Command {
    Hold(u64, Vec<Delivered>),
    Dispatched(u64, Arc<AckState>),
    GivenUp(u64),
}

/// The source's end of the acker.
pub struct Acker {
    tx: mpsc::UnboundedSender<Command>,
    next: u64,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// How the acker settles messages.
#[derive(Debug, Clone)]
pub struct AckerSettings {
    /// The source's name (logs, metrics).
    pub name: String,
    /// Terminate instead of nak at this many deliveries.
    pub max_deliver: i64,
    /// Redelivery delay asked for with a nak.
    pub nak_delay: Duration,
    /// The consumer's `ack_wait`: in-progress acks go out every third of it.
    pub ack_wait: Duration,
}

impl Acker {
    /// Starts the acker task.
    pub fn start(client: async_nats::Client, settings: AckerSettings) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, rx, settings));
        Acker { tx, next: 0, task }
    }

    /// Takes a batch's messages before its dispatch; returns its id. From
    /// now on they get in-progress acks until the batch settles.
    pub fn hold(&mut self, messages: Vec<Delivered>) -> u64 {
        let id = self.next;
        self.next += 1;
        let _ = self.tx.send(Command::Hold(id, messages));
        id
    }

    /// The batch `id` was dispatched: settle its messages when it completes.
    pub fn dispatched(&self, id: u64, state: Arc<AckState>) {
        let _ = self.tx.send(Command::Dispatched(id, state));
    }

    /// The batch `id` was given up at shutdown before it reached a shard:
    /// nak its messages now so they are redelivered at once.
    pub fn given_up(&self, id: u64) {
        let _ = self.tx.send(Command::GivenUp(id));
    }

    /// Settles what has completed and stops (call after the source drained).
    /// Messages of batches still in flight are left to the server's
    /// redelivery after `ack_wait`.
    pub async fn finish(self) -> Result<()> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| Error::internal(format!("jetstream acker: {e}")))?
    }
}

async fn run(
    client: async_nats::Client,
    mut rx: mpsc::UnboundedReceiver<Command>,
    s: AckerSettings,
) -> Result<()> {
    let in_progress = metrics::counter!(names::JETSTREAM_IN_PROGRESS, "source" => s.name.clone());
    let mut held: HashMap<u64, Vec<Delivered>> = HashMap::new();
    let mut waiting = FuturesUnordered::new();
    let every = (s.ack_wait / 3).max(Duration::from_millis(50));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            command = rx.recv(), if open => match command {
                Some(Command::Hold(id, messages)) => { held.insert(id, messages); }
                Some(Command::Dispatched(id, state)) => {
                    waiting.push(async move { (id, state.completed().await) });
                }
                Some(Command::GivenUp(id)) => {
                    let given_up = Completion::Failed { reason: Arc::from("given up at shutdown"), given_up: true };
                    settle(&client, &s, held.remove(&id), &given_up).await?;
                    flush(&client).await?;
                }
                None => open = false,
            },
            Some((id, completion)) = waiting.next() => {
                settle(&client, &s, held.remove(&id), &completion).await?;
                // settle whatever else completed meanwhile, then flush once
                while let Some(Some((id, completion))) = waiting.next().now_or_never() {
                    settle(&client, &s, held.remove(&id), &completion).await?;
                }
                flush(&client).await?;
            }
            _ = progress.tick() => {
                let mut sent = 0u64;
                for messages in held.values() {
                    for m in messages {
                        client
                            .publish(m.reply.clone(), Bytes::from_static(b"+WPI"))
                            .await
                            .map_err(|e| Error::retryable(format!("in-progress ack: {e}")))?;
                        sent += 1;
                    }
                }
                if sent > 0 {
                    in_progress.increment(sent);
                    flush(&client).await?;
                }
            }
        }
        if !open {
            // the source drained: settle what completed, leave the rest
            while let Some(Some((id, completion))) = waiting.next().now_or_never() {
                settle(&client, &s, held.remove(&id), &completion).await?;
            }
            flush(&client).await?;
            return Ok(());
        }
    }
}

async fn flush(client: &async_nats::Client) -> Result<()> {
    client
        .flush()
        .await
        .map_err(|e| Error::retryable(format!("flushing acks: {e}")))
}

/// Acks, naks or terminates one batch's messages.
async fn settle(
    client: &async_nats::Client,
    s: &AckerSettings,
    messages: Option<Vec<Delivered>>,
    completion: &Completion,
) -> Result<()> {
    let Some(messages) = messages else {
        return Ok(());
    };
    let (mut nak, mut term) = (0usize, 0usize);
    // a batch given up at shutdown was never processed: always redelivered
    let last_chance = !matches!(completion, Completion::Failed { given_up: true, .. });
    for m in messages {
        let body: Bytes = match completion {
            Completion::Delivered => Bytes::from_static(b"+ACK"),
            _ if last_chance && m.delivered >= s.max_deliver => {
                term += 1;
                Bytes::from_static(b"+TERM")
            }
            _ => {
                nak += 1;
                format!("-NAK {{\"delay\":{}}}", s.nak_delay.as_nanos()).into()
            }
        };
        client
            .publish(m.reply, body)
            .await
            .map_err(|e| Error::retryable(format!("acking: {e}")))?;
    }
    if let Completion::Failed { reason, given_up } = completion {
        if nak > 0 && !given_up {
            tracing::warn!(source = %s.name, messages = nak, %reason, "batch failed delivery; messages nak'ed for redelivery");
        }
        if term > 0 {
            metrics::counter!(names::DROPPED, "stage" => s.name.clone()).increment(term as u64);
            tracing::error!(source = %s.name, messages = term, %reason,
                "messages failed on their last delivery (max_deliver) and were terminated; configure a dead-letter sink to keep them");
        }
    }
    Ok(())
}
