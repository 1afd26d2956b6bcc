//! The read loop shared by the line-oriented sources (`file`, `stdin`):
//! read a chunk, frame its lines, gather them into batches of partition 0,
//! dispatch, commit on every checkpoint tick, and at end of input dispatch
//! the rest, drain and commit once more.

use std::future::Future;
use std::io;

use weir_engine::{Error, Event, Origin, Result, Routing, SourceContext};

use crate::control::{now_ms, until, Control, Wake};
use crate::lines::{Framer, Line, LineFormat};
use crate::pending::Pending;

/// Where a line source's bytes come from.
pub(crate) trait ChunkReader: Send {
    /// Appends the next chunk of input to `framer`; `Ok(0)` at end of input.
    /// Must be cancel safe: when dropped unfinished, no input is lost.
    fn read<'a>(
        &'a mut self,
        framer: &'a mut Framer,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

/// What an event's position counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counting {
    /// Byte offsets: an event's offset is where its line starts, a batch
    /// ends at the byte after its last line.
    Bytes,
    /// Line numbers from 0: a batch ends at its last line's number + 1.
    Lines,
}

/// What a checkpoint does with the acked positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Writes them to the local checkpoint store (a restart resumes there).
    Local,
    /// Only records them in metrics (the input cannot be replayed).
    Metrics,
}

/// How to run the loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Framing of lines into events.
    pub(crate) format: LineFormat,
    /// What positions count.
    pub(crate) counting: Counting,
    /// What a checkpoint does.
    pub(crate) commit: Commit,
    /// Position of the first byte or line read.
    pub(crate) start: u64,
}

/// Runs until end of input or shutdown; returns after the final drain and commit.
pub(crate) async fn run(
    ctx: &mut SourceContext,
    mut reader: impl ChunkReader,
    spec: Spec,
) -> Result<()> {
    let mut framer = Framer::new(spec.format);
    let mut pending = Pending::new(ctx.batch_settings());
    let mut position = spec.start;
    let mut control = Control::new();
    loop {
        let deadline = pending.deadline();
        let input = async {
            tokio::select! {
                biased;
                _ = until(deadline) => None,
                read = reader.read(&mut framer) => Some(read),
            }
        };
        match control.next(ctx, input).await {
            Wake::Shutdown => break,
            Wake::Checkpoint => commit(ctx, spec.commit, false).await?,
            Wake::Input(None) => dispatch(ctx, &mut pending).await?,
            Wake::Input(Some(Err(e))) => return Err(Error::from(e)),
            Wake::Input(Some(Ok(0))) => {
                if let Some(line) = framer.finish() {
                    if pending.would_overflow(line.len()) {
                        dispatch(ctx, &mut pending).await?;
                    }
                    add(&mut pending, line, &mut position, spec, now_ms());
                }
                dispatch(ctx, &mut pending).await?;
                break;
            }
            Wake::Input(Some(Ok(_))) => {
                let ts = now_ms();
                while let Some(line) = framer.next_line() {
                    if pending.would_overflow(line.len()) {
                        dispatch(ctx, &mut pending).await?;
                    }
                    add(&mut pending, line, &mut position, spec, ts);
                    if pending.is_full() {
                        dispatch(ctx, &mut pending).await?;
                    }
                }
            }
        }
    }
    ctx.drain().await;
    commit(ctx, spec.commit, true).await
}

/// Adds a framed line to the batch and moves the position past it.
fn add(pending: &mut Pending, line: Line, position: &mut u64, spec: Spec, ts: i64) {
    let offset = *position;
    *position += match spec.counting {
        Counting::Bytes => line.consumed as u64,
        Counting::Lines => 1,
    };
    match line.value {
        Some(value) => {
            let origin = Origin {
                offset,
                ..Origin::default()
            };
            let event = match spec.format {
                LineFormat::Envelope => from_envelope(value, ts),
                _ => Event {
                    key: None,
                    value,
                    headers: Vec::new(),
                    timestamp_ms: ts,
                    origin,
                },
            };
            pending.push(Event { origin, ..event }, *position);
        }
        None => pending.advance(*position),
    }
}

/// The event an envelope line describes; a line that is not one goes on as
/// it is, with the reason in `weir.envelope.error` (a step may route it).
fn from_envelope(line: bytes::Bytes, ts: i64) -> Event {
    match crate::envelope::read_envelope(&line) {
        Ok(event) => event,
        Err(reason) => Event {
            key: None,
            value: line,
            headers: vec![(
                bytes::Bytes::from_static(b"weir.envelope.error"),
                bytes::Bytes::from(reason.into_bytes()),
            )],
            timestamp_ms: ts,
            origin: Origin::default(),
        },
    }
}

/// Dispatches the gathered events, if any, to partition 0.
async fn dispatch(ctx: &mut SourceContext, pending: &mut Pending) -> Result<()> {
    match pending.take() {
        Some((events, end)) => ctx.dispatch(0, events, end, Routing::Partition).await,
        None => Ok(()),
    }
}

/// Commits acked positions. A failed periodic commit is logged and retried
/// at the next tick; a failed final commit is returned.
async fn commit(ctx: &mut SourceContext, how: Commit, last: bool) -> Result<()> {
    match how {
        Commit::Metrics => {
            ctx.take_checkpoints();
            Ok(())
        }
        Commit::Local => match ctx.commit_local().await {
            Ok(_) => Ok(()),
            Err(e) if last => Err(e.context("committing the final checkpoint")),
            Err(e) => {
                tracing::warn!(source = %ctx.name(), error = %e, "checkpoint commit failed; retrying at the next tick");
                Ok(())
            }
        },
    }
}
