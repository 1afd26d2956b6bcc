//! Taps: a live sample of the events leaving a stage (a source, a step, a
//! sink), for `weir tap` and `GET /api/v1/tap/STAGE`. With no one
//! listening a tap costs one atomic load per batch; with listeners it
//! copies (reference-counted payloads: no byte copy) at most
//! [`PER_BATCH`] events of each batch into a bounded broadcast channel,
//! where a slow listener loses samples rather than slowing the stage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

use crate::event::Event;

/// Most events sampled from one batch.
pub const PER_BATCH: usize = 4;

/// Samples a listener may fall behind by before it loses some.
const BUFFER: usize = 256;

/// The tap of one stage.
#[derive(Debug)]
pub struct Tap {
    listeners: AtomicUsize,
    tx: broadcast::Sender<Event>,
}

impl Tap {
    fn new() -> Self {
        Tap {
            listeners: AtomicUsize::new(0),
            tx: broadcast::channel(BUFFER).0,
        }
    }

    /// Offers a batch's events: sampled only while someone listens.
    #[inline]
    pub fn offer(&self, events: &[Event]) {
        if self.listeners.load(Ordering::Relaxed) == 0 {
            return;
        }
        for e in events.iter().take(PER_BATCH) {
            let _ = self.tx.send(e.clone());
        }
    }

    /// Starts listening; sampling stops when the last listener drops.
    pub fn listen(self: &Arc<Self>) -> Listener {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listener {
            rx: self.tx.subscribe(),
            tap: Arc::clone(self),
        }
    }
}

/// A listener on a tap.
#[derive(Debug)]
pub struct Listener {
    rx: broadcast::Receiver<Event>,
    tap: Arc<Tap>,
}

impl Listener {
    /// The next sampled event; `None` once the tap is gone. Samples lost to
    /// a slow listener are skipped.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.tap.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

fn taps() -> &'static Mutex<BTreeMap<String, Arc<Tap>>> {
    static TAPS: OnceLock<Mutex<BTreeMap<String, Arc<Tap>>>> = OnceLock::new();
    TAPS.get_or_init(Default::default)
}

/// The tap of stage `id` (`source:NAME`, `step:NAME`, `sink:NAME`), made on first use.
pub fn tap(id: &str) -> Arc<Tap> {
    let mut taps = taps().lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        taps.entry(id.to_string())
            .or_insert_with(|| Arc::new(Tap::new())),
    )
}

/// The tap of stage `id` if that stage exists.
pub fn find(id: &str) -> Option<Arc<Tap>> {
    taps()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned()
}

/// Every stage with a tap.
pub fn stages() -> Vec<String> {
    taps()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tap_samples_only_while_someone_listens() {
        let t = tap("step:tap-test");
        t.offer(&[Event::new("unheard")]);
        let mut listener = t.listen();
        let batch: Vec<Event> = (0..10).map(|i| Event::new(format!("e{i}"))).collect();
        t.offer(&batch);
        for i in 0..PER_BATCH {
            assert_eq!(listener.next().await.unwrap().value, format!("e{i}"));
        }
        drop(listener);
        assert_eq!(t.listeners.load(Ordering::Relaxed), 0);
        assert!(find("step:tap-test").is_some());
        assert!(stages().contains(&"step:tap-test".to_string()));
    }
}
