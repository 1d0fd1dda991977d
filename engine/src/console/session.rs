//! Console sessions: a random session id, sent as an `HttpOnly; SameSite=Strict` cookie,
//! mapped in memory to the [`Principal`] its login proved, with a per-session CSRF token.
//!
//! A browser's `EventSource` cannot send an `Authorization` header, so a session also
//! authenticates the API's safe requests (`GET`, `HEAD`: see `api::auth::authenticate`); a
//! state-changing request from the console must carry the session's CSRF token, compared in
//! constant time. Sessions live in memory only: a restart signs everyone out.
//!
//! This module must never keep a credential's secret (an opaque token's digest at most, to
//! end the session when the token is revoked), never log a session id, and never look one
//! up in time that depends on how much of a guess matched (the map is keyed by its digest).

use crate::auth::{base64_url, digest, random_bytes, Digest, Principal};
use axum::http::{header, HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq as _;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "shop_session";
/// Sessions kept at once. Logging in past it ends the session idle the longest: a login
/// needs a valid credential, and a bounded map cannot be grown by anyone without one.
pub const MAX_CONSOLE_SESSIONS: usize = 1_000;
/// A session unused this long ends (30 minutes).
pub const SESSION_IDLE_MS: u64 = 30 * 60 * 1_000;
/// A session ends this long after its login however busy it is (12 hours): a JWT's session
/// cannot outlive the working day its holder signed in for.
pub const SESSION_MAX_AGE_MS: u64 = 12 * 60 * 60 * 1_000;
/// Random bytes in a session id and in a CSRF token: 256 bits, beyond guessing.
const SESSION_SECRET_BYTES: usize = 32;
/// The form field and the header a console action carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Sent back with every state-changing request (a hidden form field or [`CSRF_HEADER`]).
    pub csrf: String,
    /// The digest of the opaque token (or admin-file secret) the session was made with, so
    /// the session ends when that token is revoked; `None` for a JWT or an open engine.
    pub token_digest: Option<Digest>,
    created_ms: u64,
    last_used_ms: u64,
}

impl Session {
    /// Whether `given` is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, given: &str) -> bool {
        given.len() == self.csrf.len() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) > SESSION_IDLE_MS
            || now_ms.saturating_sub(self.created_ms) > SESSION_MAX_AGE_MS
    }
}

/// Every live session, keyed by the digest of its id.
pub struct Sessions {
    sessions: Mutex<HashMap<Digest, Session>>,
    /// Mark the cookie `Secure` (the engine is served behind TLS).
    secure_cookie: bool,
}

impl Sessions {
    pub fn new(secure_cookie: bool) -> Sessions {
        Sessions { sessions: Mutex::new(HashMap::new()), secure_cookie }
    }

    /// Starts a session for `principal`; returns its id (for the cookie) and the session.
    pub fn create(&self, principal: Principal, token_digest: Option<Digest>, now_ms: u64) -> (String, Session) {
        let id = base64_url(&random_bytes::<SESSION_SECRET_BYTES>());
        let session = Session {
            principal,
            csrf: base64_url(&random_bytes::<SESSION_SECRET_BYTES>()),
            token_digest,
            created_ms: now_ms,
            last_used_ms: now_ms,
        };
        let mut sessions = self.lock();
        sessions.retain(|_, s| !s.expired(now_ms));
        while sessions.len() >= MAX_CONSOLE_SESSIONS {
            let Some(idlest) = sessions.iter().min_by_key(|(_, s)| s.last_used_ms).map(|(k, _)| *k) else {
                break;
            };
            sessions.remove(&idlest);
        }
        sessions.insert(digest(&id), session.clone());
        (id, session)
    }

    /// The live session `id` names, marked used at `now_ms`; an expired one is dropped.
    pub fn get(&self, id: &str, now_ms: u64) -> Option<Session> {
        let key = digest(id);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if session.expired(now_ms) {
            sessions.remove(&key);
            return None;
        }
        session.last_used_ms = now_ms;
        Some(session.clone())
    }

