//! The run page: a run's state, what it waits for now, its forward and compensation paths
//! (each step's attempts: the worker that took each, its error or timeout, the backoff
//! before the next), the full timeline, and the operator's actions (cancel, terminate,
//! retry a parked run), each behind a confirm step. Live: the page's script follows
//! `GET /v1/workflows/{id}/events` and, for each change, fetches `/console/runs/{id}/live`
//! (everything below the title) once. Below it, the shop beside the run (`shop.rs`), fetched
//! once the page shows and again when the run ends.
//!
//! It must never offer an action its reader's role may not take, and never take one without
//! the API's own role check and the session's CSRF token (checked by `require_session`);
//! every action is recorded in the run's history with who asked.

use super::page::{csrf_field, error_page, html_response, layout, may_act, status_badge, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::workflows::{act as act_on_run, history_views, Action};
use crate::api::{with_waiting_for, workflow_view, ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use shop_types::api::{HistoryEventView, InFlightView, WorkflowStatus, WorkflowView};
use shop_types::describe::millis;
use shop_types::history::EventKind;
use shop_types::{StepPhase, WorkflowId};

/// Longest reason an operator may give for an action, in bytes.
pub const MAX_ACTION_REASON_BYTES: usize = 500;

/// `GET /console/runs/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let read = || -> Result<Markup, ApiError> {
        let (view, history) = read_run(&state, &session, id)?;
        let body = html! {
            h1 { "Run " code data-testid="run-id" { (view.id.as_str()) } }
            span.live #live-state data-testid="live-state" {}
            div.run-grid {
                div #run-live data-id=(view.id.as_str()) data-kinds=(EventKind::NAMES.join(",")) { (live_markup(&session, &view, &history)) }
                section.shop #shop data-id=(view.id.as_str()) data-testid="shop" {
                    h2 { "The shop beside this run" }
                    div #shop-panel { p.hint { "Reading the workers' admin APIs…" } }
                }
            }
        };
        Ok(layout(&format!("Run {}", view.id.as_str()), Some(&session), "/console/runs", body))
    };
    match read() {
        Ok(markup) => html_response(StatusCode::OK, markup),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

/// `GET /console/runs/{id}/live`: the part of the run page that changes.
pub(crate) async fn live(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match read_run(&state, &session, id) {
        Ok((view, history)) => html_response(StatusCode::OK, live_markup(&session, &view, &history)),
        Err(error) => error.into_response(),
    }
}

fn read_run(
    state: &AppState,
    session: &Session,
    id: String,
) -> Result<(WorkflowView, Vec<HistoryEventView>), ApiError> {
    check_access(&session.principal, Access::Client)?;
    let id = WorkflowId::parse(id)?;
    let view = workflow_view(state, &id)?.ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))?;
    let view = with_waiting_for(state, view);
    let history = history_views(state, &id)?;
    Ok((view, history))
}

/// Whether the run is parked: FAILED, waiting for an operator, not closed.
fn parked(view: &WorkflowView) -> bool {
    view.status == WorkflowStatus::Failed && view.closed_at_ms.is_none()
}

/// The actions the run's state allows (whether the reader may take them is separate).
fn actions(view: &WorkflowView) -> Vec<Action> {
    let mut actions = Vec::new();
    if view.status == WorkflowStatus::Running {
        actions.push(Action::Cancel);
    }
    if parked(view) {
        actions.push(Action::Resume);
    }
    if view.closed_at_ms.is_none() {
        actions.push(Action::Terminate);
    }
    actions
}

fn action_slug(action: Action) -> &'static str {
    match action {
        Action::Cancel => "cancel",
        Action::Terminate => "terminate",
        Action::Resume => "retry",
    }
}

fn action_label(action: Action) -> &'static str {
    match action {
        Action::Cancel => "Cancel (compensate)",
        Action::Terminate => "Terminate (undo nothing)",
        Action::Resume => "Retry the failed compensation",
    }
}

