//! A redrive job's page, `/console/redrives/{id}`: its state, who started it and why, how far
//! it got, and what it did to each run (each linked to the run's page). While the job runs
//! the page asks the browser to reload it every [`RELOAD_SECONDS`]; it reads the job from the
//! engine's redrive jobs in memory, never the store.
//!
//! It must never start, stop or change a job (the failures page starts one; stopping is the
//! API's `DELETE /v1/redrives/{id}`).

use super::page::{error_page, html_response, layout, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use shop_types::redrive::{RedriveJob, RedriveState, TargetOutcome};

/// Seconds between reloads of a running job's page.
pub const RELOAD_SECONDS: u32 = 1;

/// The CSS class of an outcome's cell.
fn outcome_class(outcome: &TargetOutcome) -> &'static str {
    match outcome {
        TargetOutcome::Pending | TargetOutcome::WouldResume => "pending",
        TargetOutcome::Resumed => "ok",
        TargetOutcome::Skipped { .. } => "failed",
    }
}

fn render(job: &RedriveJob) -> Markup {
    let resumed = job.count(|o| *o == TargetOutcome::Resumed);
    let skipped = job.count(|o| matches!(o, TargetOutcome::Skipped { .. }));
    html! {
        @if job.state == RedriveState::Running { meta http-equiv="refresh" content=(RELOAD_SECONDS); }
        section.redrive data-testid="redrive-job" data-id=(job.id) data-state=(job.state.as_str()) {
            h1 { "Redrive " (job.id) ": " (job.state.as_str()) }
            p.progress data-testid="redrive-progress" {
                (resumed) " resumed, " (skipped) " skipped, of " (job.targets.len()) " runs"
            }
            p { "Started by " span data-testid="redrive-by" { (job.by) } " at " (timestamp(job.created_at_ms))
                @if let Some(ended) = job.ended_at_ms { ", ended at " (timestamp(ended)) }
                " · " (job.rate) " runs a second" }
            p { "Reason: " (job.reason) }
            @if job.state == RedriveState::Interrupted {
                p.problem { "The engine stopped while this job ran. Retry the group again: a new job finds what is still parked." }
            }
            table #redrive-targets data-testid="redrive-targets" {
                thead { tr { th { "Run" } th { "Outcome" } } }
                tbody { @for target in &job.targets {
                    tr data-id=(target.id.as_str()) {
                        td { a href={"/console/runs/" (target.id.as_str())} { (target.id.as_str()) } }
                        td class=(outcome_class(&target.outcome)) { (target.outcome.describe()) }
                    }
                } }
            }
            p { a href="/console/failures" { "Back to the failures" } }
        }
    }
}

/// `GET /console/redrives/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let found = check_access(&session.principal, Access::Client)
        .and_then(|()| state.redrives.get(&id).ok_or_else(|| ApiError::not_found(format!("no redrive job {id}"))));
    match found {
        Ok(job) => html_response(StatusCode::OK, layout("Redrive", Some(&session), "/console/failures", render(&job))),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}
