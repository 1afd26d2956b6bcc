//! One worker process: an interpreter running weir's shim for one version
//! of a function, or a connector plugin. weir writes frames to its fd 3 and
//! reads frames from its fd 4; its stdout and stderr are read line by line
//! into weir's log, so a handler that prints cannot corrupt the protocol.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;

use crate::frame::{read_frame, write_frame, FrameBuf, FrameError};
use crate::protocol::{self, Message};

/// Everything needed to start workers for one version of a function (or
/// for a plugin).
#[derive(Debug)]
pub struct WorkerSpec {
    /// The step's or plugin's name, for logs.
    pub function: Arc<str>,
    /// The version's short hash (or the plugin's command), for logs.
    pub version: String,
    /// The program: an interpreter, or the plugin's executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The `init` message, as JSON.
    pub init: Vec<u8>,
    /// Longest a call may take.
    pub timeout: Duration,
}

/// Why a worker could not run a batch.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker could not be started or its `init` failed.
    #[error("{0}")]
    Start(String),
    /// The batch took longer than the timeout; the worker was killed.
    #[error("timeout: the batch took longer than {0:?}; the worker was killed")]
    Timeout(Duration),
    /// The worker exited (crashed, was killed) or broke the protocol.
    #[error("{0}")]
    Crashed(String),
}

/// Lines of a worker's output kept for the reason of a crash.
const TAIL_LINES: usize = 8;
/// Most output lines per second one worker may put in weir's log.
const LOG_LINES_PER_SECOND: u32 = 100;

/// A worker's recent output lines.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running worker.
pub struct Worker {
    child: tokio::process::Child,
    to: pipe::Sender,
    from: pipe::Receiver,
    tail: Tail,
    spec: Arc<WorkerSpec>,
    /// Whether the handler takes whole batches (else one event per call).
    pub batch_form: bool,
    /// The runtime the worker reported (`python 3.11.7`, `node 20.…`).
    pub runtime: String,
    /// Batches run.
    pub batches: u64,
}

