//! The bounded retry of a 429 or 503 after `Retry-After`, for callers that opt in (the CLI).
//!
//! A 429 or 503 means the server did not do the request (rate limited, overloaded, shutting
//! down, or it could not check the credential), so it may be sent again after the server's
//! `Retry-After` (or [`DEFAULT_RETRY_WAIT`] without one), at most [`MAX_RETRIES`] times, and
//! only while the wait asked for is at most [`MAX_RETRY_WAIT`]: a server asking for longer
//! gets no retry, and its answer is the error. This module never prints: the caller supplies
//! a hook that is told about each wait (the CLI writes a note on stderr).
//!
//! The workers do not use it: a poll or report that fails is retried by the poller's own
//! backoff, which also covers an engine that is down.

use crate::Service;
use reqwest::{Method, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Most times one request is sent again after a 429 or 503: with waits of a second, enough
/// to ride out a burst's rate limit or a restart, without hanging a script for long.
pub const MAX_RETRIES: u32 = 5;
/// Longest `Retry-After` honoured before one retry; a longer one ends the request with the
/// server's answer rather than leave the caller silent for minutes.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// The wait before a retry when a 429 or 503 carries no `Retry-After` in seconds (none, or
/// an HTTP date, which our servers never send).
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

/// One wait before a retry, as told to the hook.
#[derive(Debug)]
pub struct Retrying<'a> {
    pub service: Service,
    pub method: &'a Method,
    pub path: &'a str,
    /// "429 RATE_LIMITED", or the bare status when the body was not the error shape.
    pub answer: String,
    pub wait: Duration,
    /// 1 for the first retry.
    pub retry: u32,
    pub max_retries: u32,
}

/// Whether throttled requests are sent again.
#[derive(Clone, Default)]
pub enum Retry {
    /// Every answer is final (the default; the workers and the tests).
    #[default]
    Never,
    /// A 429 or 503 is sent again as the module doc says, telling `hook` before each wait.
    Throttled(Arc<dyn Fn(&Retrying<'_>) + Send + Sync>),
}

impl Retry {
    pub fn throttled(hook: impl Fn(&Retrying<'_>) + Send + Sync + 'static) -> Self {
        Retry::Throttled(Arc::new(hook))
    }

    pub(crate) fn max_retries(&self) -> u32 {
        match self {
            Retry::Never => 0,
            Retry::Throttled(_) => MAX_RETRIES,
        }
    }

    pub(crate) fn tell(&self, retrying: &Retrying<'_>) {
        if let Retry::Throttled(hook) = self {
            hook(retrying);
        }
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retry::Never => f.write_str("Never"),
            Retry::Throttled(_) => f.write_str("Throttled"),
        }
    }
}

/// How long to wait before sending a request again that was answered `status` with
/// `retry_after`: `None` unless it is a 429 or 503 whose wait is at most [`MAX_RETRY_WAIT`].
/// A `Retry-After` in seconds is honoured; none, or one that is not a number of seconds,
/// waits [`DEFAULT_RETRY_WAIT`].
pub fn retry_wait(status: StatusCode, retry_after: Option<&str>) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let wait =
        retry_after.and_then(|text| text.trim().parse::<u64>().ok()).map_or(DEFAULT_RETRY_WAIT, Duration::from_secs);
    (wait <= MAX_RETRY_WAIT).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_503_are_retried_after_their_retry_after_within_the_bound() {
        for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE] {
            assert_eq!(retry_wait(status, Some("3")), Some(Duration::from_secs(3)));
            assert_eq!(retry_wait(status, Some(" 0 ")), Some(Duration::ZERO));
            let max = MAX_RETRY_WAIT.as_secs();
            assert_eq!(retry_wait(status, Some(&max.to_string())), Some(MAX_RETRY_WAIT), "the bound is allowed");
            assert_eq!(retry_wait(status, Some(&(max + 1).to_string())), None, "past the bound: no retry");
            assert_eq!(retry_wait(status, Some("18446744073709551616")), Some(DEFAULT_RETRY_WAIT), "not a u64");
            assert_eq!(retry_wait(status, None), Some(DEFAULT_RETRY_WAIT));
            assert_eq!(retry_wait(status, Some("Wed, 21 Oct 2015 07:28:00 GMT")), Some(DEFAULT_RETRY_WAIT));
            assert_eq!(retry_wait(status, Some("-1")), Some(DEFAULT_RETRY_WAIT));
        }
        for status in
            [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY]
        {
            assert_eq!(retry_wait(status, Some("1")), None, "{status}");
        }
    }
}
