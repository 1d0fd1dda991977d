//! `shopctl events tail`: every committed event of the engine as it happens (`GET
//! /v1/events`), filtered, one line each, resumed transparently across a dropped connection
//! or an engine restart. `shopctl workflow watch` is its one-run sibling (`workflow.rs`).
//!
//! Owns how a stream's events are printed; it never builds HTTP requests itself.

use super::Context;
use crate::output;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use shop_client::events::EventsQuery;
use shop_types::api::WorkflowStatus;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print committed events as they happen, until interrupted. Each line starts with the
    /// event's cursor: pass it to --after to go on from there later.
    Tail {
        /// Only events of runs of this workflow type.
        #[arg(long = "type")]
        workflow_type: Option<shop_types::WorkflowType>,
        /// Only events of this kind (e.g. WorkflowCompleted).
        #[arg(long)]
        kind: Option<String>,
        /// Only events after which the run has this status.
        #[arg(long)]
        status: Option<WorkflowStatus>,
        /// Start after this cursor (0: from the first event ever); default: from now.
        #[arg(long)]
        after: Option<String>,
    },
}

pub async fn run(command: EventsCommand, ctx: &Context) -> Result<()> {
    let EventsCommand::Tail { workflow_type, kind, status, after } = command;
    let query = EventsQuery {
        workflow_type: workflow_type.map(String::from),
        kind,
        status: status.map(|s| s.as_str().to_owned()),
        after,
    };
    let mut stream = ctx.client.engine().events(&query)?;
    loop {
        let message = stream.next().await?;
        let event = message.committed_event().context("the engine sent an event that does not parse")?;
        let cursor = message.id.unwrap_or_default();
        if ctx.json {
            // One JSON object per line (not pretty): a stream is read line by line.
            let mut value = serde_json::to_value(&event)?;
            value["cursor"] = serde_json::Value::String(cursor);
            output::line(&value.to_string())?;
        } else {
            output::line(&format!(
                "{cursor}  {}  {}  {}  #{}  {}  {}",
                output::timestamp(event.at_ms),
                event.workflow_id,
                event.workflow_type,
                event.seq,
                event.kind,
                event.status.as_str()
            ))?;
        }
    }
}
