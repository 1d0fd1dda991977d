//! `shopctl token create|list|revoke`: the engine's API tokens (admin only).
//!
//! `create` prints the new token's secret on stdout, once: the engine keeps only its digest
//! and can never show it again. Nothing here stores a secret, and `list` never has one to
//! show.

use super::Context;
use crate::output::{self, Table};
use anyhow::{Context as _, Result};
use clap::Subcommand;
use shop_types::auth::{CreateTokenRequest, Role, TokenView};
use shop_types::{QueueName, WorkflowType};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown this once).
    Create {
        /// admin (everything), client (orders, reads), worker (tasks on --queue queues) or
        /// signaler (only the --signal signals, only to runs of the --workflow-type types).
        #[arg(long)]
        role: Role,
        /// A queue a worker token may serve; repeat for more. Required for workers.
        #[arg(long = "queue")]
        queues: Vec<QueueName>,
        /// A signal a signaler token may send; repeat for more. Required for signalers.
        #[arg(long = "signal")]
        signals: Vec<String>,
        /// A workflow type a signaler token may signal runs of; repeat for more. Required for
        /// signalers.
        #[arg(long = "workflow-type")]
        workflow_types: Vec<WorkflowType>,
        /// How long the token lives, e.g. `30d`, `12h`; default: until revoked.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<String>,
        /// A label to recognise it by in `token list`; default: the role.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it is refused from now on.
    Revoke { id: String },
}

pub async fn run(command: TokenCommand, ctx: &Context) -> Result<()> {
    match command {
        TokenCommand::Create { role, queues, signals, workflow_types, ttl, name } => {
            let name = name.unwrap_or_else(|| role.to_string());
            let request = CreateTokenRequest { name, role, queues, signals, workflow_types, ttl };
            let reply = ctx.client.engine().create_token(&request).await.context("cannot create the token")?;
            ctx.show(&reply, |created| {
                output::note(&format!(
                    "created {} ({}, {}); its secret follows and is not shown again",
                    created.view.id,
                    created.view.role,
                    expiry(&created.view)
                ));
                output::line(&created.token)
            })
        }
        TokenCommand::List => {
            let reply = ctx.client.engine().tokens().await?;
            ctx.show(&reply, |list| {
                let mut table = Table::with_header(&["ID", "NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES", "STATE"]);
                for token in &list.tokens {
                    table.row(vec![
                        token.id.clone(),
                        token.name.clone(),
                        token.role.to_string(),
                        output::or_dash(Some(scope(token)).filter(|s| !s.is_empty()).as_deref()),
                        output::timestamp(token.created_at_ms),
                        token.expires_at_ms.map_or_else(|| "never".to_owned(), output::timestamp),
                        if token.revoked { "revoked".to_owned() } else { "active".to_owned() },
                    ]);
                }
                table.print()
            })
        }
        TokenCommand::Revoke { id } => {
            let reply =
                ctx.client.engine().revoke_token(&id).await.with_context(|| format!("cannot revoke token {id}"))?;
            ctx.show(&reply, |token| output::line(&format!("revoked {} ({})", token.id, token.name)))
        }
    }
}

/// What a token is confined to: a worker's queues, or a signaler's signals and the workflow
/// types it may send them to (`payment_confirmed,payment_failed -> order`).
fn scope(token: &TokenView) -> String {
    let queues: Vec<&str> = token.queues.iter().map(QueueName::as_str).collect();
    if !token.signals.is_empty() || !token.workflow_types.is_empty() {
        let types: Vec<&str> = token.workflow_types.iter().map(WorkflowType::as_str).collect();
        return format!("{} -> {}", token.signals.join(","), types.join(","));
    }
    queues.join(",")
}

fn expiry(token: &TokenView) -> String {
    token.expires_at_ms.map_or_else(|| "never expires".to_owned(), |at| format!("expires {}", output::timestamp(at)))
}

/// Checks a `--ttl` here so a typo is a usage error, and sends it as typed.
fn parse_ttl(text: &str) -> Result<String, String> {
    let ttl = humantime::parse_duration(text).map_err(|err| format!("{text:?}: {err}"))?;
    if ttl.is_zero() {
        return Err(format!("{text:?}: a token must live longer than 0s"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_durations() {
        assert_eq!(parse_ttl("30d").ok().as_deref(), Some("30d"));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("forever").is_err());
    }
}
