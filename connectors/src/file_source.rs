//! The `file` source: reads a local file line by line and ends at its end.
//!
//! - **Delivery**: at-least-once. Positions are byte offsets; the position
//!   after the last delivered line is written to the local checkpoint store
//!   and a restart seeks there. Lines after the last checkpoint may be read
//!   twice after a crash.
//! - **Ordering**: file order; everything is partition 0, so one shard
//!   sees every line in order (with `ordering = "partition"`).
//! - **Partitions**: one, partition 0. An event's offset is the byte offset
//!   where its line starts.
//! - **Backpressure**: reading stops while the owning shard's inbox is full.
//!   Memory holds the batch being gathered plus the read buffer (256 KiB, or
//!   the longest line if longer).
//! - **Checkpoint**: on every tick and at the end, the acked byte offset is
//!   written to the local store (`checkpoint.dir`). If the file is now
//!   shorter than the stored offset it was replaced, and it is read from the
//!   start.
//! - **End**: bounded: at end of file the rest is dispatched, the pipeline
//!   drains, the final position is committed and the source returns.
//!
//! ```toml
//! [sources.events]
//! type = "file"
//! path = "events.jsonl"
//! format = "json"
//! ```

use std::io::{self, SeekFrom};
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::driver::{self, Positions};
use weir_engine::{Error, Result, Source, SourceContext};

use crate::line_source::{ChunkReader, Counting, LineConnector, Spec};
use crate::lines::{Framer, LineFormat};

/// Options of the `file` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceOptions {
    /// Path of the file to read (required). Relative paths are relative to
    /// the working directory.
    pub path: PathBuf,
    /// `"lines"` (default): every line is an event; `"json"`: one JSON
    /// document per line, blank lines skipped.
    #[serde(default)]
    pub format: LineFormat,
}

/// Builds a `file` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options: FileSourceOptions = config.options()?;
    if options.path.as_os_str().is_empty() {
        return Err(config.option_error("path", "`path` must not be empty"));
    }
    Ok(Box::new(FileSource::new(options)))
}

/// Reads a file line by line.
#[derive(Debug)]
pub struct FileSource {
    options: FileSourceOptions,
}

impl FileSource {
    /// A source for these options.
    pub fn new(options: FileSourceOptions) -> Self {
        FileSource { options }
    }
}

/// Reads a file in large chunks.
struct FileChunks(tokio::fs::File);

