//! The client-side rate limiter of client-go's default REST client: a token bucket of 5
//! requests per second with a burst of 10 (`flowcontrol.NewTokenBucketRateLimiter`, built on
//! `golang.org/x/time/rate`). Every API request takes a token; with none left, the caller
//! waits for its reservation, first come first served.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// client-go's `rest.DefaultQPS`.
pub(crate) const CLIENT_GO_QPS: f64 = 5.0;
/// client-go's `rest.DefaultBurst`.
pub(crate) const CLIENT_GO_BURST: f64 = 10.0;

/// A token bucket shared by every request of one client.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens left; negative when reservations are waiting.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at `rate` per second.
    pub(crate) fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// client-go's default: 5 requests per second, burst 10.
    pub(crate) fn client_go_default() -> TokenBucket {
        TokenBucket::new(CLIENT_GO_QPS, CLIENT_GO_BURST)
    }

    /// Takes a token at `now`; returns how long the caller must wait for it.
    fn reserve(&self, now: Instant) -> Duration {
        let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now.max(bucket.last);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.rate)
        }
    }

    /// Blocks until the caller may send one request.
    pub(crate) fn wait(&self) {
        let delay = self.reserve(Instant::now());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_requests_are_spaced_by_the_rate() {
        let bucket = TokenBucket::new(5.0, 10.0);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(bucket.reserve(now), Duration::ZERO);
        }
        let waits: Vec<u128> = (0..3).map(|_| bucket.reserve(now).as_millis()).collect();
        assert_eq!(waits, [200, 400, 600]);
        // One second later five tokens have come back; three of them were already promised.
        let later = now + Duration::from_secs(1);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later).as_millis(), 200);
    }
}
