//! How `shopctl` uses [`shop_client`]: one client of the engine and one of a worker admin
//! API, sharing a connection pool and the credential, built with the CLI's options.
//!
//! It owns only what is the CLI's own: the note on stderr while a throttled request waits to
//! be sent again (the retry itself, bounded by [`shop_client::retry::MAX_RETRIES`] and
//! [`shop_client::retry::MAX_RETRY_WAIT`], is the client's), and the hint a failed request's
//! one-line error ends with. It must never build a request itself.
//!
//! A token given with [`Client::with_token`] goes to the engine and to the worker admin API
//! alike (as a sensitive `Authorization: Bearer` header): the worker admin API accepts the
//! engine's admin credentials, so one admin token serves the whole system.

use crate::output;
use anyhow::{Context as _, Result};
use shop_client::{Options, Retry, Service, StatusCode};
use shop_types::auth::BearerToken;

pub use shop_client::Reply;

#[derive(Debug, Clone)]
pub struct Client {
    engine: shop_client::Client,
    worker: shop_client::Client,
}

/// The CLI's client options: a 429 or 503 is retried after `Retry-After`, boundedly, for
/// every request, and the user is told of each wait on stderr.
fn options() -> Options {
    let note = |retrying: &shop_client::Retrying<'_>| {
        output::note(&format!(
            "{} answered {} {} with {}; waiting {} before retry {} of {}",
            retrying.service.describe(),
            retrying.method,
            retrying.path,
            retrying.answer,
            output::duration(retrying.wait),
            retrying.retry,
            retrying.max_retries,
        ));
    };
    Options { retry: Retry::throttled(note), ..Options::default() }
}

impl Client {
    /// `engine` and `worker` are base URLs; a bare `host:port` is taken as `http://host:port`.
    pub fn new(engine: &str, worker: &str) -> Result<Self> {
        let engine = shop_client::Client::new(Service::Engine, engine, options()).context("bad --engine address")?;
        let worker = engine.at(Service::Worker, worker).context("bad --worker address")?;
        Ok(Client { engine, worker })
    }

    /// The same client (and credential) with another worker admin API, e.g. one domain's.
    pub fn with_worker(&self, worker: &str) -> Result<Self> {
        Ok(Client { worker: self.engine.at(Service::Worker, worker).context("bad worker address")?, ..self.clone() })
    }

    /// Sends `token` with every request, to the engine and to the worker admin API.
    pub fn with_token(self, token: Option<&BearerToken>) -> Result<Self> {
        Ok(Client { engine: self.engine.with_token(token)?, worker: self.worker.with_token(token)? })
    }

    pub fn engine(&self) -> &shop_client::Client {
        &self.engine
    }

    pub fn worker(&self) -> &shop_client::Client {
        &self.worker
    }
}

/// What to add to a failed command's one line so the user knows the fix: how to start an
/// engine when nothing answers, and where a credential comes from when one was refused.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let err = err.chain().find_map(|cause| cause.downcast_ref::<shop_client::Error>())?;
    match (err.service(), err.status()) {
        (Some(Service::Engine), None) if err.is_connect() => Some("shopctl dev starts one"),
        (Some(Service::Engine), Some(StatusCode::UNAUTHORIZED)) => Some("pass a token with --token or set SHOP_TOKEN"),
        (Some(Service::Worker), Some(StatusCode::UNAUTHORIZED)) => {
            Some("pass an admin token of the engine with --token or set SHOP_TOKEN")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_says_how_to_start_the_engine() -> Result<()> {
        // Port 1 on loopback is privileged and not served here: the connect is refused.
        let client = Client::new("127.0.0.1:1", "127.0.0.1:1")?;
        let err = anyhow::Error::from(client.engine().health().await.err().context("nothing listens")?);
        assert_eq!(err.to_string(), "cannot reach the engine at http://127.0.0.1:1: is it running?");
        assert_eq!(hint(&err), Some("shopctl dev starts one"));
        Ok(())
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(Client::new("https://example.com", "127.0.0.1:1").is_err());
        assert!(Client::new("127.0.0.1:1", "not a url").is_err());
    }
}