impl ChunkReader for FileChunks {
    fn read<'a>(
        &'a mut self,
        framer: &'a mut Framer,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send + 'a {
        self.0.read_buf(framer.read_buffer())
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let path = &self.options.path;
        let shown = path.display();
        let mut file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::user(format!("file `{shown}` does not exist")));
            }
            Err(e) => return Err(Error::from(e).context(format!("opening file `{shown}`"))),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::from(e).context(format!("reading `{shown}`")))?
            .len();
        let stored = ctx.store().and_then(|store| store.position(0));
        let start = match stored {
            Some(position) if position <= len => position,
            Some(position) => {
                tracing::warn!(
                    source = %ctx.name(), path = %shown, position, len,
                    "the file is shorter than the checkpoint: it was replaced; reading it from the start"
                );
                0
            }
            None => 0,
        };
        if stored.is_some() {
            ctx.restore(0, start);
        }
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(|e| {
                Error::from(e).context(format!("seeking `{shown}` to byte {start}"))
            })?;
        }
        let spec = Spec {
            format: self.options.format,
            counting: Counting::Bytes,
            positions: Positions::Local,
            start,
        };
        let connector = LineConnector::new(
            FileChunks(file),
            spec,
            ctx.batch_settings(),
            ctx.batch_wait(),
        );
        driver::drive(connector, &mut ctx)
            .await
            .map_err(|e| e.context(format!("reading `{shown}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{options_error, Harness};
    use weir_config::BatchSettings;
    use weir_engine::{CheckpointStore, ErrorKind};

    fn source(path: &std::path::Path, format: LineFormat) -> Box<dyn Source> {
        Box::new(FileSource::new(FileSourceOptions {
            path: path.to_path_buf(),
            format,
        }))
    }

    fn values(events: &[weir_engine::Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn reads_lines_with_offsets_and_commits_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"a\r\nbb\n\nlast").unwrap();
        let store = CheckpointStore::open(&dir.path().join("cp"), "p", "f").unwrap();
        let run = Harness::new(1)
            .store(store)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        let events = run.events();
        assert_eq!(values(&events), ["a", "bb", "", "last"]);
        let offsets: Vec<u64> = events.iter().map(|e| e.origin.offset).collect();
        assert_eq!(offsets, [0, 3, 6, 7]);
        assert!(events.iter().all(|e| e.origin.partition == 0));
        let again = CheckpointStore::open(&dir.path().join("cp"), "p", "f").unwrap();
        assert_eq!(again.position(0), Some(11));
    }

    #[tokio::test]
    async fn json_mode_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n\n   \n{\"b\":2}\r\n\n").unwrap();
        let run = Harness::new(2).run(source(&path, LineFormat::Json)).await;
        run.assert_ok();
        assert_eq!(values(&run.events()), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[tokio::test]
    async fn resumes_from_the_stored_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"one\ntwo\nthree\n").unwrap();
        let cp = dir.path().join("cp");
        let mut store = CheckpointStore::open(&cp, "p", "f").unwrap();
        store
            .save(&[weir_engine::Checkpoint {
                partition: 0,
                position: 4,
            }])
            .unwrap();
        let run = Harness::new(1)
            .store(store)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        let events = run.events();
        assert_eq!(values(&events), ["two", "three"]);
        assert_eq!(events[0].origin.offset, 4);
        assert_eq!(
            CheckpointStore::open(&cp, "p", "f").unwrap().position(0),
            Some(14)
        );

        // everything was read: a third run reads nothing
        let store = CheckpointStore::open(&cp, "p", "f").unwrap();
        let run = Harness::new(1)
            .store(store)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        assert!(run.events().is_empty());
    }

    #[tokio::test]
    async fn a_replaced_shorter_file_is_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"x\n").unwrap();
        let mut store = CheckpointStore::open(dir.path(), "p", "f").unwrap();
        store
            .save(&[weir_engine::Checkpoint {
                partition: 0,
                position: 1000,
            }])
            .unwrap();
        let run = Harness::new(1)
            .store(store)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        assert_eq!(values(&run.events()), ["x"]);
    }

    #[tokio::test]
    async fn batches_by_max_events_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let text: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let batch = BatchSettings {
            max_events: 64,
            ..BatchSettings::default()
        };
        let run = Harness::new(1)
            .batch(batch)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        assert!(run.batches.iter().all(|b| b.events.len() <= 64));
        assert_eq!(run.batches.len(), 16);
        assert_eq!(run.events().len(), 1000);
        assert_eq!(values(&run.events())[999], "line-999");

        let batch = BatchSettings {
            max_bytes: 100,
            ..BatchSettings::default()
        };
        let run = Harness::new(1)
            .batch(batch)
            .run(source(&path, LineFormat::Lines))
            .await;
        run.assert_ok();
        for b in &run.batches {
            assert!(
                weir_engine::event::size_of_events(&b.events) <= 100,
                "a batch stays within max_bytes"
            );
        }
        assert!(run.batches.len() >= 1000 * 6 / 100);
        assert_eq!(run.events().len(), 1000);
    }

    #[tokio::test]
    async fn a_missing_file_is_a_user_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.txt");
        let run = Harness::new(1).run(source(&path, LineFormat::Lines)).await;
        let err = run.result.unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
        assert_eq!(
            err.message,
            format!("file `{}` does not exist", path.display())
        );
    }

    #[test]
    fn options_are_checked() {
        let config =
            ComponentConfig::from_toml("f", "file", "path = 'x'\nformat = 'json'").unwrap();
        assert!(build(&config).is_ok());
        assert_eq!(
            options_error(build, "path = 'x'\n  fromat = 'json'"),
            "error: <inline>:2:3: unknown field `fromat`, expected `path` or `format`; did you mean `format`?"
        );
        assert_eq!(
            options_error(build, "path = 'x'\nformat = 'csv'"),
            "error: <inline>:2:10: `format`: unknown variant `csv`, expected one of `lines`, `json`, `envelope`"
        );
        assert_eq!(
            options_error(build, "path = ''"),
            "error: <inline>:1:8: `path` must not be empty"
        );
        assert!(options_error(build, "format = 'json'").contains("missing field `path`"));
    }
}
