//! The failures page: failed and parked runs grouped by what failed them (workflow type, the
//! step whose last attempt failed for good, its error code), each group with its count, how
//! many are parked, when it was first and last seen and a sample run; and the bulk retry of a
//! group's parked runs, behind a confirm step.
//!
//! It must never retry a run the API would not (each retry is `api::workflows::act` with the
//! session's principal, so every run's history records who retried it, and the API's role
//! check applies), never retry more than [`MAX_BULK_RETRY`] runs per request and never read
//! more than [`MAX_FAILED_SCANNED`] failed runs per page.

use super::page::{csrf_field, error_page, html_response, layout, may_act, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::workflows::{act, history_views, list_views, Action};
use crate::api::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use shop_types::api::{HistoryEventView, WorkflowStatus, WorkflowView};
use shop_types::history::EventKind;
use shop_types::WorkflowId;
use std::collections::BTreeMap;

/// Failed runs read to build the groups; past it the page says the groups are partial.
pub const MAX_FAILED_SCANNED: usize = 1_000;
/// Parked runs one bulk retry resumes; a bigger group is retried in several rounds.
pub const MAX_BULK_RETRY: usize = 200;

/// What failed a run: the key its group is known by (the query string of the retry pages).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupKey {
    #[serde(rename = "type")]
    workflow_type: String,
    step: String,
    code: String,
}

/// One group of failed runs.
#[derive(Debug, Default)]
struct Group {
    count: usize,
    first_seen_ms: u64,
    last_seen_ms: u64,
    sample: Option<WorkflowId>,
    /// The group's parked runs (the ones a retry resumes), oldest failure first.
    parked: Vec<WorkflowId>,
}

/// Where the last attempt that failed for good is, and its code; `None` when no step failed
/// for good (the run failed otherwise, e.g. its execution timeout): then the reason stands in.
fn cause(view: &WorkflowView, history: &[HistoryEventView]) -> (String, String, u64) {
    let last = history.iter().rev().find_map(|event| match &event.event {
        EventKind::StepFailed { error, will_retry: false, .. } => Some((event, error.error_type.clone())),
        EventKind::StepTimedOut { timeout, will_retry: false, .. } => {
            Some((event, format!("TIMEOUT_{}", timeout.as_str().to_ascii_uppercase())))
        }
        _ => None,
    });
    match last {
        Some((event, code)) => (event.step_name.clone().unwrap_or_else(|| "-".into()), code, event.at_ms),
        None => {
            let reason = view.reason.as_deref().unwrap_or("no reason recorded");
            let code: String = reason.chars().take_while(|c| !c.is_whitespace() && *c != ':').collect();
            ("-".into(), code, view.closed_at_ms.or(history.last().map(|e| e.at_ms)).unwrap_or(0))
        }
    }
}

fn parked(view: &WorkflowView) -> bool {
    view.status == WorkflowStatus::Failed && view.closed_at_ms.is_none()
}

/// The failed runs (at most [`MAX_FAILED_SCANNED`]) by group, and whether there were more.
fn groups(state: &AppState) -> Result<(BTreeMap<GroupKey, Group>, bool), ApiError> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let (mut cursor, mut scanned) = (None, 0);
    loop {
        let limit = (MAX_FAILED_SCANNED - scanned).min(shop_types::limits::MAX_LIST_LIMIT);
        let (views, next) = list_views(state, Some(WorkflowStatus::Failed), cursor, limit, |_| true)?;
        scanned += views.len();
        for view in views {
            let history = history_views(state, &view.id)?;
            let (step, code, at_ms) = cause(&view, &history);
            let key = GroupKey { workflow_type: view.workflow_type.to_string(), step, code };
            let group = groups.entry(key).or_default();
            group.first_seen_ms = if group.count == 0 { at_ms } else { group.first_seen_ms.min(at_ms) };
            group.last_seen_ms = group.last_seen_ms.max(at_ms);
            group.count += 1;
            if parked(&view) {
                group.parked.push(view.id.clone());
            }
            group.sample.get_or_insert(view.id);
        }
        let Some(next) = next else {
            return Ok((groups, false));
        };
        if scanned >= MAX_FAILED_SCANNED {
            return Ok((groups, true));
        }
        cursor = Some(WorkflowId::parse(next)?);
    }
}

fn group_query(key: &GroupKey) -> String {
    serde_urlencoded::to_string([
        ("type", key.workflow_type.as_str()),
        ("step", key.step.as_str()),
        ("code", key.code.as_str()),
    ])
    .unwrap_or_default()
}

