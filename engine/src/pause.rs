//! Pausing a source from outside (the admin API): one switch per source
//! name, process-wide like the live values. A paused source's next
//! dispatch waits until it is resumed (or shutdown is asked), which every
//! source already survives as backpressure, so pause needs nothing from
//! the connectors. A source that dispatches several partitions from one
//! task stops all of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

fn switches() -> &'static Mutex<BTreeMap<String, Arc<watch::Sender<bool>>>> {
    static SWITCHES: OnceLock<Mutex<BTreeMap<String, Arc<watch::Sender<bool>>>>> = OnceLock::new();
    SWITCHES.get_or_init(Default::default)
}

/// The switch of `source`, made on first use (unpaused).
pub fn switch(source: &str) -> Arc<watch::Sender<bool>> {
    let mut all = switches().lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        all.entry(source.to_string())
            .or_insert_with(|| Arc::new(watch::channel(false).0)),
    )
}

/// Pauses or resumes `source`; `false` when no source has that name.
pub fn set(source: &str, paused: bool) -> bool {
    let all = switches().lock().unwrap_or_else(|e| e.into_inner());
    match all.get(source) {
        Some(s) => {
            s.send_replace(paused);
            true
        }
        None => false,
    }
}

/// Whether `source` is paused.
pub fn is_paused(source: &str) -> bool {
    let all = switches().lock().unwrap_or_else(|e| e.into_inner());
    all.get(source).is_some_and(|s| *s.borrow())
}

/// Every source with a switch.
pub fn sources() -> Vec<String> {
    switches()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// Waits while `paused` says so, or until `stop` completes.
pub async fn wait_while_paused(
    paused: &mut watch::Receiver<bool>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    while *paused.borrow_and_update() {
        tokio::select! {
            changed = paused.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_source_waits_until_resumed() {
        let s = switch("pause-test");
        let mut rx = s.subscribe();
        assert!(set("pause-test", true));
        assert!(is_paused("pause-test"));
        assert!(!set("no-such-source", true));
        let waiting = tokio::spawn(async move {
            wait_while_paused(&mut rx, std::future::pending()).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        set("pause-test", false);
        waiting.await.unwrap();
        assert!(sources().contains(&"pause-test".to_string()));
    }
}