fn parse_action(slug: &str) -> Result<Action, ApiError> {
    [Action::Cancel, Action::Terminate, Action::Resume]
        .into_iter()
        .find(|a| action_slug(*a) == slug)
        .ok_or_else(|| ApiError::not_found(format!("no action {slug:?}: cancel, terminate or retry")))
}

fn live_markup(session: &Session, view: &WorkflowView, history: &[HistoryEventView]) -> Markup {
    let start = history.first().map_or(0, |e| e.at_ms);
    let steps = steps(history);
    let (forward, undo): (Vec<&StepRow>, Vec<&StepRow>) = steps.iter().partition(|s| s.phase == StepPhase::Forward);
    html! {
        section.summary {
            dl {
                dt { "Status" } dd data-testid="run-status" {
                    (status_badge(view.status, parked(view)))
                    @if let Some(label) = &view.domain_status { " " span.domain data-testid="domain-status" { (label) } }
                }
                dt { "Type" } dd { (view.workflow_type.as_str()) " v" (view.definition_version) }
                dt { "Started" } dd { (timestamp(view.created_at_ms)) }
                @if let Some(closed) = view.closed_at_ms { dt { "Ended" } dd { (timestamp(closed)) } }
                @if let Some(reason) = &view.reason { dt { "Reason" } dd.reason data-testid="run-reason" { (reason) } }
                @if let Some(hash) = &view.definition_hash { dt { "Definition" } dd { code { (hash) } } }
            }
            details { summary { "Input" } pre { (view.input.as_str()) } }
            @if let Some(output) = &view.output { details { summary { "Output" } pre { (output.as_str()) } } }
        }
        @if !view.waiting_for.is_empty() {
            section.waiting data-testid="waiting-for" {
                h2 { "Waiting for" }
                ul { @for item in &view.waiting_for { li { (waiting_text(item)) } } }
            }
        }
        @let possible = actions(view);
        @if !possible.is_empty() && may_act(session) {
            section.actions data-testid="actions" {
                @for action in &possible {
                    a.button href={"/console/runs/" (view.id.as_str()) "/confirm/" (action_slug(*action))}
                        data-testid={"action-" (action_slug(*action))} { (action_label(*action)) }
                }
            }
        }
        section.path.forward data-testid="forward-path" {
            h2 { "Forward path" }
            (steps_table(&forward))
        }
        @if !undo.is_empty() {
            section.path.compensation data-testid="compensation-path" {
                h2 { "Compensation path" }
                (steps_table(&undo))
            }
        }
        section.timeline {
            h2 { "Timeline" }
            table data-testid="timeline" {
                thead { tr { th { "#" } th { "At" } th { "Event" } th { "Step" } th { "Attempt" } th { "Details" } } }
                tbody {
                    @for event in history {
                        tr class={"ev-" (event.event.name())} {
                            td { (event.seq) }
                            td { "+" (millis(event.at_ms.saturating_sub(start))) }
                            td { (event.event.name()) }
                            td { @if let Some(name) = &event.step_name { (name) } }
                            td { @if let Some((_, attempt)) = event.event.step_attempt() { (attempt) } }
                            td.details { (event.event.details()) }
                        }
                    }
                }
            }
        }
    }
}

fn waiting_text(item: &InFlightView) -> String {
    match item {
        InFlightView::Activity { step, attempt } => format!("{step}, attempt {attempt}"),
        InFlightView::Sleep { step, until_ms } => format!("{step}: sleeping until {}", timestamp(*until_ms)),
        InFlightView::Wait { step, signals, deadline_ms, .. } => {
            format!("{step}: a signal ({}) until {}", signals.join(", "), timestamp(*deadline_ms))
        }
        InFlightView::Child { step, child } => format!("{step}: child run {child}"),
        InFlightView::HeldByParent { parent } => {
            format!("its parent {parent} to end (done, held to be undone with it)")
        }
    }
}