    /// Ends session `id` (logout, or its token was revoked).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `Set-Cookie` value that hands session `id` to the browser.
    pub fn cookie(&self, id: &str) -> HeaderValue {
        self.cookie_value(id, "")
    }

    /// The `Set-Cookie` value that makes the browser forget its session.
    pub fn clearing_cookie(&self) -> HeaderValue {
        self.cookie_value("", "; Max-Age=0")
    }

    fn cookie_value(&self, id: &str, extra: &str) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let text = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{secure}{extra}");
        // The id is base64url and the rest is ASCII, so this cannot fail; an empty cookie
        // (signed out) is the harmless answer if it ever did.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Session>> {
        // A panic while holding this lock leaves a map of whole entries: still usable.
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The session id in the request's `Cookie` headers, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal::open(None)
    }

    #[test]
    fn a_session_is_found_by_its_id_until_it_idles_out() {
        let sessions = Sessions::new(false);
        let (id, session) = sessions.create(principal(), None, 1_000);
        assert!(sessions.get(&id, 1_000 + SESSION_IDLE_MS).is_some(), "used at the edge of its idle time");
        let last = 1_000 + SESSION_IDLE_MS;
        assert!(sessions.get(&id, last + SESSION_IDLE_MS + 1).is_none(), "idle one ms too long");
        assert!(sessions.get("not-a-session", 1_000).is_none());
        assert!(session.csrf_matches(&session.csrf));
        assert!(!session.csrf_matches("wrong"));
        assert!(!session.csrf_matches(""));
    }

    #[test]
    fn a_busy_session_still_ends_at_its_max_age() {
        let sessions = Sessions::new(false);
        let (id, _) = sessions.create(principal(), None, 0);
        let mut now = 0;
        while now + SESSION_IDLE_MS < SESSION_MAX_AGE_MS {
            now += SESSION_IDLE_MS;
            assert!(sessions.get(&id, now).is_some());
        }
        assert!(sessions.get(&id, SESSION_MAX_AGE_MS).is_some(), "at its max age");
        assert!(sessions.get(&id, SESSION_MAX_AGE_MS + 1).is_none(), "past it");
    }

    #[test]
    fn past_the_limit_the_idlest_session_ends() {
        let sessions = Sessions::new(false);
        let (first, _) = sessions.create(principal(), None, 0);
        let ids: Vec<String> =
            (1..MAX_CONSOLE_SESSIONS as u64).map(|t| sessions.create(principal(), None, t).0).collect();
        assert_eq!(sessions.len(), MAX_CONSOLE_SESSIONS);
        assert!(sessions.get(&ids[0], 10_000).is_some(), "used lately, so not the idlest");
        sessions.create(principal(), None, 10_001);
        assert_eq!(sessions.len(), MAX_CONSOLE_SESSIONS, "the limit holds");
        assert!(sessions.get(&first, 10_002).is_none(), "the idlest ended");
        assert!(sessions.get(&ids[0], 10_002).is_some());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_asked() {
        let plain = Sessions::new(false).cookie("abc");
        assert_eq!(plain, "shop_session=abc; HttpOnly; SameSite=Strict; Path=/");
        let secure = Sessions::new(true).cookie("abc");
        assert_eq!(secure, "shop_session=abc; HttpOnly; SameSite=Strict; Path=/; Secure");
        assert!(Sessions::new(false).clearing_cookie().to_str().is_ok_and(|c| c.ends_with("Max-Age=0")));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; shop_session=xyz; b=2"));
        assert_eq!(session_id(&headers), Some("xyz"));
        let mut empty = HeaderMap::new();
        empty.append(header::COOKIE, HeaderValue::from_static("shop_session="));
        assert_eq!(session_id(&empty), None);
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
