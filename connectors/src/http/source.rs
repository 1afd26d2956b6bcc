//! The `http` source's loop: requests admitted by the route are batched
//! (whatever has arrived, never held back for company), dispatched with a
//! reply channel (sync) or tracked to their sinks' acknowledgement (async),
//! and answered by the [`Responder`] task, which alone owns the waiting
//! requests, so a full shard delays dispatch but never an answer that is
//! ready.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use weir_engine::ack::AckState;
use weir_engine::reply::{reply_channel, EventReply, Outcome, ReplyReceiver};
use weir_engine::{Completion, Error, Event, Result, Routing, Source, SourceContext};

use super::config::{HttpSourceConfig, Mode, RespondAfter};
use super::invoke::{Admission, Invocation};
use super::listener;
use super::pacing::InFlightBatches;
use super::respond;
use super::serve::{tls_acceptor, HttpResponse, ServeOptions};

/// Event header with the event's id (async mode): `RUN-OFFSET`, unique per
/// process run, returned in the 202 answer.
pub const ID_HEADER: &str = "http.id";

/// Serves one route and turns its requests into events.
#[derive(Debug)]
pub struct HttpSource {
    config: Arc<HttpSourceConfig>,
}

impl HttpSource {
    /// A source with checked options.
    pub fn new(config: HttpSourceConfig) -> Self {
        HttpSource {
            config: Arc::new(config),
        }
    }
}

/// What the source loop tells the responder.
enum Track {
    /// Requests with offsets `start..` wait for their answers.
    Waiting {
        start: u64,
        waiters: Vec<oneshot::Sender<HttpResponse>>,
    },
    /// The batch `start..end` was dispatched; `None`: given up at shutdown.
    Dispatched {
        start: u64,
        end: u64,
        state: Option<Arc<AckState>>,
    },
}

#[async_trait]
impl Source for HttpSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let config = self.config;
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(&files.cert, &files.key).map_err(Error::user)?),
            None => None,
        };
        let (tx, mut requests) = mpsc::unbounded_channel::<Invocation>();
        let admission = Arc::new(Admission::new(Arc::clone(&config), tx));
        let registered = listener::register(
            config.address,
            &config.path,
            config.method.clone(),
            ServeOptions {
                header_timeout: config.header_timeout,
                tls,
            },
            Arc::clone(&admission),
        )
        .map_err(|e| Error::user(format!("source `{}`: {e}", ctx.name())))?;
        tracing::info!(
            source = ctx.name(), address = %registered.bound, path = %config.path,
            mode = ?config.mode, "http source listening"
        );
        metrics::gauge!("weir_http_listening_port", "source" => ctx.name().to_string())
            .set(registered.bound.port() as f64);

        let run = run_id();
        let (reply_to, replies) = reply_channel();
        let (track, tracked) = mpsc::unbounded_channel();
        let pacing = InFlightBatches::new(ctx.shard_count());
        let responder = tokio::spawn(
            Responder {
                config: Arc::clone(&config),
                run_id: run,
                waiting: HashMap::new(),
                completions: FuturesUnordered::new(),
                pacing: pacing.clone(),
                unsettled: std::collections::BTreeMap::new(),
            }
            .run(tracked, replies),
        );
        let routing = if config.key_header.is_some() {
            Routing::Key
        } else {
            Routing::Partition
        };
        let max_events = ctx.batch_settings().max_events;
        let batch_wait = ctx.batch_wait();
        let max_bytes = ctx.batch_settings().max_bytes;
        let shards = ctx.shard_count() as u32;
        let mut next_offset = 0u64;
        let mut next_partition = 0u32;
        let mut batch: Vec<Invocation> = Vec::new();
        let result: Result<()> = loop {
            let shutdown = ctx.shutdown();
            tokio::select! {
                biased;
                _ = shutdown => break Ok(()),
                _ = ctx.checkpoint_tick() => {
                    ctx.take_checkpoints();
                    metrics::gauge!("weir_http_in_flight", "source" => ctx.name().to_string())
                        .set(admission.in_flight() as f64);
                }
                first = requests.recv() => {
                    let Some(first) = first else { break Ok(()) };
                    let mut bytes = first.event.value.len();
                    batch.push(first);
                    // whatever else has arrived joins the batch
                    while batch.len() < max_events && bytes < max_bytes {
                        match requests.try_recv() {
                            Ok(inv) => {
                                bytes += inv.event.value.len();
                                batch.push(inv);
                            }
                            Err(_) => break,
                        }
                    }
                    // the pipeline is busy with earlier batches: gather more
                    // until one settles (see `pacing`)
                    if pacing.busy() {
                        let deadline = tokio::time::Instant::now() + batch_wait.current();
                        while batch.len() < max_events && bytes < max_bytes {
                            tokio::select! {
                                biased;
                                inv = requests.recv() => match inv {
                                    Some(inv) => {
                                        bytes += inv.event.value.len();
                                        batch.push(inv);
                                    }
                                    None => break,
                                },
                                _ = pacing.wait_settled() => {
                                    if !pacing.busy() {
                                        break;
                                    }
                                }
                                _ = tokio::time::sleep_until(deadline) => break,
                            }
                        }
                    }
                    let start = next_offset;
                    let mut events: Vec<Event> = Vec::with_capacity(batch.len());
                    let mut waiters = Vec::with_capacity(batch.len());
                    for (i, inv) in batch.drain(..).enumerate() {
                        let mut event = inv.event;
                        event.origin.offset = start + i as u64;
                        if config.mode == Mode::Async {
                            event.headers.push((
                                Bytes::from_static(ID_HEADER.as_bytes()),
                                Bytes::from(event_id(run, event.origin.offset)),
                            ));
                        }
                        events.push(event);
                        waiters.push(inv.respond);
                    }
                    let end = start + events.len() as u64;
                    next_offset = end;
                    // waiting first, so a reply never arrives before its waiter
                    let _ = track.send(Track::Waiting { start, waiters });
                    pacing.started();
                    let partition = next_partition % shards.max(1);
                    next_partition = next_partition.wrapping_add(1);
                    let state = match config.mode {
                        Mode::Sync => {
                            ctx.dispatch_with_reply(partition, events, end, routing, reply_to.clone())
                                .await
                        }
                        Mode::Async => ctx.dispatch_tracked(partition, events, end, routing).await,
                    };
                    match state {
                        Ok(state) => {
                            let _ = track.send(Track::Dispatched { start, end, state });
                        }
                        Err(e) => {
                            let _ = track.send(Track::Dispatched { start, end, state: None });
                            break Err(e);
                        }
                    }
                }
            }
        };
        // stop taking requests; what was admitted and not dispatched is
        // refused (nothing of it was processed, the client may retry)
        admission.close();
        requests.close();
        while let Ok(inv) = requests.try_recv() {
            let _ = inv
                .respond
                .send(respond::unavailable("the source is stopping"));
        }
        ctx.drain().await;
        ctx.take_checkpoints();
        drop(track);
        drop(reply_to);
        let _ = responder.await;
        drop(registered);
        result
    }
}

