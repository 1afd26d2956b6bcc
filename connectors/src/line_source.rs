//! The connector shared by the line-oriented sources (`file`, `stdin`):
//! read a chunk, frame its lines and gather them into batches of
//! partition 0. The loop around it (dispatch, checkpoint ticks, drain,
//! commits) is the engine's [`weir_engine::driver`].

use std::future::Future;
use std::io;

use async_trait::async_trait;
use weir_engine::driver::{Connector, Input, Positions};
use weir_engine::{Error, Event, Origin, Result};

use crate::control::{now_ms, until};
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

/// How to run the loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Framing of lines into events.
    pub(crate) format: LineFormat,
    /// What positions count.
    pub(crate) counting: Counting,
    /// Where positions are kept: the local store (files, read again from
    /// there after a restart) or nowhere (stdin).
    pub(crate) positions: Positions,
    /// Position of the first byte or line read.
    pub(crate) start: u64,
}

/// A line-oriented input as a [`Connector`]: the engine's driver runs the
/// loop (shutdown, checkpoint ticks, dispatch, drain, final commit).
pub(crate) struct LineConnector<R> {
    reader: R,
    framer: Framer,
    pending: Pending,
    position: u64,
    spec: Spec,
    /// A framed line that did not fit the batch handed on before it.
    carry: Option<Line>,
    /// The input ended; what is left goes out, then [`Input::End`].
    eof: bool,
}

impl<R: ChunkReader> LineConnector<R> {
    /// A connector reading `reader` with `batch` limits and `wait`.
    pub(crate) fn new(
        reader: R,
        spec: Spec,
        batch: &weir_config::BatchSettings,
        wait: std::sync::Arc<weir_engine::batch_wait::BatchWait>,
    ) -> Self {
        LineConnector {
            reader,
            framer: Framer::new(spec.format),
            pending: Pending::new(batch, wait),
            position: spec.start,
            spec,
            carry: None,
            eof: false,
        }
    }

    /// Moves framed lines into the batch; returns it once it is full (or
    /// the next line would take it past `max_bytes`).
    fn gather_framed(&mut self, ts: i64) -> Option<Input> {
        if let Some(line) = self.carry.take() {
            add(&mut self.pending, line, &mut self.position, self.spec, ts);
        }
        while let Some(line) = self.framer.next_line() {
            if self.pending.would_overflow(line.len()) {
                self.carry = Some(line);
                return Some(self.take());
            }
            add(&mut self.pending, line, &mut self.position, self.spec, ts);
            if self.pending.is_full() {
                return Some(self.take());
            }
        }
        None
    }

    /// The gathered batch (partition 0), or [`Input::Idle`] when empty.
    fn take(&mut self) -> Input {
        self.pending.take_input(0)
    }
}

#[async_trait]
impl<R: ChunkReader> Connector for LineConnector<R> {
    async fn read(&mut self) -> Result<Input> {
        loop {
            if let Some(batch) = self.gather_framed(now_ms()) {
                return Ok(batch);
            }
            if self.eof {
                return Ok(match self.take() {
                    Input::Idle => Input::End,
                    batch => batch,
                });
            }
            let deadline = self.pending.deadline();
            tokio::select! {
                biased;
                _ = until(deadline) => return Ok(self.take()),
                read = self.reader.read(&mut self.framer) => match read {
                    Err(e) => return Err(Error::from(e)),
                    Ok(0) => {
                        self.eof = true;
                        self.carry = self.framer.finish();
                    }
                    Ok(_) => {}
                },
            }
        }
    }

    fn positions(&self) -> Positions {
        self.spec.positions
    }
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