/// `GET /console/failures`.
pub(crate) async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let render = || -> Result<Markup, ApiError> {
        check_access(&session.principal, Access::Client)?;
        let (groups, partial) = groups(&state)?;
        let act = may_act(&session);
        Ok(html! {
            h1 { "Failures" }
            p.hint { "Failed and parked runs, grouped by the step that failed them for good and its error code. "
                "A parked run waits for an operator: fix the cause, then retry its group." }
            @if partial { p.problem { "Only the first " (MAX_FAILED_SCANNED) " failed runs are grouped here." } }
            @if groups.is_empty() { p.empty #no-failures { "No failed runs." } }
            @else {
                table.failures #failures {
                    thead { tr { th { "Workflow" } th { "Step" } th { "Error" } th { "Runs" } th { "Parked" }
                        th { "First seen" } th { "Last seen" } th { "Sample" } th {} } }
                    tbody {
                        @for (key, group) in &groups {
                            tr data-testid="failure-group" data-type=(key.workflow_type) data-step=(key.step) data-code=(key.code) {
                                td { (key.workflow_type) } td { (key.step) } td.reason { (key.code) }
                                td.count { (group.count) } td.parked { (group.parked.len()) }
                                td { (timestamp(group.first_seen_ms)) } td { (timestamp(group.last_seen_ms)) }
                                td { @if let Some(id) = &group.sample { a href={"/console/runs/" (id.as_str())} { (id.as_str()) } } }
                                td { @if act && !group.parked.is_empty() {
                                    a.button href={"/console/failures/retry?" (group_query(key))} data-testid="retry-group" { "Retry the parked runs" }
                                } }
                            }
                        }
                    }
                }
            }
        })
    };
    match render() {
        Ok(body) => html_response(StatusCode::OK, layout("Failures", Some(&session), "/console/failures", body)),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

/// `GET /console/failures/retry?type=&step=&code=`: what the bulk retry will do, and its button.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    key: Result<Query<GroupKey>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let render = || -> Result<Markup, ApiError> {
        check_access(&session.principal, Access::Admin)?;
        let key = crate::api::query(key)?;
        let (mut groups, _) = groups(&state)?;
        let parked = groups.remove(&key).map(|g| g.parked).unwrap_or_default();
        let now = parked.len().min(MAX_BULK_RETRY);
        Ok(html! {
            section.confirm data-testid="confirm" {
                h1 { "Retry a group of parked runs" }
                p { (parked.len()) " parked " (key.workflow_type) " runs failed at " code { (key.step) } " with " code { (key.code) } "." }
                @if parked.len() > MAX_BULK_RETRY { p.problem { "This retries the first " (MAX_BULK_RETRY) "; retry again for the rest." } }
                p { "Each run's failed compensation is retried with a fresh attempt budget; each run's history records that you ("
                    (session.principal.subject.to_string()) ") asked. Fix the cause first." }
                form method="post" action="/console/failures/retry" {
                    (csrf_field(&session))
                    input type="hidden" name="type" value=(key.workflow_type);
                    input type="hidden" name="step" value=(key.step);
                    input type="hidden" name="code" value=(key.code);
                    button.danger type="submit" data-testid="confirm-action" disabled[now == 0] { "Yes, retry " (now) " runs" }
                    " " a href="/console/failures" { "No, go back" }
                }
            }
        })
    };
    match render() {
        Ok(body) => html_response(StatusCode::OK, layout("Confirm", Some(&session), "/console/failures", body)),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

/// The bulk retry's form: the group's key and the CSRF token (checked by `require_session`).
#[derive(Deserialize)]
pub(crate) struct RetryForm {
    #[serde(rename = "type")]
    workflow_type: String,
    step: String,
    code: String,
}

/// `POST /console/failures/retry`: resumes the group's parked runs (at most
/// [`MAX_BULK_RETRY`]) one by one as this session's principal, then lists what happened.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RetryForm>,
) -> Response {
    let run = async {
        check_access(&session.principal, Access::Admin)?;
        let key = GroupKey { workflow_type: form.workflow_type, step: form.step, code: form.code };
        let (mut groups, _) = groups(&state)?;
        let parked = groups.remove(&key).map(|g| g.parked).unwrap_or_default();
        let mut outcomes = Vec::new();
        for id in parked.into_iter().take(MAX_BULK_RETRY) {
            let reason = format!("bulk retry of {} / {} / {}", key.workflow_type, key.step, key.code);
            let outcome = act(&state, &session.principal, id.clone(), Action::Resume, reason).await;
            outcomes.push((id, outcome.map(|_| ()).map_err(|e| e.message)));
        }
        Ok::<_, ApiError>(outcomes)
    };
    match run.await {
        Ok(outcomes) => {
            let body = html! {
                h1 { "Retried " (outcomes.iter().filter(|(_, o)| o.is_ok()).count()) " of " (outcomes.len()) " runs" }
                table #retried data-testid="retried" {
                    thead { tr { th { "Run" } th { "Outcome" } } }
                    tbody { @for (id, outcome) in &outcomes {
                        tr data-id=(id.as_str()) {
                            td { a href={"/console/runs/" (id.as_str())} { (id.as_str()) } }
                            @match outcome { Ok(()) => td.ok { "retried" }, Err(why) => td.failed { (why) } }
                        }
                    } }
                }
                p { a href="/console/failures" { "Back to the failures" } }
            };
            html_response(StatusCode::OK, layout("Retried", Some(&session), "/console/failures", body))
        }
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::history::ActivityError;
    use shop_types::StepRef;

    fn view(reason: Option<&str>) -> WorkflowView {
        serde_json::from_value(serde_json::json!({
            "id": "r1", "type": "order", "definition_version": 1, "status": "FAILED",
            "input": {}, "created_at_ms": 1, "reason": reason
        }))
        .expect("a view")
    }

    #[test]
    fn the_last_final_failure_names_the_group() {
        let charge = StepRef::forward(1);
        let failed = |seq, code: &str, will_retry| HistoryEventView {
            seq,
            at_ms: seq * 10,
            step_name: Some(format!("step{seq}")),
            lane: None,
            event: EventKind::StepFailed {
                step: charge,
                attempt: 1,
                error: ActivityError { error_type: code.into(), message: "m".into(), retryable: will_retry },
                will_retry,
            },
        };
        let history = vec![failed(1, "DECLINED", false), failed(2, "REFUND_DOWN", false), failed(3, "FLAKY", true)];
        assert_eq!(cause(&view(None), &history), ("step2".into(), "REFUND_DOWN".into(), 20));
        assert_eq!(cause(&view(Some("EXECUTION_TIMEOUT: too long")), &[]).1, "EXECUTION_TIMEOUT");
    }
}
