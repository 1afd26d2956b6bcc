//! The shutdown signal, shared by every task of a pipeline.

use tokio::sync::watch;

/// Triggers shutdown. Cloneable; triggering twice is harmless.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(std::sync::Arc<watch::Sender<bool>>);

/// Observes shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn shutdown_channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(std::sync::Arc::new(tx)), ShutdownSignal(rx))
}

impl ShutdownTrigger {
    /// Asks every task to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new signal observing this trigger.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.0.subscribe())
    }
}

impl ShutdownSignal {
    /// Whether shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (at once if it already was).
    /// Cancel safe. If the trigger is dropped without firing, never completes.
    pub async fn triggered(&mut self) {
        if self.0.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
