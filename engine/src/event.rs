//! The unit of data: an [`Event`] with its key, value, headers, timestamp and origin.

use bytes::Bytes;

/// A header: a name and a value, both byte strings.
///
/// Names the engine itself writes are `&'static` and so cost no allocation
/// (`Bytes::from_static`).
pub type Header = (Bytes, Bytes);

/// Where an event came from: which source, which partition, which position.
///
/// The engine fills `source` and `partition` at dispatch; the source sets
/// `offset` (a Kafka offset, a byte offset in a file, a sequence number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Index of the source in the pipeline (see [`crate::SourceId`]).
    pub source: u16,
    /// Partition within the source.
    pub partition: u32,
    /// Position of the event within its partition.
    pub offset: u64,
}

/// One event. Key and value are reference-counted byte buffers: moving an
/// event or handing it to several sinks never copies its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Routing and ordering key; `None` for unkeyed events.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Headers, in the order they were added. Empty headers allocate nothing.
    pub headers: Vec<Header>,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Where the event came from.
    pub origin: Origin,
}

impl Event {
    /// An unkeyed event carrying `value`.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Event {
            value: value.into(),
            ..Event::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the origin offset.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.origin.offset = offset;
        self
    }

    /// Sets the event time.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// Bytes this event costs in a queue: key, value and headers.
    pub fn size_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.value.len() + self.key.as_ref().map_or(0, Bytes::len) + headers
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Sets header `name`, replacing an existing one.
    pub fn set_header(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        match self.headers.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name, value)),
        }
    }
}

/// Total queue cost of a slice of events, in bytes.
pub fn size_of_events(events: &[Event]) -> usize {
    events.iter().map(Event::size_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_counts_key_value_and_headers() {
        let mut e = Event::new("hello").with_key("k1");
        e.set_header("h", "vv");
        assert_eq!(e.size_bytes(), 5 + 2 + 1 + 2);
    }

    #[test]
    fn set_header_replaces() {
        let mut e = Event::new("x");
        e.set_header("a", "1");
        e.set_header("a", "2");
        assert_eq!(e.headers.len(), 1);
        assert_eq!(e.header("a").unwrap().as_ref(), b"2");
        assert!(e.header("b").is_none());
    }
}
