//! The failures page: failed and parked runs grouped by their error fingerprint (the one
//! grouping of the product, `redrive::scan::groups`, which `GET /v1/parked` answers too), each
//! group with its count, when it was first and last seen and a sample run; and the bulk retry
//! of a parked group, behind a confirm step, which starts a redrive job for the group and
//! leads to its page (`/console/redrives/{id}`).
//!
//! It must never resume a run itself (the redrive job does, through the core, and each run's
//! history names the job, whose record names who started it), never start a job the API would
//! refuse (the API's role check, limits and Idempotency-Key apply) and never read more than
//! [`MAX_PARKED_SCANNED`] failed runs per page.

use super::page::{csrf_field, error_page, html_response, layout, may_act, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use shop_types::redrive::{FailurePhase, ParkedGroup, RedriveRequest, MAX_PARKED_SCANNED, MAX_REDRIVE_TARGETS};

/// Random bytes of the Idempotency-Key a confirm page puts in its form, so a form sent twice
/// (a double click, a reload) starts one job.
const FORM_KEY_BYTES: usize = 16;

/// A group's key in the query string of the retry pages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupQuery {
    group: String,
}

fn read_groups(state: &AppState) -> Result<shop_types::redrive::ParkedGroups, ApiError> {
    Ok(crate::redrive::scan::groups(state.store.as_ref())?)
}

/// The runs of a group the bulk retry resumes: all of a parked group, none of a failed one.
fn parked_count(group: &ParkedGroup) -> u64 {
    if group.phase == FailurePhase::Parked {
        group.count
    } else {
        0
    }
}

/// `GET /console/failures`.
pub(crate) async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let render = || -> Result<Markup, ApiError> {
        check_access(&session.principal, Access::Client)?;
        let groups = read_groups(&state)?;
        let act = may_act(&session);
        Ok(html! {
            h1 { "Failures" }
            p.hint { "Failed and parked runs, grouped by their error fingerprint: the workflow type, whether the run "
                "is parked or failed for good, and its reason with ids and numbers left out. "
                "A parked run waits for an operator: fix the cause, then retry its group." }
            @if groups.truncated { p.problem { "Only part of the failed runs are grouped here (at most "
                (MAX_PARKED_SCANNED) " are read)." } }
            @if groups.groups.is_empty() { p.empty #no-failures { "No failed runs." } }
            @else {
                table.failures #failures {
                    thead { tr { th { "Workflow" } th { "Failure" } th { "Fingerprint" } th { "Runs" } th { "Parked" }
                        th { "First seen" } th { "Last seen" } th { "Sample" } th {} } }
                    tbody {
                        @for group in &groups.groups {
                            tr data-testid="failure-group" data-fingerprint=(group.fingerprint) data-type=(group.workflow_type) {
                                td { (group.workflow_type) } td.reason title=(group.sample_reason) { (group.pattern) }
                                td { code { (group.fingerprint) } }
                                td.count { (group.count) } td.parked { (parked_count(group)) }
                                td { (timestamp(group.first_seen_ms)) } td { (timestamp(group.last_seen_ms)) }
                                td { a href={"/console/runs/" (group.sample.as_str())} { (group.sample.as_str()) } }
                                td { @if act && parked_count(group) > 0 {
                                    a.button href={"/console/failures/retry?group=" (group.fingerprint)} data-testid="retry-group" { "Retry the parked runs" }
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

/// `GET /console/failures/retry?group=FP`: what the bulk retry will do, and its button.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<GroupQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let render = || -> Result<Markup, ApiError> {
        check_access(&session.principal, Access::Admin)?;
        let GroupQuery { group } = crate::api::query(query)?;
        let groups = read_groups(&state)?;
        let found = groups.groups.iter().find(|g| g.fingerprint == group);
        let parked = found.map_or(0, parked_count);
        let key = crate::auth::hex(&crate::auth::random_bytes::<FORM_KEY_BYTES>());
        Ok(html! {
            section.confirm data-testid="confirm" {
                h1 { "Retry a group of parked runs" }
                @if let Some(found) = found {
                    p { (parked) " parked " (found.workflow_type) " runs failed with " code { (found.pattern) } "." }
                } @else { p { "No failed runs have the fingerprint " code { (group) } " now." } }
                @if parked > MAX_REDRIVE_TARGETS as u64 { p.problem { "One job retries the first " (MAX_REDRIVE_TARGETS) "; retry again for the rest." } }
                p { "A redrive job retries each run's failed compensation with a fresh attempt budget, "
                    (shop_types::redrive::DEFAULT_REDRIVE_RATE) " runs a second; each run's history names the job, "
                    "and the job records that you (" (session.principal.subject.to_string()) ") started it. Fix the cause first." }
                form method="post" action="/console/failures/retry" {
                    (csrf_field(&session))
                    input type="hidden" name="group" value=(group);
                    input type="hidden" name="key" value=(key);
                    button.danger type="submit" data-testid="confirm-action" disabled[parked == 0] { "Yes, retry " (parked) " runs" }
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

/// The bulk retry's form: the group, the confirm page's Idempotency-Key and the CSRF token
/// (checked by `require_session`).
#[derive(Deserialize)]
pub(crate) struct RetryForm {
    group: String,
    key: String,
}

/// `POST /console/failures/retry`: starts a redrive job for the group as this session's
/// principal and shows its page.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RetryForm>,
) -> Response {
    let start = async {
        check_access(&session.principal, Access::Admin)?;
        if form.key.is_empty() || form.key.len() > crate::api::workflows::MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(ApiError::bad_request("BAD_IDEMPOTENCY_KEY", "reload the confirm page and try again"));
        }
        let reason = format!("bulk retry of failure group {} from the console", form.group);
        let request = RedriveRequest { group: Some(form.group), reason, ..RedriveRequest::default() };
        let key = format!("console:{}", form.key);
        let (job, _) = state
            .redrives
            .start(&key, request, session.principal.subject.to_string())
            .await
            .map_err(crate::api::redrive_error)?;
        Ok::<_, ApiError>(job)
    };
    match start.await {
        Ok(job) => Redirect::to(&format!("/console/redrives/{}", job.id)).into_response(),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}
