//! Line framing shared by the `file` and `stdin` sources: input is read in
//! large chunks into one buffer and each line is split off it without
//! copying.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// Bytes read per call.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Below this much free space the buffer is grown by [`CHUNK`] before a read.
pub(crate) const MIN_READ: usize = 16 * 1024;

/// How a line-oriented source turns lines into events (`format = "..."`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// Every line is an event, empty lines included (the default). The
    /// trailing `\n` or `\r\n` is stripped.
    #[default]
    Lines,
    /// One JSON document per line (JSON Lines): like `lines`, but blank
    /// lines are skipped. Lines are passed on as they are; validating the
    /// JSON is a step's job.
    Json,
    /// One envelope per line, as the `file` sink writes them with `format =
    /// "envelope"` (a dead-letter file): each line becomes the event it
    /// describes — key, value, headers (without weir's `weir.*` failure
    /// headers), timestamp. For replaying dead letters; blank lines are
    /// skipped, and a line that is not an envelope is passed on as it is
    /// with a `weir.envelope.error` header saying why.
    Envelope,
}

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The line without its terminator; `None` when the format skips it.
    pub(crate) value: Option<Bytes>,
    /// Input bytes the line took, terminator included.
    pub(crate) consumed: usize,
}

impl Line {
    /// Bytes the line's event will carry (0 when skipped).
    pub(crate) fn len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }
}

/// Splits a byte stream into lines.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Bytes read and not yet framed.
    buf: BytesMut,
    /// Prefix of `buf` known to hold no newline.
    scanned: usize,
    /// Whether blank lines are skipped.
    format: LineFormat,
}

impl Framer {
    /// An empty framer.
    pub(crate) fn new(format: LineFormat) -> Self {
        Framer {
            buf: BytesMut::with_capacity(CHUNK),
            scanned: 0,
            format,
        }
    }

    /// The buffer the next read appends to, with room for a large read.
    pub(crate) fn read_buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(CHUNK);
        }
        &mut self.buf
    }

    /// Appends a chunk read elsewhere (no copy when the buffer is empty or
    /// the chunk directly follows it in memory).
    pub(crate) fn push(&mut self, chunk: BytesMut) {
        self.buf.unsplit(chunk);
    }

    /// The next complete line, if the buffer holds one.
    pub(crate) fn next_line(&mut self) -> Option<Line> {
        let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = self.buf.len();
            return None;
        };
        let newline = self.scanned + i;
        let mut line = self.buf.split_to(newline + 1);
        self.scanned = 0;
        let consumed = line.len();
        let mut len = newline;
        if len > 0 && line[len - 1] == b'\r' {
            len -= 1;
        }
        line.truncate(len);
        Some(self.frame(line.freeze(), consumed))
    }

    /// At end of input: the last line if it had no newline.
    pub(crate) fn finish(&mut self) -> Option<Line> {
        if self.buf.is_empty() {
            return None;
        }
        let line = self.buf.split().freeze();
        self.scanned = 0;
        let consumed = line.len();
        Some(self.frame(line, consumed))
    }

    fn frame(&self, line: Bytes, consumed: usize) -> Line {
        let skip = self.format != LineFormat::Lines && line.iter().all(u8::is_ascii_whitespace);
        Line {
            value: (!skip).then_some(line),
            consumed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(format: LineFormat, chunks: &[&[u8]]) -> Vec<(Option<String>, usize)> {
        let mut framer = Framer::new(format);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.read_buffer().extend_from_slice(chunk);
            while let Some(line) = framer.next_line() {
                out.push(line);
            }
        }
        out.extend(framer.finish());
        out.into_iter()
            .map(|l| {
                (
                    l.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    l.consumed,
                )
            })
            .collect()
    }

    fn some(s: &str, n: usize) -> (Option<String>, usize) {
        (Some(s.to_string()), n)
    }

    #[test]
    fn strips_lf_and_crlf_keeps_empty_lines() {
        let got = frame(LineFormat::Lines, &[b"a\r\nbb\n\nc\r", b"\n"]);
        assert_eq!(
            got,
            [some("a", 3), some("bb", 3), some("", 1), some("c", 3)]
        );
    }

    #[test]
    fn last_line_without_newline_is_an_event() {
        assert_eq!(
            frame(LineFormat::Lines, &[b"a\nlast"]),
            [some("a", 2), some("last", 4)]
        );
        assert_eq!(frame(LineFormat::Lines, &[b"lone\r"]), [some("lone\r", 5)]);
        assert_eq!(frame(LineFormat::Lines, &[b""]), []);
    }

    #[test]
    fn lines_split_across_chunks() {
        let got = frame(LineFormat::Lines, &[b"hel", b"lo\r", b"\nwor", b"ld\n"]);
        assert_eq!(got, [some("hello", 7), some("world", 6)]);
    }

    #[test]
    fn json_skips_blank_lines_but_counts_them() {
        let got = frame(LineFormat::Json, &[b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n \t"]);
        assert_eq!(
            got,
            [
                some("{\"a\":1}", 8),
                (None, 1),
                (None, 4),
                some("{\"b\":2}", 9),
                (None, 2)
            ]
        );
    }

    #[test]
    fn lines_share_the_read_buffer() {
        let mut framer = Framer::new(LineFormat::Lines);
        framer.read_buffer().extend_from_slice(b"one\ntwo\n");
        let base = framer.buf.as_ptr();
        let one = framer.next_line().unwrap().value.unwrap();
        let two = framer.next_line().unwrap().value.unwrap();
        assert_eq!(one.as_ptr(), base);
        assert_eq!(two.as_ptr(), base.wrapping_add(4));
    }

    #[test]
    fn pushed_chunks_are_framed() {
        let mut framer = Framer::new(LineFormat::Lines);
        framer.push(BytesMut::from(&b"ab"[..]));
        assert!(framer.next_line().is_none());
        framer.push(BytesMut::from(&b"c\nd"[..]));
        assert_eq!(framer.next_line().unwrap().value.unwrap().as_ref(), b"abc");
        assert_eq!(framer.finish().unwrap().value.unwrap().as_ref(), b"d");
    }
}