/// A process-unique run id for event ids (time-based).
fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn event_id(run: u64, offset: u64) -> String {
    format!("{run:016x}-{offset}")
}

type CompletionFuture = Pin<Box<dyn Future<Output = (u64, u64, Completion)> + Send>>;

/// A request waiting for its answer, and what the steps made of it when
/// the answer also waits for the sinks.
struct Waiting {
    respond: oneshot::Sender<HttpResponse>,
    outcome: Option<Outcome>,
    /// The sinks acknowledged the batch before its reply arrived (replies
    /// of several lanes share one channel and may come late).
    delivered: bool,
}

/// Owns every waiting request; answers from replies and completions.
struct Responder {
    config: Arc<HttpSourceConfig>,
    /// Told when a batch settles: when all its replies came (answers
    /// after the steps) or when its sinks acknowledged it (otherwise).
    pacing: InFlightBatches,
    /// Batches not yet settled for pacing: start offset → (end, replies
    /// still to come).
    unsettled: std::collections::BTreeMap<u64, (u64, u64)>,
    run_id: u64,
    waiting: HashMap<u64, Waiting>,
    completions: FuturesUnordered<CompletionFuture>,
}

impl Responder {
    async fn run(
        mut self,
        mut tracked: mpsc::UnboundedReceiver<Track>,
        mut replies: ReplyReceiver,
    ) {
        let mut tracking = true;
        let mut replies_open = true;
        // once the source has stopped and every batch settled, replies
        // still on their way get this long
        let mut last_call: Option<tokio::time::Instant> = None;
        loop {
            if !tracking && self.completions.is_empty() {
                if self.waiting.is_empty() || !replies_open {
                    break;
                }
                last_call
                    .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(2));
            }
            tokio::select! {
                biased;
                t = tracked.recv(), if tracking => match t {
                    Some(t) => self.track(t),
                    None => tracking = false,
                },
                parts = replies.recv(), if replies_open => match parts {
                    Some(parts) => {
                        // a batch's waiters are registered before it is
                        // dispatched, so before its replies: take them first
                        self.track_arrived(&mut tracked, &mut tracking);
                        self.replied(parts);
                    }
                    None => replies_open = false,
                },
                Some((start, end, completion)) = self.completions.next(), if !self.completions.is_empty() => {
                    if self.unsettled.remove(&start).is_some() {
                        self.pacing.settled();
                    }
                    self.track_arrived(&mut tracked, &mut tracking);
                    self.completed(start, end, completion);
                }
                _ = crate::control::until(last_call), if last_call.is_some() => break,
            }
        }
        for (_, w) in self.waiting.drain() {
            let _ = w
                .respond
                .send(respond::unavailable("the source stopped before answering"));
        }
    }

    /// Takes every tracking message already sent (without waiting).
    fn track_arrived(&mut self, tracked: &mut mpsc::UnboundedReceiver<Track>, tracking: &mut bool) {
        while *tracking {
            match tracked.try_recv() {
                Ok(t) => self.track(t),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => *tracking = false,
            }
        }
    }

    fn track(&mut self, t: Track) {
        match t {
            Track::Waiting { start, waiters } => {
                // counted from before its dispatch: its replies may come
                // before the dispatch returns
                self.unsettled
                    .insert(start, (start + waiters.len() as u64, waiters.len() as u64));
                self.waiting.reserve(waiters.len());
                for (i, respond) in waiters.into_iter().enumerate() {
                    self.waiting.insert(
                        start + i as u64,
                        Waiting {
                            respond,
                            outcome: None,
                            delivered: false,
                        },
                    );
                }
            }
            Track::Dispatched {
                start,
                end,
                state: Some(state),
            } => {
                self.completions.push(Box::pin(
                    async move { (start, end, state.completed().await) },
                ));
            }
            Track::Dispatched {
                start,
                end,
                state: None,
            } => {
                if self.unsettled.remove(&start).is_some() {
                    self.pacing.settled();
                }
                for offset in start..end {
                    if let Some(w) = self.waiting.remove(&offset) {
                        let _ = w
                            .respond
                            .send(respond::unavailable("the source is stopping"));
                    }
                }
            }
        }
    }

    fn replied(&mut self, parts: Vec<EventReply>) {
        let answer_now =
            self.config.mode == Mode::Sync && self.config.respond_after == RespondAfter::Steps;
        if answer_now {
            self.count_replies(&parts);
        }
        for reply in parts {
            let Some(w) = self.waiting.get_mut(&reply.offset) else {
                continue;
            };
            if answer_now || w.delivered {
                if let Some(w) = self.waiting.remove(&reply.offset) {
                    let _ = w
                        .respond
                        .send(respond::outcome(reply.outcome, self.config.multiple));
                }
            } else {
                w.outcome = Some(reply.outcome);
            }
        }
    }

    /// Counts replies against their batch; a batch whose every reply came
    /// is settled for pacing.
    fn count_replies(&mut self, parts: &[EventReply]) {
        let Some(first) = parts.first() else {
            return;
        };
        let Some((&start, entry)) = self.unsettled.range_mut(..=first.offset).next_back() else {
            return;
        };
        if first.offset >= entry.0 {
            return;
        }
        entry.1 = entry.1.saturating_sub(parts.len() as u64);
        if entry.1 == 0 {
            self.unsettled.remove(&start);
            self.pacing.settled();
        }
    }

    fn completed(&mut self, start: u64, end: u64, completion: Completion) {
        for offset in start..end {
            let Some(w) = self.waiting.get_mut(&offset) else {
                continue;
            };
            let response = match (&completion, self.config.mode) {
                (Completion::Delivered, Mode::Async) => {
                    respond::accepted(&event_id(self.run_id, offset))
                }
                (Completion::Delivered, Mode::Sync) => match w.outcome.take() {
                    Some(o) => respond::outcome(o, self.config.multiple),
                    None => {
                        // delivered, so its lane ran it: the reply is on its way
                        w.delivered = true;
                        continue;
                    }
                },
                (Completion::Failed { given_up: true, .. }, _) => {
                    respond::unavailable("the source is stopping; the request was not processed")
                }
                (Completion::Failed { reason, .. }, _) => match w.outcome.take() {
                    // the steps failed it: that is the answer, the batch's
                    // failure is about other events or the dead-letter path
                    Some(o @ Outcome::Failed { .. }) if self.config.mode == Mode::Sync => {
                        respond::outcome(o, self.config.multiple)
                    }
                    _ => respond::error(StatusCode::BAD_GATEWAY, None, reason, true),
                },
            };
            if let Some(w) = self.waiting.remove(&offset) {
                let _ = w.respond.send(response);
            }
        }
    }
}
