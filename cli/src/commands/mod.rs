//! The subcommands, one file per noun, and what they share: the context every command gets
//! (the client, `--json`) and the argument parsers used by more than one noun.
//!
//! A command fetches through [`crate::client`] and shows through [`crate::output`]; it never
//! builds HTTP requests or writes to stdout by hand.

pub mod bench;
pub mod cluster;
pub mod definition;
pub mod demo;
pub mod dev;
pub mod events;
pub mod notifications;
pub mod order;
pub mod payments;
pub mod redrive;
pub mod stock;
pub mod token;
pub mod verify;
pub mod why;
pub mod workflow;

use crate::client::{Client, Reply};
use crate::output;
use anyhow::{Context as _, Result};
use shop_types::limits::MAX_WAIT_MS;
use std::time::Duration;

/// What every command that talks to a running stack gets; cheap to clone (the client
/// shares one connection pool).
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    /// Print the API's JSON, pretty, instead of a table.
    pub json: bool,
}

impl Context {
    /// Shows one answer: its raw JSON under `--json`, else whatever `render` makes of it.
    pub fn show<T>(&self, reply: &Reply<T>, render: impl FnOnce(&T) -> Result<()>) -> Result<()> {
        if self.json {
            output::json(&reply.raw().context("the answer is not JSON")?)
        } else {
            render(&reply.body)
        }
    }
}

/// The exit code of a command that followed something to an end other than the one hoped
/// for: `workflow watch` of a run that ended other than COMPLETED, `redrive` of a job that
/// ended stopped or interrupted.
pub const NOT_COMPLETED_EXIT: u8 = 3;

/// What such a command ends with: the sentence `main` prints before exiting with
/// [`NOT_COMPLETED_EXIT`].
#[derive(Debug)]
pub struct NotCompleted(pub String);

impl std::fmt::Display for NotCompleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotCompleted {}

/// Parses a `--wait` duration (`30s`, `1500ms`), refusing more than the server will block,
/// so the user learns the bound instead of getting a shorter wait than asked for.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(text).map_err(|err| format!("{text:?}: {err}"))?;
    let max = Duration::from_millis(MAX_WAIT_MS);
    if wait > max {
        return Err(format!("{text:?} is longer than the longest wait the engine allows ({})", output::duration(max)));
    }
    Ok(wait)
}

/// Tells the user, on stderr, how to get the next page when there is one.
pub fn note_next_page(cursor: Option<&str>) {
    if let Some(cursor) = cursor {
        output::note(&format!("more results: repeat with --cursor {cursor}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded_by_the_engine_limit() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_wait("61s").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