impl Worker {
    /// Starts a worker and waits until its `init` ran.
    pub async fn start(spec: Arc<WorkerSpec>) -> Result<Worker, WorkerError> {
        let started = Instant::now();
        let start = |e: std::io::Error| WorkerError::Start(format!("cannot start a worker: {e}"));
        let (child_reads, weir_writes) = pipe_pair().map_err(start)?;
        let (weir_reads, child_writes) = pipe_pair().map_err(start)?;
        let (child_reads, child_writes) = (
            above_stdio(child_reads).map_err(start)?,
            above_stdio(child_writes).map_err(start)?,
        );
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let (r, w) = (child_reads.as_raw_fd(), child_writes.as_raw_fd());
        // SAFETY: between fork and exec the closure only calls
        // async-signal-safe functions (dup2, prctl) on fds it owns.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // the worker dies with weir, even on kill -9
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            WorkerError::Start(format!("cannot run `{}`: {e}", spec.program.display()))
        })?;
        drop((child_reads, child_writes));
        let tail: Tail = Arc::default();
        if let Some(out) = child.stdout.take() {
            forward_output(out, "stdout", Arc::clone(&spec), Arc::clone(&tail));
        }
        if let Some(err) = child.stderr.take() {
            forward_output(err, "stderr", Arc::clone(&spec), Arc::clone(&tail));
        }
        let to = pipe::Sender::from_owned_fd(weir_writes).map_err(start)?;
        let from = pipe::Receiver::from_owned_fd(weir_reads).map_err(start)?;
        let mut worker = Worker {
            child,
            to,
            from,
            tail,
            batch_form: false,
            runtime: String::new(),
            batches: 0,
            spec: Arc::clone(&spec),
        };
        let mut init = FrameBuf::default();
        init.json.extend_from_slice(&spec.init);
        // an interpreter importing heavy libraries may take a while
        let limit = spec.timeout.max(Duration::from_secs(30));
        let reply = match tokio::time::timeout(limit, worker.exchange(&init)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(reason)) => {
                return Err(WorkerError::Start(format!(
                    "the worker exited while starting: {reason}"
                )))
            }
            Err(_) => {
                return Err(WorkerError::Start(format!(
                    "the worker did not start (load and init) within {limit:?}"
                )))
            }
        };
        let message =
            protocol::parse(&reply.bytes[..reply.json_end]).map_err(WorkerError::Start)?;
        match message {
            Message::Ready { runtime, batch } => {
                worker.batch_form = batch;
                worker.runtime = runtime.into_owned();
            }
            Message::Error { message } => return Err(WorkerError::Start(message.into_owned())),
            other => {
                return Err(WorkerError::Start(format!(
                    "the worker answered `init` with {other:?}"
                )))
            }
        }
        tracing::info!(function = %spec.function, version = %spec.version, pid = worker.child.id(),
            runtime = %worker.runtime, batch = worker.batch_form,
            start_ms = started.elapsed().as_millis() as u64, "worker started");
        Ok(worker)
    }

    /// Sends `frame` and returns the worker's answer (log lines it sends
    /// meanwhile go to weir's log), within the spec's timeout. On an error
    /// the worker is unusable: drop it.
    pub async fn call(&mut self, frame: &FrameBuf) -> Result<Reply, WorkerError> {
        let timeout = self.spec.timeout;
        match tokio::time::timeout(timeout, self.exchange(frame)).await {
            Ok(Ok(reply)) => {
                self.batches += 1;
                Ok(reply)
            }
            Ok(Err(reason)) => Err(WorkerError::Crashed(reason)),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(WorkerError::Timeout(timeout))
            }
        }
    }

    async fn exchange(&mut self, frame: &FrameBuf) -> Result<Reply, String> {
        if let Err(e) = write_frame(&mut self.to, frame).await {
            return Err(self.death(&format!("writing to it failed: {e}")).await);
        }
        loop {
            let mut buf = Vec::new();
            let json_end = match read_frame(&mut self.from, &mut buf).await {
                Ok(end) => end,
                Err(FrameError::Closed) => return Err(self.death("it closed its pipe").await),
                Err(e) => {
                    let _ = self.child.start_kill();
                    return Err(e.to_string());
                }
            };
            if buf.starts_with(br#"{"t":"log""#) {
                self.log_message(&buf[..json_end]);
                continue;
            }
            return Ok(Reply {
                bytes: Bytes::from(buf),
                json_end,
            });
        }
    }

    fn log_message(&self, json: &[u8]) {
        let (function, version) = (&*self.spec.function, &self.spec.version);
        match protocol::parse(json) {
            Ok(Message::Log { level, message }) => match level.as_ref() {
                "error" => tracing::error!(function, version, "{message}"),
                "warn" => tracing::warn!(function, version, "{message}"),
                "debug" => tracing::debug!(function, version, "{message}"),
                _ => tracing::info!(function, version, "{message}"),
            },
            _ => tracing::warn!(
                function,
                version,
                "worker sent a log frame weir cannot read"
            ),
        }
    }

    /// Why the worker is gone: its exit status and last output lines.
    async fn death(&mut self, what: &str) -> String {
        let status = match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => describe_status(status),
            _ => {
                let _ = self.child.start_kill();
                "did not exit; killed".to_string()
            }
        };
        // let the output readers catch the last lines
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tail: Vec<String> = self
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut reason = format!("the worker {status} ({what})");
        if !tail.is_empty() {
            reason.push_str("; last output: ");
            reason.push_str(&tail.join(" | "));
        }
        reason
    }

    /// Closes the worker's input and waits up to `grace` for it to exit
    /// (a plugin flushes and leaves at end of input); kills it after.
    pub async fn stop(self, grace: Duration) {
        let Worker {
            mut child,
            to,
            from,
            ..
        } = self;
        drop(to);
        drop(from);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The worker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A worker's answer: one frame, the JSON message in `bytes[..json_end]`
/// and the blob it refers to after it.
pub struct Reply {
    /// The whole frame.
    pub bytes: Bytes,
    /// Where the JSON ends.
    pub json_end: usize,
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_string(),
    }
}

/// A pipe whose two ends close on exec.
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The same pipe end at a descriptor of 10 or more (close-on-exec), so the
/// `dup2` onto 3 and 4 in the child cannot overwrite one with the other.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Reads a worker's stdout or stderr line by line into weir's log (at most
/// [`LOG_LINES_PER_SECOND`]), keeping the last lines for crash reasons.
fn forward_output<R: AsyncRead + Unpin + Send + 'static>(
    output: R,
    stream: &'static str,
    spec: Arc<WorkerSpec>,
    tail: Tail,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(output).lines();
        let (mut window, mut in_window, mut suppressed) = (Instant::now(), 0u32, 0u64);
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(500).collect());
            }
            if window.elapsed() >= Duration::from_secs(1) {
                if suppressed > 0 {
                    tracing::warn!(function = %spec.function, version = %spec.version, suppressed,
                        "worker output lines not logged (over {LOG_LINES_PER_SECOND}/s)");
                }
                (window, in_window, suppressed) = (Instant::now(), 0, 0);
            }
            if in_window < LOG_LINES_PER_SECOND {
                in_window += 1;
                tracing::info!(function = %spec.function, version = %spec.version, stream, "{line}");
            } else {
                suppressed += 1;
            }
        }
    });
}