/// One step of a path and its attempts, in the order the history first names them.
struct StepRow {
    name: String,
    phase: StepPhase,
    attempts: Vec<AttemptRow>,
}

#[derive(Default)]
struct AttemptRow {
    attempt: u32,
    worker: Option<String>,
    outcome: Option<String>,
    backoff_ms: Option<u64>,
}

/// The steps of a history with their attempts: who took each, how it ended, the backoff after.
fn steps(history: &[HistoryEventView]) -> Vec<StepRow> {
    let mut rows: Vec<StepRow> = Vec::new();
    for event in history {
        let Some((step, attempt)) = event.event.step_attempt() else {
            continue;
        };
        let name = event.step_name.clone().unwrap_or_else(|| format!("step {}", step.index));
        let index = match rows.iter().position(|r| r.name == name && r.phase == step.phase) {
            Some(index) => index,
            None => {
                rows.push(StepRow { name, phase: step.phase, attempts: Vec::new() });
                rows.len() - 1
            }
        };
        let attempts = &mut rows[index].attempts;
        if attempts.last().is_none_or(|a| a.attempt != attempt) {
            attempts.push(AttemptRow { attempt, ..AttemptRow::default() });
        }
        let Some(row) = attempts.last_mut() else {
            continue;
        };
        match &event.event {
            EventKind::StepStarted { worker, .. } => row.worker = Some(worker.to_string()),
            EventKind::StepCompleted { .. } => row.outcome = Some("completed".into()),
            EventKind::StepFailed { error, will_retry, .. } => {
                let then = if *will_retry { "will retry" } else { "final" };
                row.outcome = Some(format!("{}: {} ({then})", error.error_type, error.message));
            }
            EventKind::StepTimedOut { timeout, will_retry, .. } => {
                let then = if *will_retry { "will retry" } else { "final" };
                row.outcome = Some(format!("{} timeout ({then})", timeout.as_str()));
            }
            // The retry names the attempt that runs after the backoff: the backoff follows
            // the attempt before it.
            EventKind::StepRetryScheduled { delay_ms, .. } => {
                attempts.pop();
                if let Some(previous) = attempts.last_mut() {
                    previous.backoff_ms = Some(*delay_ms);
                }
            }
            _ => {}
        }
    }
    rows
}

fn steps_table(rows: &[&StepRow]) -> Markup {
    html! {
        table.steps {
            thead { tr { th { "Step" } th { "Attempt" } th { "Worker" } th { "Outcome" } th { "Backoff" } } }
            tbody {
                @for row in rows {
                    @for (i, attempt) in row.attempts.iter().enumerate() {
                        tr data-step=(row.name) {
                            td { @if i == 0 { (row.name) } }
                            td { (attempt.attempt) }
                            td { @if let Some(worker) = &attempt.worker { (worker) } }
                            td class=[attempt.outcome.as_deref().map(outcome_class)] {
                                (attempt.outcome.as_deref().unwrap_or("in flight"))
                            }
                            td { @if let Some(ms) = attempt.backoff_ms { (millis(ms)) } }
                        }
                    }
                }
            }
        }
    }
}

fn outcome_class(outcome: &str) -> &'static str {
    if outcome == "completed" {
        "ok"
    } else {
        "failed"
    }
}

