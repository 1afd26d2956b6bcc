//! The wait at the top of every source loop: shutdown first, then the
//! checkpoint tick, then input.

use std::future::Future;

use tokio::time::Instant;
use weir_engine::SourceContext;

/// What ended a wait.
#[derive(Debug)]
pub(crate) enum Wake<T> {
    /// Shutdown was requested: stop reading, drain, commit, return.
    Shutdown,
    /// A checkpoint interval passed: commit.
    Checkpoint,
    /// The input future completed.
    Input(T),
}

/// Waits for shutdown, checkpoint ticks or input, in that order of priority.
#[derive(Debug, Default)]
pub(crate) struct Control;

impl Control {
    /// A new control.
    pub(crate) fn new() -> Self {
        Control
    }

    /// Completes with the first of: shutdown, a checkpoint tick, `input`.
    ///
    /// `input` is dropped unfinished when another branch wins, so it must be
    /// cancel safe (`read_buf`, `mpsc::Receiver::recv`, `sleep_until` are).
    /// Cancel safe itself.
    pub(crate) async fn next<F: Future>(
        &mut self,
        ctx: &mut SourceContext,
        input: F,
    ) -> Wake<F::Output> {
        let shutdown = ctx.shutdown();
        tokio::select! {
            biased;
            _ = shutdown => Wake::Shutdown,
            _ = ctx.checkpoint_tick() => Wake::Checkpoint,
            out = input => Wake::Input(out),
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none. Cancel safe.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
