//! `--authenticate=serviceaccount`: each caller's bearer token reviewed by the API server
//! (TokenReview), the verdict cached briefly so that a busy service does not send one review per
//! call. The decision itself is pure ([`crate::core::callers`]).
//!
//! The cache is keyed by the SHA-256 of the token (the token itself is never stored, logged or
//! counted), holds at most [`MAX_CACHED`] verdicts, and keeps each for [`CACHE_FOR`] or until the
//! token expires, whichever is sooner. Refusals are cached too, so that a flood of bad tokens
//! costs the API server one review per distinct token and period, not one per request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::api::{ApiFailure, PodClient};
use crate::core::callers::{self, AuthSettings, Identity};
use crate::core::durations;
use crate::error::Error;

/// How long a verdict is reused: as long as the API server trusts a reviewed token without
/// looking at its pod again (10 s), so that caching adds at most that much to a revocation.
pub const CACHE_FOR: Duration = Duration::from_secs(10);
/// The most verdicts kept (each about 200 bytes).
pub const MAX_CACHED: usize = 4096;
/// The most TokenReviews in flight at once: a flood of new tokens queues here instead of
/// becoming a flood of requests to the API server.
pub const MAX_CONCURRENT_REVIEWS: usize = 16;

type Verdict = Result<Identity, String>;

/// Reviewed tokens by the SHA-256 of the token.
#[derive(Debug, Default)]
pub(crate) struct ReviewCache {
    entries: HashMap<[u8; 32], (Verdict, Instant)>,
}

impl ReviewCache {
    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Verdict> {
        match self.entries.get(key) {
            Some((verdict, until)) if *until > now => Some(verdict.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `verdict` until `until`; when full, drops what has expired, then the verdict that
    /// would expire first.
    fn put(&mut self, key: [u8; 32], verdict: Verdict, until: Instant, now: Instant) {
        if self.entries.len() >= MAX_CACHED && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, at)| *at > now);
            if self.entries.len() >= MAX_CACHED
                && let Some(first) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(key, _)| *key)
            {
                self.entries.remove(&first);
            }
        }
        self.entries.insert(key, (verdict, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Until when a verdict on a token that expires at `expiry` (Unix seconds) may be reused.
fn cache_until(now: Instant, wall: SystemTime, expiry: Option<u64>) -> Instant {
    let by_ttl = durations::instant_after(now, CACHE_FOR);
    let Some(expiry) = expiry else {
        return by_ttl;
    };
    let left = expiry.saturating_sub(durations::unix_seconds(wall));
    by_ttl.min(durations::instant_after(now, Duration::from_secs(left)))
}

/// Reviews callers' tokens, with the cache.
pub(crate) struct Authenticator {
    pods: PodClient,
    pub(crate) settings: AuthSettings,
    cache: Mutex<ReviewCache>,
    reviewing: tokio::sync::Semaphore,
}

impl Authenticator {
    pub(crate) fn new(pods: PodClient, settings: AuthSettings) -> Self {
        Authenticator {
            pods,
            settings,
            cache: Mutex::new(ReviewCache::default()),
            reviewing: tokio::sync::Semaphore::new(MAX_CONCURRENT_REVIEWS),
        }
    }

    /// The caller of a request with these `Authorization` headers: 401 without a valid token,
    /// 503 when the token cannot be reviewed now.
    pub(crate) async fn identify(&self, authorization: &[Vec<u8>]) -> Result<Identity, Error> {
        let token =
            callers::bearer_token(authorization).map_err(|e| Error::Unauthenticated(e.0))?;
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| Error::Internal("a SHA-256 digest is 32 bytes".to_owned()))?;
        let now = Instant::now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key, now);
        let verdict = match cached {
            Some(verdict) => {
                self.pods.metrics().token_review("cached");
                verdict
            }
            None => {
                let Ok(_permit) = self.reviewing.acquire().await else {
                    return Err(Error::ShuttingDown);
                };
                // Boxed, so that only a review that is out holds its state: inline, it would
                // enlarge every request's future, cached or not.
                let review = Box::pin(self.pods.review_token(token, &self.settings.audience));
                let verdict = match review.await {
                    Ok(verdict) => verdict,
                    Err(failure) => {
                        self.pods.metrics().token_review("failed");
                        return Err(unavailable(&failure));
                    }
                };
                self.pods.metrics().token_review(if verdict.is_ok() {
                    "authenticated"
                } else {
                    "refused"
                });
                let until = cache_until(now, SystemTime::now(), callers::jwt_expiry(token));
                if until > now {
                    self.cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .put(key, verdict.clone(), until, now);
                }
                verdict
            }
        };
        verdict.map_err(Error::Unauthenticated)
    }
}

fn unavailable(failure: &ApiFailure) -> Error {
    let hint = match failure {
        ApiFailure::Refused(_) => {
            " (the tracker needs create on tokenreviews.authentication.k8s.io, e.g. through the ClusterRole system:auth-delegator)"
        }
        _ => "",
    };
    Error::AuthUnavailable(format!("the TokenReview failed: {failure}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> Verdict {
        Ok(Identity {
            username: name.to_owned(),
            groups: Vec::new(),
            pod: None,
        })
    }

    fn key(n: usize) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&n.to_le_bytes());
        key
    }

    #[test]
    fn a_verdict_is_kept_until_its_time_and_no_longer() {
        let mut cache = ReviewCache::default();
        let now = Instant::now();
        cache.put(key(1), identity("a"), now + Duration::from_secs(5), now);
        assert_eq!(
            cache.get(&key(1), now + Duration::from_secs(4)),
            Some(identity("a"))
        );
        assert_eq!(cache.get(&key(1), now + Duration::from_secs(5)), None);
        assert_eq!(
            cache.len(),
            0,
            "an expired verdict is dropped when looked up"
        );
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let mut cache = ReviewCache::default();
        let now = Instant::now();
        for n in 0..MAX_CACHED + 100 {
            let until = now + Duration::from_secs(1 + (n % 7) as u64);
            cache.put(key(n), identity("a"), until, now);
            assert!(cache.len() <= MAX_CACHED);
        }
        assert_eq!(cache.len(), MAX_CACHED);
        // The newest verdict is among those kept.
        assert!(cache.get(&key(MAX_CACHED + 99), now).is_some());
    }

    #[test]
    fn a_verdict_is_never_kept_past_the_tokens_expiry() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let unix = durations::unix_seconds(wall);
        assert_eq!(cache_until(now, wall, None), now + CACHE_FOR);
        assert_eq!(
            cache_until(now, wall, Some(unix + 3)),
            now + Duration::from_secs(3)
        );
        assert_eq!(cache_until(now, wall, Some(unix + 3600)), now + CACHE_FOR);
        assert_eq!(
            cache_until(now, wall, Some(unix.saturating_sub(5))),
            now,
            "expired"
        );
        assert_eq!(cache_until(now, wall, Some(u64::MAX)), now + CACHE_FOR);
    }
}
