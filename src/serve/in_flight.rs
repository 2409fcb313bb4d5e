//! Counts the calls still being answered, so that a stop can wait for them (shared by the
//! listeners, which wait, and the routes, which enter).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Counts calls still being answered, so that a stop can wait for them.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: watch::Sender<usize>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            count: watch::Sender::new(0),
        }
    }
}

/// One call in flight; it leaves when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    in_flight: Arc<InFlight>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight
            .count
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

impl InFlight {
    /// Counts one more call until the guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count
            .send_modify(|count| *count = count.saturating_add(1));
        InFlightGuard {
            in_flight: Arc::clone(self),
        }
    }

    /// How many calls are in flight.
    pub(crate) fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until no call is in flight or `grace` has passed; returns how many are left.
    pub(crate) async fn wait_idle(&self, grace: Duration) -> usize {
        let mut count = self.count.subscribe();
        // The sender lives in `self`, so the wait ends only by reaching zero or by the timeout.
        let _ = tokio::time::timeout(grace, count.wait_for(|count| *count == 0)).await;
        self.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_waits_until_the_last_call_leaves() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.enter();
        let second = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        let leaver = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(first);
            drop(second);
        });
        assert_eq!(in_flight.wait_idle(Duration::from_secs(10)).await, 0);
        leaver.await.expect("joined");
        let _third = in_flight.enter();
        assert_eq!(
            in_flight.wait_idle(Duration::from_millis(10)).await,
            1,
            "gives up after the grace period"
        );
    }
}
