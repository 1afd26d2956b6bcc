//! The `file` sink: appends each event as one line to a local file.
//!
//! - **Delivery**: at-least-once. With `fsync = true` (the default) a batch
//!   is acknowledged only after `fdatasync`, so an acknowledged event
//!   survives a crash or power loss. With `fsync = false` it is acknowledged
//!   once handed to the operating system: it survives a crash of weir, not
//!   of the machine. A failed write is cut back to where the batch started
//!   before it is retried, so a retry leaves no half line; a batch that was
//!   written but whose acknowledgement was lost (weir crashed) is written
//!   again after a restart.
//! - **Ordering**: the order batches reach the sink; within a batch, event
//!   order.
//! - **Format**: see [`crate::envelope`]: the raw value (`"value"`) or a
//!   JSON envelope (`"envelope"`).
//! - **Backpressure**: writes run on the blocking thread pool, one batch at
//!   a time; while one is in progress the sink's queue fills.
//! - **Files**: the file is opened for appending and created with its parent
//!   directories if missing; it is never truncated (other than to undo a
//!   failed write of this sink).
//!
//! ```toml
//! [sinks.archive]
//! type = "file"
//! path = "out/events.jsonl"
//! format = "envelope"
//! fsync = true
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Result, Sink};

use crate::envelope::{write_line, OutputFormat};

/// Options of the `file` sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkOptions {
    /// Path of the file to append to (required). Missing parent directories
    /// are created.
    pub path: PathBuf,
    /// `"value"` (default): the raw value per line; `"envelope"`: a JSON
    /// object with key, value, headers, timestamp and origin per line.
    #[serde(default)]
    pub format: OutputFormat,
    /// Whether a write counts as durable only after it is fsynced; default
    /// true. `false` is faster but a power loss can lose acknowledged events.
    #[serde(default = "default_fsync")]
    pub fsync: bool,
}

fn default_fsync() -> bool {
    true
}

/// Builds a `file` sink from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let options: FileSinkOptions = config.options()?;
    if options.path.as_os_str().is_empty() {
        return Err(config.option_error("path", "`path` must not be empty"));
    }
    Ok(Box::new(FileSink::new(options)))
}

/// Appends lines to a file.
#[derive(Debug)]
pub struct FileSink {
    options: FileSinkOptions,
    file: Option<Arc<File>>,
    buf: Vec<u8>,
}

impl FileSink {
    /// A sink for these options; the file is opened by [`Sink::open`].
    pub fn new(options: FileSinkOptions) -> Self {
        FileSink {
            options,
            file: None,
            buf: Vec::new(),
        }
    }

    fn file(&self) -> Result<Arc<File>> {
        self.file
            .clone()
            .ok_or_else(|| Error::internal("the file sink was written to before it was opened"))
    }

    fn context(&self, what: &str) -> String {
        format!("{what} `{}`", self.options.path.display())
    }
}

/// Opens `path` for appending, creating it and its parent directories.
fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Appends `buf`, fsyncs if asked, and on failure cuts the file back to
/// where it was so a retry leaves no partial line.
///
/// A named pipe or a character device (`/dev/stdout`) has nothing to fsync
/// (fsync fails with EINVAL there) or cut back: the write is all there is.
fn append(file: &File, buf: &[u8], fsync: bool) -> io::Result<()> {
    let meta = file.metadata()?;
    let regular = meta.file_type().is_file();
    let before = meta.len();
    let mut writer = file;
    let result = writer.write_all(buf).and_then(|()| {
        if fsync && regular {
            file.sync_data()
        } else {
            Ok(())
        }
    });
    if result.is_err() && regular {
        if let Ok(meta) = file.metadata() {
            if meta.len() > before {
                let _ = file.set_len(before);
            }
        }
    }
    result
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("file sink task: {e}")))
}

#[async_trait]
impl Sink for FileSink {
    async fn open(&mut self) -> Result<()> {
        let path = self.options.path.clone();
        let file = blocking(move || open_append(&path))
            .await?
            .map_err(|e| Error::from(e).context(self.context("opening")))?;
        self.file = Some(Arc::new(file));
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let file = self.file()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for event in events {
            write_line(&mut buf, event, self.options.format);
        }
        let fsync = self.options.fsync;
        let (buf, result) = blocking(move || {
            let result = append(&file, &buf, fsync);
            (buf, result)
        })
        .await?;
        self.buf = buf;
        result.map_err(|e| Error::from(e).context(self.context("writing")))
    }

