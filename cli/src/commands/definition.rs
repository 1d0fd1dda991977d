//! `shopctl definition list|register|check`: the workflow definitions the engine knows.
//!
//! Registering sends the TOML text as is; the engine validates it and pins new runs to the
//! new version, and says which runs of older versions stay on theirs. Checking sends it to
//! the engine's check endpoint, which registers nothing, and renders the resolved plan. This
//! module never parses or checks a definition itself, so the engine's error (line, reason)
//! is the one the user sees.

use super::Context;
use crate::output::{self, Table};
use anyhow::{anyhow, Context as _, Result};
use clap::Subcommand;
use shop_types::api::{DefinitionPlan, OpenRuns, PlannedStep};
use shop_types::limits::MAX_BODY_BYTES;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DefinitionCommand {
    /// List registered definitions and their versions.
    List,
    /// Register a new definition (or a new version of one) from a TOML file.
    Register { file: PathBuf },
    /// Validate a TOML file without registering it and show its resolved steps and
    /// compensation plan.
    Check { file: PathBuf },
}

pub async fn run(command: DefinitionCommand, ctx: &Context) -> Result<()> {
    match command {
        DefinitionCommand::List => {
            let reply = ctx.client.engine().definitions().await?;
            ctx.show(&reply, |list| {
                let mut table = Table::with_header(&["NAME", "VERSION", "HASH", "STEPS"]);
                for definition in &list.definitions {
                    table.row(vec![
                        definition.name.clone(),
                        definition.version.to_string(),
                        short_hash(&definition.content_hash),
                        definition.steps.join(" -> "),
                    ]);
                }
                table.print()
            })
        }
        DefinitionCommand::Register { file } => {
            let text = read_bounded(&file)?;
            let reply = ctx
                .client
                .engine()
                .register_definition(&text)
                .await
                .with_context(|| format!("cannot register {}", file.display()))?;
            ctx.show(&reply, |registered| {
                let summary = &registered.definition;
                output::line(&format!(
                    "registered {} v{} ({}): {}",
                    summary.name,
                    summary.version,
                    short_hash(&summary.content_hash),
                    summary.steps.join(" -> ")
                ))?;
                for runs in &registered.open_runs_of_older_versions {
                    output::line(&open_runs_line(&summary.name, runs))?;
                }
                Ok(())
            })
        }
        DefinitionCommand::Check { file } => {
            let text = read_bounded(&file)?;
            let reply = ctx
                .client
                .engine()
                .check_definition(&text)
                .await
                .with_context(|| format!("{} is not a valid definition", file.display()))?;
            ctx.show(&reply, print_plan)
        }
    }
}

/// The first 12 hex digits of a `sha256:` hash: enough to tell versions apart at a glance.
fn short_hash(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    if hex.is_empty() {
        return "-".to_owned();
    }
    hex.chars().take(12).collect()
}

fn open_runs_line(name: &str, runs: &OpenRuns) -> String {
    let ids: Vec<String> = runs.sample.iter().map(ToString::to_string).collect();
    let more = runs.count.saturating_sub(ids.len() as u64);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!(
        "{} open run(s) of {name} v{} stay on v{}: {}{more}",
        runs.count,
        runs.version,
        runs.version,
        ids.join(", ")
    )
}

fn print_plan(plan: &DefinitionPlan) -> Result<()> {
    output::line(&format!("{} v{} is valid ({})", plan.name, plan.version, plan.content_hash))?;
    if let Some(timeout) = plan.execution_timeout_ms {
        output::line(&format!("execution timeout: {}", ms(timeout)))?;
    }
    output::line("")?;
    output::line("steps:")?;
    steps_table(&plan.steps, true).print()?;
    output::line("")?;
    if plan.compensation.is_empty() {
        output::line("compensation: none")?;
    } else {
        output::line("compensation (in this order, only for the steps that completed):")?;
        let mut table = Table::with_header(&["#", "UNDOES", "STEP", "ACTIVITY", "QUEUE", "RETRY", "TIMEOUTS"]);
        for compensation in &plan.compensation {
            let step = &compensation.step;
            table.row(vec![
                compensation.order.to_string(),
                compensation.undoes.clone(),
                step.name.clone(),
                step.activity.clone(),
                step.queue.clone(),
                step.retry_text(ms),
                step.timeouts_text(ms),
            ]);
        }
        table.print()?;
    }
    if !plan.after_compensation.is_empty() {
        output::line("")?;
        output::line("after compensation:")?;
        steps_table(&plan.after_compensation, false).print()?;
    }
    if !plan.circuits.is_empty() {
        output::line("")?;
        output::line("circuit breakers:")?;
        let mut table = Table::with_header(&["ACTIVITY", "BREAKER"]);
        for (activity, circuit) in &plan.circuits {
            table.row(vec![activity.clone(), circuit.clone()]);
        }
        table.print()?;
    }
    Ok(())
}

fn steps_table(steps: &[PlannedStep], forward: bool) -> Table {
    let header: &[&str] = if forward {
        &["STEP", "ACTIVITY", "QUEUE", "RETRY", "TIMEOUTS", "ON_FAILURE", "PIVOT", "COMPENSATED_BY"]
    } else {
        &["STEP", "ACTIVITY", "QUEUE", "RETRY", "TIMEOUTS", "ON_FAILURE"]
    };
    let mut table = Table::with_header(header);
    for step in steps {
        // A sleep, wait or choice has no activity: what it does stands in that column.
        let (activity, queue) = match &step.construct {
            Some(construct) => (construct.clone(), "-".to_owned()),
            None => (step.activity.clone(), step.queue.clone()),
        };
        let mut row = vec![
            step.name.clone(),
            activity,
            queue,
            step.retry_text(ms),
            step.timeouts_text(ms),
            step.on_failure.clone(),
        ];
        if forward {
            row.push(if step.pivot { "yes" } else { "-" }.to_owned());
            row.push(output::or_dash(step.compensated_by.as_deref()));
        }
        table.row(row);
    }
    table
}

/// As a definition writes durations (`200ms`, `1m 30s`), not as a measured time.
fn ms(millis: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(millis)).to_string()
}

/// Reads the file, refusing one larger than the engine accepts before reading it whole.
fn read_bounded(file: &PathBuf) -> Result<String> {
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    if size > MAX_BODY_BYTES as u64 {
        return Err(anyhow!("{} is {size} bytes; the engine accepts at most {MAX_BODY_BYTES}", file.display()));
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}
