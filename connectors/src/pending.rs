//! A batch being gathered by a source: dispatched when it holds
//! `max_events` events or `max_bytes` bytes, or when its oldest event has
//! waited the source's batch wait (`max_wait`, or adapted to load with a
//! `latency_target`), whichever comes first.

use std::sync::Arc;

use tokio::time::Instant;
use weir_config::BatchSettings;
use weir_engine::batch_wait::BatchWait;
use weir_engine::driver::Input;
use weir_engine::Event;

/// Events gathered for one partition, and the position after the last one.
#[derive(Debug)]
pub(crate) struct Pending {
    events: Vec<Event>,
    bytes: usize,
    end: u64,
    deadline: Option<Instant>,
    max_events: usize,
    max_bytes: usize,
    /// Read when a batch starts.
    wait: Arc<BatchWait>,
}

impl Pending {
    /// An empty batch with the given limits and wait.
    pub(crate) fn new(settings: &BatchSettings, wait: Arc<BatchWait>) -> Self {
        let max_events = settings.max_events.max(1);
        Pending {
            events: Vec::with_capacity(max_events.min(64 * 1024)),
            bytes: 0,
            end: 0,
            deadline: None,
            max_events,
            max_bytes: settings.max_bytes.max(1),
            wait,
        }
    }

    /// Events gathered.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Adds an event; `end` is the position after it.
    pub(crate) fn push(&mut self, event: Event, end: u64) {
        if self.events.is_empty() {
            // the wait of the moment the batch starts: an adaptive wait
            // that shrinks meanwhile does not shorten it (bounded by
            // max_wait, at most half the latency target)
            self.deadline = Some(Instant::now() + self.wait.current());
        }
        self.bytes += event.size_bytes();
        self.events.push(event);
        self.end = end;
    }

    /// Moves the end position past input that produced no event (skipped
    /// lines), so a dispatch covers it.
    pub(crate) fn advance(&mut self, end: u64) {
        self.end = end;
    }

    /// Whether adding `bytes` more would take a non-empty batch past
    /// `max_bytes`: dispatch first.
    pub(crate) fn would_overflow(&self, bytes: usize) -> bool {
        !self.events.is_empty() && self.bytes + bytes > self.max_bytes
    }

    /// Whether the batch reached its size limit.
    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= self.max_events || self.bytes >= self.max_bytes
    }

    /// When the batch must go even if not full; `None` while empty.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The batch as a driver input for `partition`, leaving an empty
    /// batch; [`Input::Idle`] when there is nothing to hand on.
    pub(crate) fn take_input(&mut self, partition: u32) -> Input {
        match self.take() {
            Some((events, end)) => Input::Batch {
                partition,
                events,
                end,
            },
            None => Input::Idle,
        }
    }

    /// The events and their end position, leaving an empty batch; `None`
    /// when there is nothing to dispatch.
    pub(crate) fn take(&mut self) -> Option<(Vec<Event>, u64)> {
        if self.events.is_empty() {
            return None;
        }
        let capacity = self.events.len().min(self.max_events);
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(capacity));
        self.bytes = 0;
        self.deadline = None;
        Some((events, self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Arc<BatchWait> {
        Arc::new(BatchWait::fixed(BatchSettings::default().max_wait))
    }

    fn settings(max_events: usize, max_bytes: usize) -> BatchSettings {
        BatchSettings {
            max_events,
            max_bytes,
            ..BatchSettings::default()
        }
    }

    #[test]
    fn full_by_events_or_bytes() {
        let mut p = Pending::new(&settings(2, 1000), fixed());
        assert!(p.take().is_none());
        assert!(p.deadline().is_none());
        p.push(Event::new("a"), 2);
        assert!(!p.is_full());
        assert!(p.deadline().is_some());
        p.push(Event::new("b"), 4);
        assert!(p.is_full());
        let (events, end) = p.take().unwrap();
        assert_eq!((events.len(), end), (2, 4));
        assert!(p.deadline().is_none());

        let mut p = Pending::new(&settings(100, 5), fixed());
        assert!(!p.would_overflow(50), "an empty batch takes any event");
        p.push(Event::new("abc"), 1);
        assert!(!p.is_full());
        assert!(p.would_overflow(3));
        assert!(!p.would_overflow(2));
        p.push(Event::new("de"), 2);
        assert!(p.is_full());
    }

    #[test]
    fn advance_moves_the_end() {
        let mut p = Pending::new(&settings(10, 1000), fixed());
        p.push(Event::new("a"), 2);
        p.advance(5);
        assert_eq!(p.take().unwrap().1, 5);
    }
}
