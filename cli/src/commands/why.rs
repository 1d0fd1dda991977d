//! `shopctl why ID`: what a run is doing and why, in one screen: its steps in flight (attempt
//! n of N, last error, next retry, wait for a worker and who polls its queue, timeouts left),
//! what it waits for, a parked run's failure and how to resume, a finished run's end.
//!
//! Renders the `why` object of `GET /v1/workflows/{id}`; `--json` prints that object alone.
//! It decides nothing: every fact and sentence is the engine's.

use super::Context;
use crate::output::{self, Table};
use anyhow::{Context as _, Result};
use shop_types::api::WorkflowView;
use shop_types::describe::millis;
use shop_types::why::{WhyError, WhyStep, WhyStepState, WhyTimeout, WhyView, WhyWait};
use shop_types::WorkflowId;

pub async fn run(id: WorkflowId, ctx: &Context) -> Result<()> {
    let reply = ctx.client.engine().workflow(id.as_str(), None).await?;
    if ctx.json {
        let raw = reply.raw().context("the answer is not JSON")?;
        let why = raw.get("why").cloned().context("the engine sent no `why` (is it older than shopctl?)")?;
        return output::json(&why);
    }
    let why = reply.body.why.as_deref().context("the engine sent no `why` (is it older than shopctl?)")?;
    output::line(render(&reply.body, why).trim_end())
}

/// The whole screen for `run`.
fn render(run: &WorkflowView, why: &WhyView) -> String {
    let now = why.as_of_ms;
    let mut text = format!("{}  {} v{}  {}\n", run.id, run.workflow_type, run.definition_version, run.status.as_str());
    text.push_str(&format!("{}\n", why.summary));
    if !why.steps.is_empty() {
        let mut table = Table::with_header(&["STEP", "STATE", "ATTEMPT", "QUEUE", "DETAIL"]);
        for step in &why.steps {
            table.row(vec![
                step_name(step),
                state(step.state).into(),
                attempt(step),
                step.queue.clone(),
                detail(step, now),
            ]);
        }
        text.push('\n');
        text.push_str(&table.render());
        for step in &why.steps {
            if let Some(error) = &step.last_error {
                text.push_str(&format!("  {} last error: {}\n", step.step, error_text(error)));
            }
            if !step.timeouts.is_empty() {
                let timeouts: Vec<String> = step.timeouts.iter().map(timeout_text).collect();
                text.push_str(&format!("  {} timeouts: {}\n", step.step, timeouts.join(", ")));
            }
        }
    }
    if !why.waits.is_empty() {
        text.push('\n');
        for wait in &why.waits {
            text.push_str(&format!("waiting for  {}\n", wait_text(wait)));
        }
    }
    if let Some(execution) = &why.execution_timeout {
        text.push_str(&format!("run times out  {}\n", timeout_text(execution)));
    }
    if let Some(reason) = &why.compensating {
        text.push_str(&format!("compensating  {reason}\n"));
    }
    if let Some(parked) = &why.parked {
        text.push_str(&format!("\nparked  {}\n", parked.reason));
        if let Some(failure) = &parked.failure {
            text.push_str(&format!("failure  {}\n", error_text(failure)));
        }
        text.push_str(&format!("resume  {}\n", parked.resume));
    }
    if let Some(ended) = &why.ended {
        text.push_str(&format!("\nended  {} at {}\n", ended.status.as_str(), output::timestamp(ended.at_ms)));
        if let Some(reason) = &ended.reason {
            text.push_str(&format!("reason  {reason}\n"));
        }
        if let Some(by) = &ended.by {
            text.push_str(&format!("by  {by}\n"));
        }
        if let Some(failure) = &ended.failure {
            text.push_str(&format!("failure  {}\n", error_text(failure)));
        }
    }
    if !why.advice.is_empty() {
        text.push('\n');
        for advice in &why.advice {
            text.push_str(&format!("-> {advice}\n"));
        }
    }
    text
}

fn step_name(step: &WhyStep) -> String {
    let name = match &step.lane {
        Some(lane) => format!("{lane}/{}", step.step),
        None => step.step.clone(),
    };
    if step.compensation {
        format!("{name} (compensation)")
    } else {
        name
    }
}

fn state(state: WhyStepState) -> &'static str {
    match state {
        WhyStepState::WaitingForWorker => "waiting for a worker",
        WhyStepState::Running => "running",
        WhyStepState::BackingOff => "backing off",
    }
}

fn attempt(step: &WhyStep) -> String {
    format!("{} of {}", step.policy_attempt, step.max_attempts)
}

fn detail(step: &WhyStep, now: u64) -> String {
    match step.state {
        WhyStepState::WaitingForWorker => {
            let pollers = match step.pollers {
                Some(0) | None => "no worker polls it".to_owned(),
                Some(1) => "1 worker polls it".to_owned(),
                Some(n) => format!("{n} workers poll it"),
            };
            format!("waited {}, {pollers}", millis(step.waited_ms.unwrap_or(0)))
        }
        WhyStepState::Running => format!("on {}", step.worker.as_deref().unwrap_or("an unknown worker")),
        WhyStepState::BackingOff => match step.retry_due_ms {
            Some(due) => format!("next retry in {} ({})", millis(due.saturating_sub(now)), output::timestamp(due)),
            None => "next retry soon".to_owned(),
        },
    }
}

fn error_text(error: &WhyError) -> String {
    format!(
        "{} at {} (attempt {}, {}): {}",
        error.code,
        error.step,
        error.attempt,
        output::timestamp(error.at_ms),
        error.message
    )
}

fn timeout_text(timeout: &WhyTimeout) -> String {
    format!("{} {} left", timeout.kind.as_str(), millis(timeout.left_ms))
}

fn wait_text(wait: &WhyWait) -> String {
    match wait {
        WhyWait::Signal { step, signals, deadline_ms, left_ms } => format!(
            "{step}: signal {} until {} ({} left)",
            signals.join(" | "),
            output::timestamp(*deadline_ms),
            millis(*left_ms)
        ),
        WhyWait::Sleep { step, until_ms, left_ms } => {
            format!("{step}: sleep until {} ({} left)", output::timestamp(*until_ms), millis(*left_ms))
        }
        WhyWait::Child { step, child, status } => {
            format!("{step}: child {child} ({})", status.map_or("status unknown", |s| s.as_str()))
        }
        WhyWait::HeldByParent { parent, parent_status } => {
            format!("its parent {parent} ({}) to end", parent_status.map_or("status unknown", |s| s.as_str()))
        }
    }
}
