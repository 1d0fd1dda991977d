//! `shopctl parked` (failed and parked runs grouped by error fingerprint) and `shopctl redrive`
//! (start a redrive job and follow it, show one, stop one), over `GET /v1/parked` and
//! `/v1/redrives`.
//!
//! Exit codes: 0 when the job completed (its skipped runs are counted, not an error), 1 on any
//! error, [`super::NOT_COMPLETED_EXIT`] when a followed job ended stopped or interrupted. It decides
//! nothing: which runs a job resumes, and what it does to each, is the engine's.

use super::Context;
use crate::output::{self, Table};
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use shop_types::redrive::{FailurePhase, ParkedGroups, RedriveJob, RedriveRequest, RedriveState, TargetOutcome};
use shop_types::WorkflowId;
use std::time::Duration;

/// How often a followed job is read again.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Random bytes of the Idempotency-Key `redrive` makes when none is given.
const KEY_BYTES: usize = 12;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RedriveArgs {
    #[command(subcommand)]
    command: Option<RedriveCommand>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, Subcommand)]
enum RedriveCommand {
    /// Show a job: its state and what it did to each run.
    Status { job: String },
    /// Stop a job: the run in flight finishes, the others stay as they are.
    Stop { job: String },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").args(["group", "workflow_type", "ids"]))]
struct StartArgs {
    /// A fingerprint from `shopctl parked`: its parked runs.
    #[arg(long)]
    group: Option<String>,
    /// The parked runs of one workflow type.
    #[arg(long = "type", value_name = "TYPE")]
    workflow_type: Option<String>,
    /// These runs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<WorkflowId>>,
    /// Why: recorded in every run the job resumes.
    #[arg(long)]
    reason: Option<String>,
    /// List what would be resumed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Runs resumed per second.
    #[arg(long)]
    rate: Option<u32>,
    /// Resume at most this many runs.
    #[arg(long)]
    max: Option<u32>,
    /// Makes a retried command start no second job (a random key when absent).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Print the job's id and return at once instead of following it to its end.
    #[arg(long)]
    detach: bool,
}

/// `shopctl parked`.
pub async fn parked(ctx: &Context) -> Result<()> {
    let reply = ctx.client.engine().parked().await?;
    ctx.show(&reply, show_groups)
}

pub async fn run(args: RedriveArgs, ctx: &Context) -> Result<()> {
    match args.command {
        Some(RedriveCommand::Status { job }) => {
            let reply = ctx.client.engine().redrive(&job).await?;
            ctx.show(&reply, show_job)
        }
        Some(RedriveCommand::Stop { job }) => {
            let reply = ctx.client.engine().stop_redrive(&job).await?;
            ctx.show(&reply, show_job)
        }
        None => start(args.start, ctx).await,
    }
}

async fn start(args: StartArgs, ctx: &Context) -> Result<()> {
    if args.group.is_none() && args.workflow_type.is_none() && args.ids.is_none() {
        return Err(anyhow!("name what to redrive: --group FP, --type TYPE or --ids A,B"));
    }
    let reason = args.reason.ok_or_else(|| anyhow!("a redrive needs --reason"))?;
    let request = RedriveRequest {
        group: args.group,
        workflow_type: args.workflow_type,
        ids: args.ids,
        reason,
        dry_run: args.dry_run,
        rate: args.rate,
        max: args.max,
    };
    let key = args.idempotency_key.unwrap_or_else(random_key);
    let reply = ctx.client.engine().start_redrive(&request, &key).await?;
    if reply.status == shop_client::StatusCode::OK {
        output::note(&format!("redrive {} was started by this key already; following it", reply.body.id));
    }
    if args.dry_run || args.detach {
        return ctx.show(&reply, show_job);
    }
    output::note(&format!("redrive {} started (idempotency key {key})", reply.body.id));
    let mut job = reply;
    while job.body.state == RedriveState::Running {
        output::note(&progress(&job.body));
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        job = ctx.client.engine().redrive(&job.body.id).await?;
    }
    ctx.show(&job, show_job)?;
    if job.body.state != RedriveState::Completed {
        return Err(super::NotCompleted(format!("redrive {} ended {}", job.body.id, job.body.state.as_str())).into());
    }
    Ok(())
}

fn random_key() -> String {
    let bytes: [u8; KEY_BYTES] = rand::random();
    format!("shopctl-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// `rd-…  running  12/200 done: 11 resumed, 1 skipped`.
fn progress(job: &RedriveJob) -> String {
    let resumed = job.count(|o| *o == TargetOutcome::Resumed);
    let skipped = job.count(|o| matches!(o, TargetOutcome::Skipped { .. }));
    let would = job.count(|o| *o == TargetOutcome::WouldResume);
    let mut text = format!(
        "{}  {}  {}/{} done: {resumed} resumed, {skipped} skipped",
        job.id,
        job.state.as_str(),
        resumed + skipped + would,
        job.targets.len()
    );
    if would > 0 {
        text.push_str(&format!(", {would} would be resumed"));
    }
    text
}

fn show_job(job: &RedriveJob) -> Result<()> {
    output::line(&progress(job))?;
    output::line(&format!("reason: {}  by: {}  rate: {}/s", job.reason, job.by, job.rate))?;
    let mut table = Table::with_header(&["RUN", "OUTCOME"]);
    for target in &job.targets {
        table.row(vec![target.id.to_string(), target.outcome.describe()]);
    }
    table.print()
}

fn show_groups(groups: &ParkedGroups) -> Result<()> {
    let mut table =
        Table::with_header(&["FINGERPRINT", "TYPE", "PHASE", "COUNT", "FIRST SEEN", "LAST SEEN", "SAMPLE", "REASON"]);
    for group in &groups.groups {
        table.row(vec![
            group.fingerprint.clone(),
            group.workflow_type.clone(),
            match group.phase {
                FailurePhase::Parked => "parked",
                FailurePhase::Failed => "failed",
            }
            .to_owned(),
            group.count.to_string(),
            output::timestamp(group.first_seen_ms),
            output::timestamp(group.last_seen_ms),
            group.sample.to_string(),
            output::truncate(&group.sample_reason, 80),
        ]);
    }
    table.print()?;
    if groups.truncated {
        output::note(&format!("only part of the failed runs are grouped here ({} read)", groups.scanned));
    }
    Ok(())
}
