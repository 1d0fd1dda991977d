//! Request rate limits: one token bucket per caller (per API token, per JWT, or per client
//! IP when the engine runs open), in a bounded map; and [`FailureThrottle`], which refuses a
//! client address that keeps presenting bad credentials.
//!
//! It owns the buckets and the arithmetic of refilling them; time is passed in as
//! milliseconds, so the behaviour is the same in a test as in production. It must never
//! grow without bound: past [`MAX_BUCKETS`] callers it forgets the ones it can forget
//! losslessly (full buckets), then the least recently seen.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// Callers tracked at once.
pub const MAX_BUCKETS: usize = 16_384;
/// The longest `Retry-After` we answer; a bucket refills at least this fast at any rate we
/// accept (see [`MAX_PERIOD`]).
const MAX_RETRY_AFTER_S: u64 = 3_600;
/// The longest period a rate may be stated in.
const MAX_PERIOD: Duration = Duration::from_secs(3_600);

/// `--rate-limit`: `off`, or `N/s`, `N/m`, `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSetting {
    Off,
    Every { count: u32, period: Duration },
}

impl FromStr for RateSetting {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(RateSetting::Off);
        }
        let (count, unit) = text.split_once('/').ok_or_else(|| format!("{text:?}: expected N/s, N/m, N/h or off"))?;
        let count: u32 = count.trim().parse().map_err(|_| format!("{text:?}: {count:?} is not a whole number"))?;
        if count == 0 {
            return Err(format!("{text:?}: use `off` to turn limits off"));
        }
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => MAX_PERIOD,
            other => return Err(format!("{text:?}: unknown unit {other:?} (s, m or h)")),
        };
        Ok(RateSetting::Every { count, period })
    }
}

/// A rate and how far above it a caller may briefly go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per millisecond, sustained.
    per_ms: f64,
    /// Requests a caller may make at once after being idle.
    burst: f64,
    /// The rate as it was stated, for the start-up log.
    stated: (u32, Duration),
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (count, period) = self.stated;
        write!(f, "{count} per {}, bursts of {}", humantime::format_duration(period), self.burst)
    }
}

impl RateLimit {
    /// `count` requests per `period`, with bursts of up to `burst` (at least 1).
    pub fn new(count: u32, period: Duration, burst: u32) -> RateLimit {
        let period_ms = period.as_millis().clamp(1, MAX_PERIOD.as_millis()) as f64;
        RateLimit {
            per_ms: f64::from(count.max(1)) / period_ms,
            burst: f64::from(burst.max(1)),
            stated: (count, period),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    fn refill(&mut self, limit: &RateLimit, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + elapsed * limit.per_ms).min(limit.burst);
        self.last_ms = self.last_ms.max(now_ms);
    }
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket, or says how many seconds until it may retry.
    pub fn check(&self, key: &str, now_ms: u64) -> Result<(), u64> {
        // A poisoned lock only means another request panicked mid-update; the buckets are
        // still plain numbers, so carry on with them.
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= MAX_BUCKETS {
            self.make_room(&mut buckets, now_ms);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.limit.burst, last_ms: now_ms });
        bucket.refill(&self.limit, now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = (1.0 - bucket.tokens) / self.limit.per_ms;
        Err(((wait_ms / 1000.0).ceil() as u64).clamp(1, MAX_RETRY_AFTER_S))
    }

    /// Forgets full buckets (a new bucket starts full, so nothing is lost), and if that
    /// frees nothing, the least recently used one.
    fn make_room(&self, buckets: &mut HashMap<String, Bucket>, now_ms: u64) {
        buckets.retain(|_, bucket| {
            let mut refilled = *bucket;
            refilled.refill(&self.limit, now_ms);
            refilled.tokens < self.limit.burst
        });
        if buckets.len() >= MAX_BUCKETS {
            let oldest = buckets.iter().min_by_key(|(_, bucket)| bucket.last_ms).map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |buckets| buckets.len())
    }
}

/// Default for `--max-auth-failures`: failed credentials one client address may present
/// within [`AUTH_FAILURE_WINDOW_MS`];
/// past that, each further failed credential gets 429 until the window ends (a valid one
/// still passes, so others behind the same address are not locked out). A person who
/// mistypes a token a few times is never throttled.
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = 10;
/// The window failures are counted in; a throttled address may try again when it ends.
pub const AUTH_FAILURE_WINDOW_MS: u64 = 60_000;
/// Client addresses whose failures are remembered at once. Past it the expired windows are
/// forgotten, then the oldest: many addresses can dilute the throttle, never grow the map.
pub const MAX_FAILING_CLIENTS: usize = 4_096;

/// Failures of one client address in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start_ms: u64,
}

