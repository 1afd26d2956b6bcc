//! The `stdout` sink: writes each event as one line to standard output.
//!
//! - **Delivery**: a batch counts as written once it is handed to the
//!   operating system (written and flushed); what happens to the pipe after
//!   that is outside weir. At-least-once: a batch retried after a failed
//!   write may appear twice.
//! - **Ordering**: the order batches reach the sink; within a batch, event
//!   order.
//! - **Format**: see [`crate::envelope`]: the raw value (`"value"`) or a
//!   JSON envelope (`"envelope"`).
//! - **Backpressure**: a write waits for the pipe; while it waits the sink's
//!   queue fills and the shards feeding it wait.
//! - **Cost**: a batch is rendered into one reused buffer, then written and
//!   flushed once.
//!
//! ```toml
//! [sinks.out]
//! type = "stdout"
//! format = "envelope"
//! ```

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Result, Sink};

use crate::envelope::{write_line, OutputFormat};

/// Options of the `stdout` sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutOptions {
    /// `"value"` (default): the raw value per line; `"envelope"`: a JSON
    /// object with key, value, headers, timestamp and origin per line.
    #[serde(default)]
    pub format: OutputFormat,
}

/// Builds a `stdout` sink from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let options: StdoutOptions = config.options()?;
    Ok(Box::new(WriterSink::new(
        tokio::io::stdout(),
        options.format,
    )))
}

/// Writes lines to any async writer; the `stdout` sink is a
/// `WriterSink<tokio::io::Stdout>`.
#[derive(Debug)]
pub struct WriterSink<W> {
    out: W,
    format: OutputFormat,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin + Send> WriterSink<W> {
    /// A sink writing to `out` in `format`.
    pub fn new(out: W, format: OutputFormat) -> Self {
        WriterSink {
            out,
            format,
            buf: Vec::new(),
        }
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> Sink for WriterSink<W> {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.buf.clear();
        for event in events {
            write_line(&mut self.buf, event, self.format);
        }
        self.out
            .write_all(&self.buf)
            .await
            .map_err(|e| Error::from(e).context("writing to stdout"))?;
        self.out
            .flush()
            .await
            .map_err(|e| Error::from(e).context("flushing stdout"))
    }

    async fn close(&mut self) -> Result<()> {
        self.out
            .flush()
            .await
            .map_err(|e| Error::from(e).context("flushing stdout"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::options_error;

    #[tokio::test]
    async fn one_line_per_event() {
        let mut sink = WriterSink::new(Vec::new(), OutputFormat::Value);
        sink.open().await.unwrap();
        sink.write(&[Event::new("a"), Event::new("b")])
            .await
            .unwrap();
        sink.write(&[Event::new("{\"c\":1}")]).await.unwrap();
        sink.close().await.unwrap();
        assert_eq!(sink.get_ref(), b"a\nb\n{\"c\":1}\n");

        let mut sink = WriterSink::new(Vec::new(), OutputFormat::Envelope);
        sink.write(&[Event::new("{\"c\":1}").with_key("k")])
            .await
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(sink.get_ref()).unwrap();
        assert_eq!(line["value"]["c"], 1);
        assert_eq!(line["key"], "k");
    }

    #[test]
    fn options() {
        let config = ComponentConfig::from_toml("o", "stdout", "format = 'envelope'").unwrap();
        assert_eq!(
            config.options::<StdoutOptions>().unwrap().format,
            OutputFormat::Envelope
        );
        assert!(build(&config).is_ok());
        assert_eq!(
            options_error(build, "\nformat = 'xml'"),
            "error: <inline>:2:10: `format`: unknown variant `xml`, expected `value` or `envelope`"
        );
        assert_eq!(
            options_error(build, "path = 'x'"),
            "error: <inline>:1:1: unknown field `path`, expected `format`"
        );
    }
}
