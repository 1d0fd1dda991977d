//! What the engine said about a credential, remembered: the one cache and check limiter of
//! the worker's two gates that ask the engine (the admin API, `admin_auth`, and the
//! notification WebSocket, `notify_ws`).
//!
//! Answers are kept by the SHA-256 digest of the credential (never the credential itself),
//! each until its own expiry, in a map of at most [`MAX_CACHED_CREDENTIALS`]; at most
//! [`MAX_CONCURRENT_CHECKS`] questions are in flight to the engine at once, and a request
//! waits at most [`CHECK_TIMEOUT`] for its turn (then 503), so a crowd of unknown credentials
//! becomes refusals, not a queue or a flood. A failed question caches nothing.
//!
//! This module must never store, log or echo a credential, and decides nothing itself: what
//! an answer means is its caller's business.

use crate::admin::ApiError;
use axum::http::StatusCode;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most credentials remembered at once; beyond it the entry closest to expiry goes first, so
/// a stream of made-up credentials cannot grow the map.
pub const MAX_CACHED_CREDENTIALS: usize = 1024;
/// Most checks in flight to the engine at once, per gate.
pub const MAX_CONCURRENT_CHECKS: usize = 8;
/// How long one check may take end to end, waiting for its turn included.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` of a 503 when the engine cannot be asked, and of a 429 whose engine answer
/// carried none.
pub const RETRY_AFTER_S: u64 = 1;

/// The SHA-256 digest a credential is remembered by.
pub type Digest = [u8; 32];

/// Answers by credential digest, each with its expiry; at most [`MAX_CACHED_CREDENTIALS`].
#[derive(Debug)]
pub(crate) struct Cache<V> {
    entries: HashMap<Digest, (V, Instant)>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache { entries: HashMap::new() }
    }
}

impl<V: Clone> Cache<V> {
    pub(crate) fn get(&self, digest: &Digest, now: Instant) -> Option<V> {
        self.entries.get(digest).filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone())
    }

    pub(crate) fn insert(&mut self, digest: Digest, value: V, expires: Instant, now: Instant) {
        if self.entries.len() >= MAX_CACHED_CREDENTIALS && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= MAX_CACHED_CREDENTIALS {
                let soonest = self.entries.iter().min_by_key(|(_, (_, expires))| *expires).map(|(key, _)| *key);
                if let Some(key) = soonest {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries.insert(digest, (value, expires));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A cache of the engine's answers plus the limit on questions in flight.
#[derive(Debug)]
pub(crate) struct Checked<V> {
    cache: Mutex<Cache<V>>,
    permits: Semaphore,
}

impl<V: Clone> Checked<V> {
    pub(crate) fn new() -> Self {
        Checked { cache: Mutex::new(Cache::default()), permits: Semaphore::new(MAX_CONCURRENT_CHECKS) }
    }

    /// The remembered answer for `credential`, or `ask`'s (remembered for as long as it
    /// says), asked with one of the permits.
    pub(crate) async fn get_or_check<Fut>(&self, credential: &str, ask: impl FnOnce() -> Fut) -> Result<V, ApiError>
    where
        Fut: Future<Output = Result<(V, Duration), ApiError>>,
    {
        let digest: Digest = Sha256::digest(credential.as_bytes()).into();
        if let Some(value) = self.cached(&digest) {
            return Ok(value);
        }
        // Waiting for a permit is bounded too. The semaphore is never closed.
        let _permit = match tokio::time::timeout(CHECK_TIMEOUT, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(unavailable("too many credential checks in flight; try again")),
        };
        // Another request may have asked while this one waited for its permit.
        if let Some(value) = self.cached(&digest) {
            return Ok(value);
        }
        let (value, ttl) = ask().await?;
        if let Ok(mut cache) = self.cache.lock() {
            let now = Instant::now();
            cache.insert(digest, value.clone(), now + ttl, now);
        }
        Ok(value)
    }

    fn cached(&self, digest: &Digest) -> Option<V> {
        self.cache.lock().ok().and_then(|cache| cache.get(digest, Instant::now()))
    }

    /// How many answers are remembered.
    #[cfg(test)]
    pub(crate) fn cached_count(&self) -> usize {
        self.cache.lock().map(|cache| cache.len()).unwrap_or(0)
    }
}

/// The engine cannot be asked now: 503 with `Retry-After`.
pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "AUTH_UNAVAILABLE", message).retry_after(RETRY_AFTER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: usize) -> Digest {
        Sha256::digest(n.to_be_bytes()).into()
    }

    const LONG: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_secs(2);

    #[test]
    fn answers_expire_when_they_say() {
        let now = Instant::now();
        let mut cache = Cache::default();
        cache.insert(digest(1), "long", now + LONG, now);
        cache.insert(digest(2), "short", now + SHORT, now);
        assert_eq!(cache.get(&digest(1), now + LONG - Duration::from_millis(1)), Some("long"));
        assert_eq!(cache.get(&digest(1), now + LONG), None);
        assert_eq!(cache.get(&digest(2), now + SHORT - Duration::from_millis(1)), Some("short"));
        assert_eq!(cache.get(&digest(2), now + SHORT), None);
    }

    #[test]
    fn the_cache_holds_at_most_its_bound_and_drops_the_soonest_to_expire() {
        let now = Instant::now();
        let mut cache = Cache::default();
        cache.insert(digest(0), "short", now + SHORT, now);
        for n in 1..MAX_CACHED_CREDENTIALS {
            cache.insert(digest(n), "long", now + LONG, now);
        }
        assert_eq!(cache.len(), MAX_CACHED_CREDENTIALS);
        cache.insert(digest(MAX_CACHED_CREDENTIALS), "long", now + LONG, now);
        assert_eq!(cache.len(), MAX_CACHED_CREDENTIALS);
        assert_eq!(cache.get(&digest(0), now), None, "the one closest to expiry went");
        assert_eq!(cache.get(&digest(MAX_CACHED_CREDENTIALS), now), Some("long"));
        // Expired entries make room before live ones are dropped.
        let later = now + SHORT;
        cache.insert(digest(0), "short", later + SHORT, later);
        let later = now + LONG;
        cache.insert(digest(MAX_CACHED_CREDENTIALS + 1), "long", later + LONG, later);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_check_is_not_remembered_and_a_good_one_is() {
        let checked: Checked<u8> = Checked::new();
        let refused = checked.get_or_check("c", || async { Err(unavailable("down")) }).await;
        assert!(refused.is_err());
        assert_eq!(checked.cached_count(), 0);
        assert_eq!(checked.get_or_check("c", || async { Ok((7, LONG)) }).await.ok(), Some(7));
        assert_eq!(checked.get_or_check("c", || async { Ok((8, LONG)) }).await.ok(), Some(7), "remembered");
    }
}