/// `GET /console/runs/{id}/confirm/{action}`: what the action will do, a reason field, and
/// the button that does it. A reader whose role may not act gets 403 with the API's reason.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((id, slug)): Path<(String, String)>,
) -> Response {
    let render = || -> Result<Markup, ApiError> {
        let action = parse_action(&slug)?;
        check_access(&session.principal, Access::Admin)?;
        let id = WorkflowId::parse(id)?;
        let view =
            workflow_view(&state, &id)?.ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))?;
        let what = match action {
            Action::Cancel => "Cancel this run: the steps it did are compensated (undone), newest first.",
            Action::Terminate => "Terminate this run now: nothing is compensated, whatever it did stays done.",
            Action::Resume => "Retry the compensation that failed for good, with a fresh attempt budget.",
        };
        let body = html! {
            section.confirm data-testid="confirm" {
                h1 { (action_label(action)) }
                p { "Run " code { (view.id.as_str()) } " is " (status_badge(view.status, parked(&view))) "." }
                p { (what) " The run's history records that you (" (session.principal.subject.to_string()) ") asked." }
                form method="post" action={"/console/runs/" (view.id.as_str()) "/actions/" (slug)} {
                    (csrf_field(&session))
                    label for="reason" { "Reason (optional)" }
                    input #reason name="reason" maxlength=(MAX_ACTION_REASON_BYTES) placeholder=(action.default_reason());
                    button.danger type="submit" data-testid="confirm-action" { "Yes, " (action_label(action).to_lowercase()) }
                    " "
                    a href={"/console/runs/" (view.id.as_str())} { "No, go back" }
                }
            }
        };
        Ok(layout("Confirm", Some(&session), "/console/runs", body))
    };
    match render() {
        Ok(markup) => html_response(StatusCode::OK, markup),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    reason: String,
}

/// `POST /console/runs/{id}/actions/{action}` (CSRF-checked by `require_session`): takes the
/// action as the API would for this session's principal, then shows the run.
pub(crate) async fn act(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((id, slug)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let run = async {
        let action = parse_action(&slug)?;
        check_access(&session.principal, Access::Admin)?;
        let id = WorkflowId::parse(id)?;
        let reason = form.reason.trim();
        if reason.len() > MAX_ACTION_REASON_BYTES {
            return Err(ApiError::invalid(format!("a reason may have at most {MAX_ACTION_REASON_BYTES} bytes")));
        }
        let reason = if reason.is_empty() { action.default_reason().to_owned() } else { reason.to_owned() };
        act_on_run(&state, &session.principal, id.clone(), action, reason).await?;
        Ok(id)
    };
    match run.await {
        Ok(id) => Redirect::to(&format!("/console/runs/{}", id.as_str())).into_response(),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::ActivityError;
    use shop_types::StepRef;

    fn event(seq: u64, name: &str, kind: EventKind) -> HistoryEventView {
        HistoryEventView { seq, at_ms: seq, step_name: Some(name.into()), lane: None, event: kind }
    }

    #[test]
    fn attempts_carry_their_worker_outcome_and_backoff() {
        let charge = StepRef::forward(1);
        let refund = StepRef { phase: StepPhase::Compensation, index: 1 };
        let error = ActivityError { error_type: "PAYMENT_UNAVAILABLE".into(), message: "down".into(), retryable: true };
        let worker = || "w-1".parse().expect("valid");
        let history = vec![
            event(1, "charge", EventKind::StepScheduled { step: charge, attempt: 1 }),
            event(2, "charge", EventKind::StepStarted { step: charge, attempt: 1, worker: worker() }),
            event(3, "charge", EventKind::StepFailed { step: charge, attempt: 1, error, will_retry: true }),
            event(4, "charge", EventKind::StepRetryScheduled { step: charge, attempt: 2, delay_ms: 1_500 }),
            event(5, "charge", EventKind::StepScheduled { step: charge, attempt: 2 }),
            event(6, "charge", EventKind::StepStarted { step: charge, attempt: 2, worker: worker() }),
            event(7, "refund", EventKind::StepScheduled { step: refund, attempt: 1 }),
        ];
        let rows = steps(&history);
        assert_eq!(rows.len(), 2);
        let charge = &rows[0].attempts;
        assert_eq!(charge.len(), 2);
        assert_eq!(charge[0].worker.as_deref(), Some("w-1"));
        assert_eq!(charge[0].backoff_ms, Some(1_500));
        assert!(charge[0].outcome.as_deref().is_some_and(|o| o.starts_with("PAYMENT_UNAVAILABLE")));
        assert_eq!(charge[1].outcome, None, "in flight");
        assert_eq!(rows[1].phase, StepPhase::Compensation);
    }
}
