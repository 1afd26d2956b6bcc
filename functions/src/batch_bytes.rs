//! [`BatchBytes`]: one buffer for the payloads a step writes while
//! processing a batch.

use bytes::{Bytes, BytesMut};

/// Where a step writes the new values (or keys) of a batch's events: each
/// one is appended and split off as frozen [`Bytes`], so a batch costs
/// about one allocation instead of one per event. The split-off values
/// share the buffer; it is freed when the last of them is dropped.
#[derive(Debug, Default)]
pub(crate) struct BatchBytes {
    buf: BytesMut,
}

impl BatchBytes {
    /// Makes room for about `bytes` more bytes (call once per batch).
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// The buffer to append the next value to.
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Everything appended since the last `take` (or `discard`).
    pub(crate) fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Forgets everything appended since the last `take`.
    pub(crate) fn discard(&mut self) {
        self.buf.clear();
    }
}

/// What a batch of events' values add up to, in bytes: a size hint.
pub(crate) fn value_bytes(events: &[weir_engine::Event]) -> usize {
    events.iter().map(|e| e.value.len()).sum()
}