    async fn close(&mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        blocking(move || match file.metadata() {
            Ok(meta) if !meta.file_type().is_file() => Ok(()), // a pipe or device
            _ => file.sync_data(),
        })
        .await?
        .map_err(|e| Error::from(e).context(self.context("syncing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::options_error;
    use weir_engine::Origin;

    #[tokio::test]
    async fn writes_to_a_named_pipe_and_a_character_device_with_fsync_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        let mut s = sink(&fifo, OutputFormat::Value, true);
        s.open().await.unwrap();
        s.write(&[Event::new("one"), Event::new("two")])
            .await
            .unwrap();
        s.close().await.unwrap();
        drop(s);
        assert_eq!(reader.join().unwrap(), "one\ntwo\n");

        let mut s = sink(Path::new("/dev/null"), OutputFormat::Value, true);
        s.open().await.unwrap();
        s.write(&[Event::new("gone")]).await.unwrap();
        s.close().await.unwrap();
    }

    fn sink(path: &Path, format: OutputFormat, fsync: bool) -> FileSink {
        FileSink::new(FileSinkOptions {
            path: path.to_path_buf(),
            format,
            fsync,
        })
    }

    #[tokio::test]
    async fn appends_and_creates_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.txt");
        for (run, fsync) in [(0, true), (1, false)] {
            let mut s = sink(&path, OutputFormat::Value, fsync);
            s.open().await.unwrap();
            s.write(&[
                Event::new(format!("run{run}-1")),
                Event::new(format!("run{run}-2")),
            ])
            .await
            .unwrap();
            s.write(&[]).await.unwrap();
            s.close().await.unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "run0-1\nrun0-2\nrun1-1\nrun1-2\n"
        );
    }

    #[tokio::test]
    async fn envelopes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut events = Vec::new();
        for i in 0..50u64 {
            let mut e = Event::new(if i % 2 == 0 {
                format!("{{\"i\":{i}}}")
            } else {
                format!("text {i}\n")
            })
            .with_key(format!("k{i}"))
            .with_timestamp_ms(1_000 + i as i64);
            e.origin = Origin {
                source: 2,
                partition: (i % 3) as u32,
                offset: i,
            };
            e.set_header("n", format!("{i}"));
            events.push(e);
        }
        let mut s = sink(&path, OutputFormat::Envelope, true);
        s.open().await.unwrap();
        s.write(&events[..20]).await.unwrap();
        s.write(&events[20..]).await.unwrap();
        s.close().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50);
        for (line, (i, e)) in lines.iter().zip(events.iter().enumerate()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if i % 2 == 0 {
                assert_eq!(v["value"]["i"], i as u64);
            } else {
                assert_eq!(v["value"].as_str().unwrap().as_bytes(), e.value.as_ref());
            }
            assert_eq!(v["key"], format!("k{i}"));
            assert_eq!(v["headers"]["n"], format!("{i}"));
            assert_eq!(v["timestamp_ms"], e.timestamp_ms);
            assert_eq!(
                (
                    v["source"].as_u64(),
                    v["partition"].as_u64(),
                    v["offset"].as_u64()
                ),
                (Some(2), Some(u64::from(e.origin.partition)), Some(i as u64))
            );
        }
    }

    #[tokio::test]
    async fn unopenable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("under-a-file.txt");
        let err = sink(&path, OutputFormat::Value, true)
            .open()
            .await
            .unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("opening `{}`: ", path.display())),
            "{err}"
        );
        let mut unopened = sink(&path, OutputFormat::Value, true);
        assert!(unopened.write(&[Event::new("x")]).await.is_err());
    }

    #[test]
    fn options() {
        let config = ComponentConfig::from_toml("f", "file", "path = 'x'").unwrap();
        let options: FileSinkOptions = config.options().unwrap();
        assert_eq!(
            options,
            FileSinkOptions {
                path: "x".into(),
                format: OutputFormat::Value,
                fsync: true
            }
        );
        assert_eq!(
            options_error(build, "path = 'x'\nfsync = 'yes'"),
            "error: <inline>:2:9: `fsync`: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            options_error(build, "path = 'x'\nsync = false"),
            "error: <inline>:2:1: unknown field `sync`, expected one of `path`, `format`, `fsync`; did you mean `fsync`?"
        );
    }
}
