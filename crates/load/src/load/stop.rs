//! Ending a run early, from outside it.

use tokio::sync::watch;

/// Ends load runs early. Clones share one signal: [`StopSignal::stop`] on any of them
/// stops every run that was given one. A signal that is never stopped only means that the
/// runs end by their own limits (`duration`, `max_requests`).
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Sender<bool>);

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal(watch::Sender::new(false))
    }

    /// Asks every run that holds this signal to finish its in-flight requests and end.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Returns once [`StopSignal::stop`] was called, at once if it was already.
    pub(crate) async fn stopped(&self) {
        let mut stopped = self.0.subscribe();
        // `self` is a sender, so the wait can only end with a stop.
        let _ = stopped.wait_for(|stop| *stop).await;
    }
}

impl Default for StopSignal {
    fn default() -> StopSignal {
        StopSignal::new()
    }
}
