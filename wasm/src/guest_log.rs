//! A guest's stdout and stderr: each line goes to weir's log under the
//! function's name, and the last line is kept so that a trap's reason can
//! say what the guest printed before it (a Rust panic prints its message
//! to stderr and then traps).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line kept or logged; the rest of a longer line is cut.
const MAX_LINE: usize = 1024;

/// Lines kept for a trap's reason.
const RECENT: usize = 3;

/// Lines per second an instance may put into weir's log; the rest are
/// counted and the count is logged (a guest printing per event must not
/// flood the log or slow its lane).
const LINES_PER_SECOND: u32 = 100;

/// One guest instance's output, shared by its stdout and stderr streams.
#[derive(Clone)]
pub struct GuestLog {
    inner: Arc<Mutex<LogState>>,
}

struct LogState {
    /// The function's name, for the log.
    function: Arc<str>,
    /// The line being written.
    partial: Vec<u8>,
    /// The last few complete lines (at most [`RECENT`]).
    recent: std::collections::VecDeque<String>,
    /// Start of the current second of logging.
    window: std::time::Instant,
    /// Lines logged in it.
    logged: u32,
    /// Lines not logged in it.
    suppressed: u64,
}

impl GuestLog {
    /// An empty log for `function`.
    pub fn new(function: Arc<str>) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogState {
                function,
                partial: Vec::new(),
                recent: std::collections::VecDeque::new(),
                window: std::time::Instant::now(),
                logged: 0,
                suppressed: 0,
            })),
        }
    }

    /// The last lines the guest wrote (a partial line counts), joined with
    /// ` | `, then forgets them.
    pub fn take_recent(&self) -> Option<String> {
        let mut state = self.lock();
        if !state.partial.is_empty() {
            let line = std::mem::take(&mut state.partial);
            state.end_line(&line);
        }
        let lines: Vec<String> = state.recent.drain(..).collect();
        (!lines.is_empty()).then(|| lines.join(" | "))
    }

    /// Forgets what was written so far (before a call).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.partial.clear();
        state.recent.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // a poisoned lock only means a panic elsewhere while logging
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.lock();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(nl);
            let mut whole = std::mem::take(&mut state.partial);
            whole.extend_from_slice(&line[..line.len().min(MAX_LINE)]);
            state.end_line(&whole);
            rest = &after[1..];
        }
        let room = MAX_LINE.saturating_sub(state.partial.len());
        state
            .partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
    }
}

impl LogState {
    fn end_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if self.window.elapsed() >= std::time::Duration::from_secs(1) {
            if self.suppressed > 0 {
                tracing::warn!(target: "weir::wasm::guest", function = %self.function,
                    lines = self.suppressed, "guest output over {LINES_PER_SECOND} lines/s not logged");
            }
            self.window = std::time::Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LINES_PER_SECOND {
            self.logged += 1;
            tracing::info!(target: "weir::wasm::guest", function = %self.function, "{text}");
        } else {
            self.suppressed += 1;
        }
        // Rust's panic hook adds this hint; it says nothing about the event
        if text.is_empty() || text.starts_with("note: run with `RUST_BACKTRACE") {
            return;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(text.to_string());
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_across_writes_without_the_backtrace_hint() {
        let log = GuestLog::new("f".into());
        log.append(b"zero\nfirst\nthread 'main' pan");
        log.append(b"icked at lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` for more\n");
        assert_eq!(
            log.take_recent().as_deref(),
            Some("first | thread 'main' panicked at lib.rs:3:5: | boom")
        );
        assert_eq!(log.take_recent(), None);
        log.append(b"one");
        assert_eq!(log.take_recent().as_deref(), Some("one"));
    }
}
