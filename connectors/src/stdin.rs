//! The `stdin` source: reads standard input line by line and ends at end
//! of input.
//!
//! - **Delivery**: at-least-once within a run, but stdin cannot be replayed:
//!   lines not delivered when the process stops are lost with it. Use the
//!   `file` source to resume after a restart.
//! - **Ordering**: input order; everything is partition 0.
//! - **Partitions**: one, partition 0. An event's offset is its line number
//!   (from 0); a batch's end position is its last line number + 1.
//! - **Backpressure**: a dedicated thread reads 256 KiB chunks into a
//!   channel of [`QUEUED_CHUNKS`]; while the owning shard is full the source
//!   stops taking chunks, the thread stops reading and the writer of the
//!   pipe blocks.
//! - **Checkpoint**: acked line numbers are recorded in metrics only;
//!   nothing is written to the checkpoint store.
//! - **End**: at end of input the rest is dispatched, the pipeline drains and
//!   the source returns. The reading thread is detached, so a shutdown does
//!   not wait for a terminal to send a line.
//!
//! ```toml
//! [sources.in]
//! type = "stdin"
//! format = "json"
//! ```

use std::io::{self, Read};

use async_trait::async_trait;
use bytes::BytesMut;
use serde::Deserialize;
use tokio::sync::mpsc;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::driver::{self, Positions};
use weir_engine::{Error, Result, Source, SourceContext};

use crate::line_source::{ChunkReader, Counting, LineConnector, Spec};
use crate::lines::{Framer, LineFormat, CHUNK, MIN_READ};

/// Chunks read ahead of the source, at most.
pub const QUEUED_CHUNKS: usize = 4;

/// Options of the `stdin` source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinOptions {
    /// `"lines"` (default): every line is an event; `"json"`: one JSON
    /// document per line, blank lines skipped.
    #[serde(default)]
    pub format: LineFormat,
}

/// Builds a `stdin` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options: StdinOptions = config.options()?;
    Ok(Box::new(StdinSource::new(options)))
}

/// A reader the source takes its input from.
type Input = Box<dyn Read + Send>;

/// Reads standard input (or, in tests, any reader) line by line.
pub struct StdinSource {
    options: StdinOptions,
    input: Option<Input>,
}

impl StdinSource {
    /// A source reading the process's standard input.
    pub fn new(options: StdinOptions) -> Self {
        StdinSource {
            options,
            input: None,
        }
    }

    /// A source reading `input` instead of standard input.
    pub fn from_reader(options: StdinOptions, input: impl Read + Send + 'static) -> Self {
        StdinSource {
            options,
            input: Some(Box::new(input)),
        }
    }
}

/// Chunks arriving from the reading thread; the channel closes at end of input.
struct ThreadChunks(mpsc::Receiver<io::Result<BytesMut>>);

impl ChunkReader for ThreadChunks {
    async fn read(&mut self, framer: &mut Framer) -> io::Result<usize> {
        match self.0.recv().await {
            Some(Ok(chunk)) => {
                let n = chunk.len();
                framer.push(chunk);
                Ok(n)
            }
            Some(Err(e)) => Err(e),
            None => Ok(0),
        }
    }
}

/// Reads `input` on its own thread until end of input, an error, or the
/// receiver is gone. Blocking reads never occupy a runtime thread.
fn spawn_reader(mut input: Input, tx: mpsc::Sender<io::Result<BytesMut>>) -> io::Result<()> {
    let read = move || {
        let mut buf = BytesMut::new();
        loop {
            // Small reads (a terminal) share one allocation instead of
            // pinning a whole chunk each.
            if buf.capacity() < MIN_READ {
                buf.reserve(CHUNK);
            }
            buf.resize(buf.capacity(), 0);
            match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.split())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    };
    std::thread::Builder::new()
        .name("weir-stdin".into())
        .spawn(read)
        .map(drop)
}

#[async_trait]
impl Source for StdinSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let StdinSource { options, input } = *self;
        let input = input.unwrap_or_else(|| Box::new(io::stdin()));
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        spawn_reader(input, tx)
            .map_err(|e| Error::internal(format!("starting the stdin reader thread: {e}")))?;
        let spec = Spec {
            format: options.format,
            counting: Counting::Lines,
            positions: Positions::Untracked,
            start: 0,
        };
        let connector = LineConnector::new(
            ThreadChunks(rx),
            spec,
            ctx.batch_settings(),
            ctx.batch_wait(),
        );
        driver::drive(connector, &mut ctx)
            .await
            .map_err(|e| e.context("reading stdin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{options_error, Harness};

    #[tokio::test]
    async fn lines_are_numbered() {
        let input = io::Cursor::new(b"a\r\n\nb\nc".to_vec());
        let source = StdinSource::from_reader(StdinOptions::default(), input);
        let run = Harness::new(1).run(Box::new(source)).await;
        run.assert_ok();
        let got: Vec<(String, u64)> = run
            .events()
            .iter()
            .map(|e| {
                (
                    String::from_utf8(e.value.to_vec()).unwrap(),
                    e.origin.offset,
                )
            })
            .collect();
        let want = [("a", 0), ("", 1), ("b", 2), ("c", 3)].map(|(v, o)| (v.to_string(), o));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn json_format_skips_blank_lines() {
        let input = io::Cursor::new(b"{}\n\n[1]\n".to_vec());
        let source = StdinSource::from_reader(
            StdinOptions {
                format: LineFormat::Json,
            },
            input,
        );
        let run = Harness::new(1).run(Box::new(source)).await;
        run.assert_ok();
        let offsets: Vec<u64> = run.events().iter().map(|e| e.origin.offset).collect();
        assert_eq!(offsets, [0, 2]);
    }

    /// A reader that yields its lines one read at a time, then blocks forever.
    struct Trickle(Vec<&'static [u8]>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop() {
                Some(line) => {
                    buf[..line.len()].copy_from_slice(line);
                    Ok(line.len())
                }
                None => loop {
                    std::thread::park();
                },
            }
        }
    }

    #[tokio::test]
    async fn idle_input_dispatches_by_time_and_stops_on_shutdown() {
        let source =
            StdinSource::from_reader(StdinOptions::default(), Trickle(vec![b"two\n", b"one\n"]));
        let run = Harness::new(1)
            .shutdown_after(std::time::Duration::from_millis(200))
            .run(Box::new(source))
            .await;
        run.assert_ok();
        assert_eq!(run.events().len(), 2, "a partial batch goes after max_wait");
    }

    #[test]
    fn unknown_option_is_located() {
        assert_eq!(
            options_error(build, "formt = 'json'"),
            "error: <inline>:1:1: unknown field `formt`, expected `format`; did you mean `format`?"
        );
    }
}