/// Counts failed authentications per client address (an IPv6 client per /64, which one
/// host typically holds whole) in a bounded map. A success does not reset the count.
pub struct FailureThrottle {
    /// Failures allowed per window; 0 turns the throttle off.
    max_failures: u32,
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

impl FailureThrottle {
    pub fn new(max_failures: u32) -> FailureThrottle {
        FailureThrottle { max_failures, clients: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after_s)` if `client` has used up its failures for this window.
    pub fn check(&self, client: IpAddr, now_ms: u64) -> Result<(), u64> {
        let clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match clients.get(&key(client)) {
            Some(f)
                if self.max_failures > 0
                    && f.count >= self.max_failures
                    && now_ms < f.window_start_ms + AUTH_FAILURE_WINDOW_MS =>
            {
                let left_ms = f.window_start_ms + AUTH_FAILURE_WINDOW_MS - now_ms;
                Err(left_ms.div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication of `client`.
    pub fn record_failure(&self, client: IpAddr, now_ms: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let client = key(client);
        if !clients.contains_key(&client) && clients.len() >= MAX_FAILING_CLIENTS {
            clients.retain(|_, f| now_ms < f.window_start_ms + AUTH_FAILURE_WINDOW_MS);
            if clients.len() >= MAX_FAILING_CLIENTS {
                let oldest = clients.iter().min_by_key(|(_, f)| f.window_start_ms).map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    clients.remove(&oldest);
                }
            }
        }
        let failures = clients.entry(client).or_insert(Failures { count: 0, window_start_ms: now_ms });
        if now_ms >= failures.window_start_ms + AUTH_FAILURE_WINDOW_MS {
            *failures = Failures { count: 0, window_start_ms: now_ms };
        }
        failures.count = failures.count.saturating_add(1);
    }
}

/// The throttle's key: the address, or for IPv6 its /64 network. An IPv4 client of a
/// dual-stack listener arrives as `::ffff:a.b.c.d`; it is keyed as the IPv4 address it is,
/// not as the /64 every such client shares.
fn key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!("off".parse(), Ok(RateSetting::Off));
        assert_eq!("1000/s".parse(), Ok(RateSetting::Every { count: 1000, period: Duration::from_secs(1) }));
        assert_eq!("60/m".parse(), Ok(RateSetting::Every { count: 60, period: Duration::from_secs(60) }));
        for bad in ["", "10", "0/s", "x/s", "10/d"] {
            assert!(bad.parse::<RateSetting>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds() {
        let limiter = RateLimiter::new(RateLimit::new(10, Duration::from_secs(1), 3));
        for _ in 0..3 {
            assert_eq!(limiter.check("a", 0), Ok(()));
        }
        assert_eq!(limiter.check("a", 0), Err(1));
        // Another caller has its own bucket.
        assert_eq!(limiter.check("b", 0), Ok(()));
        // 10/s refills one request every 100 ms.
        assert_eq!(limiter.check("a", 99), Err(1));
        assert_eq!(limiter.check("a", 100), Ok(()));
        assert_eq!(limiter.check("a", 100), Err(1));
    }

    #[test]
    fn retry_after_is_the_wait_for_one_request_in_whole_seconds() {
        let limiter = RateLimiter::new(RateLimit::new(1, Duration::from_secs(60), 1));
        assert_eq!(limiter.check("a", 0), Ok(()));
        assert_eq!(limiter.check("a", 0), Err(60));
        assert_eq!(limiter.check("a", 30_000), Err(30));
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(RateLimit::new(1, Duration::from_secs(60), 2));
        for n in 0..MAX_BUCKETS + 10 {
            // Each caller leaves a bucket that is not full, so only eviction keeps it bounded.
            assert_eq!(limiter.check(&format!("k{n}"), n as u64), Ok(()));
        }
        assert_eq!(limiter.len(), MAX_BUCKETS);
        // The most recent callers are the ones kept.
        assert_eq!(limiter.check(&format!("k{}", MAX_BUCKETS + 9), MAX_BUCKETS as u64 + 9), Ok(()));
        assert_eq!(limiter.check(&format!("k{}", MAX_BUCKETS + 9), MAX_BUCKETS as u64 + 9), Err(60));
    }

    #[test]
    fn failures_are_throttled_at_the_limit_until_the_window_ends() {
        let throttle = FailureThrottle::new(DEFAULT_MAX_AUTH_FAILURES);
        let client: IpAddr = "192.0.2.1".parse().expect("an address");
        for n in 0..DEFAULT_MAX_AUTH_FAILURES {
            assert_eq!(throttle.check(client, 1_000), Ok(()), "failure {n} is allowed");
            throttle.record_failure(client, 1_000);
        }
        assert_eq!(throttle.check(client, 1_000), Err(AUTH_FAILURE_WINDOW_MS / 1000));
        assert_eq!(throttle.check(client, 1_000 + AUTH_FAILURE_WINDOW_MS - 1), Err(1));
        assert_eq!(throttle.check(client, 1_000 + AUTH_FAILURE_WINDOW_MS), Ok(()));
        // Another address is not affected; a new window starts from zero.
        assert_eq!(throttle.check("192.0.2.2".parse().expect("an address"), 1_000), Ok(()));
        throttle.record_failure(client, 1_000 + AUTH_FAILURE_WINDOW_MS);
        assert_eq!(throttle.check(client, 1_000 + AUTH_FAILURE_WINDOW_MS), Ok(()));
    }

    #[test]
    fn zero_turns_the_throttle_off() {
        let throttle = FailureThrottle::new(0);
        let client: IpAddr = "192.0.2.1".parse().expect("an address");
        for _ in 0..100 {
            throttle.record_failure(client, 0);
        }
        assert_eq!(throttle.check(client, 0), Ok(()));
    }

    #[test]
    fn an_ipv6_network_counts_as_one_client() {
        let throttle = FailureThrottle::new(DEFAULT_MAX_AUTH_FAILURES);
        for n in 0..DEFAULT_MAX_AUTH_FAILURES {
            throttle.record_failure(format!("2001:db8::{n:x}").parse().expect("an address"), 0);
        }
        assert!(throttle.check("2001:db8::ffff".parse().expect("an address"), 0).is_err());
        assert!(throttle.check("2001:db8:0:1::1".parse().expect("an address"), 0).is_ok());
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_count_one_by_one() {
        let throttle = FailureThrottle::new(DEFAULT_MAX_AUTH_FAILURES);
        for _ in 0..DEFAULT_MAX_AUTH_FAILURES {
            throttle.record_failure("::ffff:192.0.2.1".parse().expect("an address"), 0);
        }
        assert!(throttle.check("::ffff:192.0.2.1".parse().expect("an address"), 0).is_err());
        assert!(throttle.check("192.0.2.1".parse().expect("an address"), 0).is_err(), "the same client");
        assert!(throttle.check("::ffff:192.0.2.2".parse().expect("an address"), 0).is_ok());
    }

    #[test]
    fn the_failure_map_stays_bounded() {
        let throttle = FailureThrottle::new(DEFAULT_MAX_AUTH_FAILURES);
        for n in 0..MAX_FAILING_CLIENTS as u32 + 10 {
            throttle.record_failure(IpAddr::from(n.to_be_bytes()), u64::from(n));
        }
        let len = throttle.clients.lock().map_or(0, |clients| clients.len());
        assert_eq!(len, MAX_FAILING_CLIENTS);
    }
}
