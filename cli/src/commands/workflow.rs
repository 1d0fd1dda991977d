//! `shopctl workflow list|show|history|start|signal|cancel|terminate|resume`: the engine's
//! generic `/v1` workflow API, for any workflow type.
//!
//! Owns how runs are listed and shown; the history timeline itself is [`crate::timeline`].

use super::{note_next_page, Context};
use crate::output::{self, or_dash, Table};
use crate::timeline;
use anyhow::{Context as _, Result};
use clap::Subcommand;
use shop_client::engine::{ListQuery, RunAction};
use shop_types::api::{
    HistoryResponse, InFlightView, ReasonRequest, StartWorkflowRequest, WorkflowStatus, WorkflowView,
};
use shop_types::limits::MAX_LIST_LIMIT;
use shop_types::{JsonText, WorkflowId};

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List workflow runs.
    List {
        /// running, completed, compensated, failed or terminated.
        #[arg(long)]
        status: Option<WorkflowStatus>,
        /// Only runs of this workflow type (e.g. order).
        #[arg(long = "type")]
        workflow_type: Option<shop_types::WorkflowType>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT as i64))]
        limit: Option<u32>,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one run: status, input, output.
    Show { id: WorkflowId },
    /// Show a run's history as a timeline.
    History { id: WorkflowId },
    /// Print a run's events as they happen (its history first), until it ends. Exit 0 when
    /// it completed, 3 when it ended otherwise (compensated, failed, terminated), 1 on error.
    /// A dropped connection or an engine restart is ridden out (Last-Event-ID).
    Watch { id: WorkflowId },
    /// Start a run of a registered workflow type.
    Start {
        #[arg(value_name = "TYPE")]
        workflow_type: shop_types::WorkflowType,
        /// The run's ID; starting the same ID and input again returns the existing run.
        #[arg(long)]
        id: Option<WorkflowId>,
        /// The run's input, as JSON.
        #[arg(long, value_parser = parse_json, default_value = "null")]
        input: JsonText,
    },
    /// Send a signal to a run (recorded once per key; a signal before its wait opens is
    /// buffered). Without --key a fresh key is generated and printed on stderr: pass it again
    /// to retry safely.
    Signal {
        id: WorkflowId,
        /// A signal the run's definition declares (its `[signals]`).
        name: String,
        /// The payload, as JSON.
        #[arg(long, value_parser = parse_json, default_value = "{}")]
        data: JsonText,
        /// The Idempotency-Key: the same key again changes nothing.
        #[arg(long)]
        key: Option<String>,
    },
    /// Cancel a run: it compensates what it did (refused past its pivot step).
    Cancel {
        id: WorkflowId,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop a run at once, without compensating.
    Terminate {
        id: WorkflowId,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a run parked as FAILED because a compensation kept failing, once the cause is
    /// fixed: the failed compensation runs again.
    Resume {
        id: WorkflowId,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(command: WorkflowCommand, ctx: &Context) -> Result<()> {
    match command {
        WorkflowCommand::List { status, workflow_type, limit, cursor } => {
            let query = ListQuery {
                status: status.map(|s| s.as_str().to_owned()),
                workflow_type: workflow_type.map(String::from),
                limit,
                cursor,
            };
            let reply = ctx.client.engine().workflows(&query).await?;
            ctx.show(&reply, |list| {
                let mut table = Table::with_header(&["ID", "TYPE", "STATUS", "DOMAIN STATUS", "CREATED", "REASON"]);
                for run in &list.workflows {
                    table.row(vec![
                        run.id.to_string(),
                        format!("{} v{}", run.workflow_type, run.definition_version),
                        run.status.as_str().to_owned(),
                        or_dash(run.domain_status.as_deref()),
                        output::timestamp(run.created_at_ms),
                        or_dash(run.reason.as_deref()),
                    ]);
                }
                table.print()
            })?;
            note_next_page(reply.body.next_cursor.as_deref());
            Ok(())
        }
        WorkflowCommand::Show { id } => {
            let reply = ctx.client.engine().workflow(id.as_str(), None).await?;
            ctx.show(&reply, show_run)
        }
        WorkflowCommand::History { id } => {
            let reply = fetch_history(ctx, &id).await?;
            ctx.show(&reply, |history| output::line(timeline::render(&history.events).trim_end()))
        }
        WorkflowCommand::Watch { id } => watch(ctx, &id).await,
        WorkflowCommand::Start { workflow_type, id, input } => {
            let id = id.map(|id| id.as_str().to_owned());
            let request = StartWorkflowRequest { workflow_type, id, input, signal: None };
            let reply = ctx.client.engine().start_workflow(&request).await?;
            if reply.status == shop_client::StatusCode::OK {
                output::note(&format!("workflow {} already existed; showing it", reply.body.id));
            }
            ctx.show(&reply, show_run)
        }
        WorkflowCommand::Signal { id, name, data, key } => {
            let key = key.unwrap_or_else(|| {
                let key = format!("shopctl-{:032x}", rand::random::<u128>());
                output::note(&format!("idempotency key {key} (pass --key {key} to retry this signal safely)"));
                key
            });
            send_signal(ctx, &id, &name, &key, &data).await
        }
        WorkflowCommand::Cancel { id, reason } => post_action(ctx, &id, RunAction::Cancel, reason).await,
        WorkflowCommand::Terminate { id, reason } => post_action(ctx, &id, RunAction::Terminate, reason).await,
        WorkflowCommand::Resume { id, reason } => post_action(ctx, &id, RunAction::Resume, reason).await,
    }
}

/// `POST /v1/workflows/{id}/signals/{name}` and prints the outcome (`recorded` or
/// `duplicate`); shared with `order confirm-payment` and the demo.
pub async fn send_signal(ctx: &Context, id: &WorkflowId, name: &str, key: &str, payload: &JsonText) -> Result<()> {
    let reply = ctx.client.engine().signal(id.as_str(), name, key, payload).await?;
    ctx.show(&reply, |answer| output::line(&format!("signal {name} for {id}: {}", answer.outcome)))
}

/// `GET /v1/workflows/{id}/history`; shared with the demo.
pub async fn fetch_history(ctx: &Context, id: &WorkflowId) -> Result<crate::client::Reply<HistoryResponse>> {
    Ok(ctx.client.engine().history(id.as_str()).await?)
}

/// `POST /v1/workflows/{id}/{action}` (cancel, terminate, retry) and shows the run after it.
async fn post_action(ctx: &Context, id: &WorkflowId, action: RunAction, reason: Option<String>) -> Result<()> {
    let reply = ctx.client.engine().run_action(id.as_str(), action, &ReasonRequest { reason }).await?;
    ctx.show(&reply, show_run)
}

/// Prints the run's events until its `end`; with `--json`, one history entry per line.
async fn watch(ctx: &Context, id: &WorkflowId) -> Result<()> {
    let mut stream = ctx.client.engine().workflow_events(id.as_str(), 0)?;
    let mut start_ms = None;
    loop {
        let message = stream.next().await?;
        if message.event == "end" {
            let status = message.end().context("the engine sent an end that does not parse")?.status;
            if status == WorkflowStatus::Completed {
                return Ok(());
            }
            return Err(super::NotCompleted(format!("workflow {id} ended {}", status.as_str())).into());
        }
        let event = message.history_event().context("the engine sent an event that does not parse")?;
        if ctx.json {
            output::line(&serde_json::to_string(&event)?)?;
        } else {
            let start = *start_ms.get_or_insert(event.at_ms);
            output::line(&timeline::render_one(&event, start))?;
        }
    }
}

fn show_run(run: &WorkflowView) -> Result<()> {
    let mut table = Table::without_header();
    table.row(vec!["id".into(), run.id.to_string()]);
    table.row(vec!["type".into(), format!("{} v{}", run.workflow_type, run.definition_version)]);
    table.row(vec!["status".into(), run.status.as_str().to_owned()]);
    if let Some(domain) = &run.domain_status {
        table.row(vec!["domain status".into(), domain.clone()]);
    }
    if let Some(reason) = &run.reason {
        table.row(vec!["reason".into(), reason.clone()]);
    }
    table.row(vec!["created".into(), output::timestamp(run.created_at_ms)]);
    if let Some(closed) = run.closed_at_ms {
        table.row(vec!["closed".into(), output::timestamp(closed)]);
    }
    table.row(vec!["input".into(), run.input.to_string()]);
    if let Some(result) = &run.output {
        table.row(vec!["output".into(), result.to_string()]);
    }
    for waiting in &run.waiting_for {
        table.row(vec!["waiting for".into(), waiting_text(waiting)]);
    }
    table.print()
}

/// One thing a run in flight waits for, on one line: waits with their signals and deadline,
/// sleeps with their wake time, children with their ids.
fn waiting_text(waiting: &InFlightView) -> String {
    match waiting {
        InFlightView::Activity { step, attempt } => format!("{step} (attempt {attempt})"),
        InFlightView::Sleep { step, until_ms } => format!("{step}: sleep until {}", output::timestamp(*until_ms)),
        InFlightView::Wait { step, signals, deadline_ms, .. } => {
            format!("{step}: signal {} until {}", signals.join(" | "), output::timestamp(*deadline_ms))
        }
        InFlightView::Child { step, child } => format!("{step}: child {child}"),
        InFlightView::HeldByParent { parent } => format!("its parent {parent} (held until it ends)"),
    }
}

fn parse_json(text: &str) -> Result<JsonText, String> {
    JsonText::parse(text).map_err(|err| format!("not valid JSON: {err}"))
}
