//! Messages of one partition gathered into a batch. Their keys, values and
//! headers are copied into one buffer per batch, so a batch costs one
//! allocation, not several per message; events are slices of it.

use std::ops::Range;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use weir_engine::{Event, Origin};

/// Where one message's parts sit in the buffer.
#[derive(Debug, Clone)]
struct Slot {
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// Index range into [`Staging::headers`].
    headers: Range<usize>,
    timestamp_ms: i64,
    offset: u64,
}

/// A partition's batch under construction.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    buf: BytesMut,
    slots: Vec<Slot>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// When the first message of this batch arrived.
    started: Option<Instant>,
    /// The offset after the last message.
    end: u64,
    /// Whether `end` holds for the current assignment (a message was
    /// gathered since the partition was assigned).
    seen: bool,
    /// Bytes of the previous batch: the size to reserve for the next.
    last_bytes: usize,
}

/// Smallest buffer reserved for a batch.
const MIN_BATCH_BUFFER: usize = 16 * 1024;

impl Staging {
    /// Whether a message at `offset` is behind one already gathered since
    /// the partition was assigned. After a pause and a resume such a
    /// message is one librdkafka delivered again (the caller drops it);
    /// without a resume it is new (the log was truncated and its offsets
    /// reused, an offset reset).
    pub(crate) fn is_behind(&self, offset: u64) -> bool {
        self.seen && offset < self.end
    }

    /// Appends one message. `now` is read by the caller, once per poll
    /// burst.
    pub(crate) fn push<'h>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        timestamp_ms: i64,
        offset: u64,
        now: impl FnOnce() -> Instant,
    ) {
        if self.slots.is_empty() {
            self.started = Some(now());
            // one allocation per batch, sized like the previous one
            self.buf.reserve(self.last_bytes.max(MIN_BATCH_BUFFER));
        }
        let key = key.map(|k| self.append(k));
        let value = self.append(value.unwrap_or_default());
        let first_header = self.headers.len();
        for (name, v) in headers {
            let name = self.append(name);
            let v = self.append(v);
            self.headers.push((name, v));
        }
        self.slots.push(Slot {
            key,
            value,
            headers: first_header..self.headers.len(),
            timestamp_ms,
            offset,
        });
        self.end = offset + 1;
        self.seen = true;
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        start..self.buf.len()
    }

    /// Messages gathered.
    /// The offset after the last message gathered since the partition was
    /// assigned, if any was.
    pub(crate) fn next_offset(&self) -> Option<u64> {
        self.seen.then_some(self.end)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes gathered.
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// When the batch's first message arrived.
    pub(crate) fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Takes the batch: its events and the offset after its last one.
    pub(crate) fn take(&mut self, timestamp_fallback: i64) -> Option<(Vec<Event>, u64)> {
        if self.slots.is_empty() {
            return None;
        }
        self.last_bytes = self.buf.len() + self.buf.len() / 4;
        // a buffer of its own per batch: its reference count is touched by
        // this batch's events only, not shared with the next batch that
        // this thread fills while a shard drops this one
        let data: Bytes = std::mem::take(&mut self.buf).freeze();
        let mut events = Vec::with_capacity(self.slots.len());
        for slot in self.slots.drain(..) {
            let headers = self.headers[slot.headers]
                .iter()
                .map(|(k, v)| (data.slice(k.clone()), data.slice(v.clone())))
                .collect();
            events.push(Event {
                key: slot.key.map(|k| data.slice(k)),
                value: data.slice(slot.value),
                headers,
                timestamp_ms: if slot.timestamp_ms > 0 {
                    slot.timestamp_ms
                } else {
                    timestamp_fallback
                },
                origin: Origin {
                    offset: slot.offset,
                    ..Origin::default()
                },
            });
        }
        self.headers.clear();
        self.started = None;
        Some((events, self.end))
    }

    /// Drops what was gathered (its partition was revoked or assigned
    /// again: the next message starts a new run of offsets).
    pub(crate) fn clear(&mut self) {
        self.seen = false;
        self.buf.clear();
        self.slots.clear();
        self.headers.clear();
        self.started = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_slices_of_one_buffer_with_keys_headers_and_offsets() {
        let mut s = Staging::default();
        let now = Instant::now();
        s.push(
            Some(b"k1"),
            Some(b"v1"),
            [(&b"h"[..], &b"x"[..])].into_iter(),
            7,
            10,
            || now,
        );
        s.push(None, None, std::iter::empty(), 0, 11, || now);
        assert_eq!((s.len(), s.bytes()), (2, 6));
        let (events, end) = s.take(99).unwrap();
        assert_eq!(end, 12);
        assert_eq!(events[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(&events[0].value[..], b"v1");
        assert_eq!(
            events[0].headers,
            vec![(Bytes::from("h"), Bytes::from("x"))]
        );
        assert_eq!((events[0].timestamp_ms, events[0].origin.offset), (7, 10));
        assert_eq!(events[1].key, None);
        assert!(events[1].value.is_empty(), "a tombstone has an empty value");
        assert_eq!(events[1].timestamp_ms, 99, "no timestamp: the fallback");
        assert!(s.take(0).is_none());
        assert!(s.started().is_none());
    }

    #[test]
    fn a_message_behind_the_last_one_is_told_apart_until_the_partition_is_assigned_again() {
        let mut s = Staging::default();
        let now = Instant::now();
        let push = |s: &mut Staging, offset| {
            s.push(None, Some(b"v"), std::iter::empty(), 1, offset, || now)
        };
        assert!(!s.is_behind(0), "nothing gathered yet");
        push(&mut s, 10);
        push(&mut s, 11);
        let (_, end) = s.take(0).unwrap();
        assert_eq!(end, 12);
        // what librdkafka may hand over again after a resume
        assert!(s.is_behind(11) && s.is_behind(3));
        assert!(!s.is_behind(12));
        // assigned again (after a revoke): a new run of offsets
        s.clear();
        assert!(!s.is_behind(5));
    }
}
