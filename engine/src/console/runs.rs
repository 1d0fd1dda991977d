//! The runs page: every run, filtered by status and type, searched by id (prefix), each row
//! with its status and, for a run that did not complete, the reason. Live: the page's
//! script follows `GET /v1/events` and, for each run it is told changed, fetches that run's
//! row (`/console/runs/{id}/row`, answered 204 when the run no longer passes the filters).
//!
//! It must never read more than one page of runs per request ([`RUNS_PAGE_SIZE`]) and never
//! show a run its reader's role could not read through the API.

use super::page::{error_page, html_response, layout, status_badge, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::workflows::list_views;
use crate::api::{workflow_view, ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use shop_types::api::{WorkflowStatus, WorkflowView};
use shop_types::history::EventKind;
use shop_types::WorkflowId;

/// Runs on one page of the list.
pub const RUNS_PAGE_SIZE: usize = 50;
/// Longest failure reason shown in a row (the run's page shows all of it).
pub const MAX_ROW_REASON_CHARS: usize = 160;

/// The list's filters, as the page's query string carries them (empty means none).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    workflow_type: String,
    /// A run id or the start of one.
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
}

/// The filters, checked.
struct Checked {
    status: Option<WorkflowStatus>,
    workflow_type: Option<String>,
    q: Option<String>,
    cursor: Option<WorkflowId>,
}

impl Filters {
    fn check(&self) -> Result<Checked, ApiError> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let status = text(&self.status).map(|s| s.parse::<WorkflowStatus>()).transpose().map_err(ApiError::invalid)?;
        let cursor = text(&self.cursor).map(WorkflowId::parse).transpose()?;
        Ok(Checked { status, workflow_type: text(&self.workflow_type), q: text(&self.q), cursor })
    }
}

impl Checked {
    fn keeps(&self, view: &WorkflowView) -> bool {
        self.status.is_none_or(|s| view.status == s)
            && self.workflow_type.as_deref().is_none_or(|t| view.workflow_type == t)
            && self.q.as_deref().is_none_or(|q| view.id.as_str().starts_with(q))
    }
}

/// `GET /console/runs`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match render(&state, &session, filters) {
        Ok(markup) => html_response(StatusCode::OK, markup),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

fn render(
    state: &AppState,
    session: &Session,
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Markup, ApiError> {
    check_access(&session.principal, Access::Client)?;
    let filters = crate::api::query(filters)?;
    let checked = filters.check()?;
    let (runs, next_cursor) = match &checked.q {
        // A search starts at the id searched for: the runs whose id starts with it follow it
        // in id order, so one page of the index holds them.
        Some(q) => {
            let exact = WorkflowId::parse(q.clone()).ok();
            let mut runs: Vec<WorkflowView> =
                exact.as_ref().and_then(|id| workflow_view(state, id).ok().flatten()).into_iter().collect();
            let (after, more) = list_views(state, checked.status, exact, RUNS_PAGE_SIZE, |v| checked.keeps(v))?;
            runs.extend(after);
            runs.retain(|v| checked.keeps(v));
            (runs, more)
        }
        None => list_views(state, checked.status, checked.cursor.clone(), RUNS_PAGE_SIZE, |v| checked.keeps(v))?,
    };
    let next = next_cursor.filter(|_| checked.q.is_none()).map(|cursor| {
        serde_urlencoded::to_string([
            ("status", filters.status.as_str()),
            ("type", filters.workflow_type.as_str()),
            ("cursor", cursor.as_str()),
        ])
        .unwrap_or_default()
    });
    let statuses = WorkflowStatus::ALL.map(WorkflowStatus::as_str);
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/console/runs" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in statuses {
                        option value=(s) selected[filters.status.eq_ignore_ascii_case(s)] { (s) }
                    }
                }
            }
            label { "Type " input name="type" value=(filters.workflow_type) placeholder="order"; }
            label { "Id " input name="q" value=(filters.q) placeholder="search by id"; }
            button type="submit" { "Filter" }
            span.live #live-state data-testid="live-state" { "" }
        }
        table.runs #runs data-kinds=(EventKind::NAMES.join(","))
            data-status=(filters.status) data-type=(filters.workflow_type) data-q=(filters.q) {
            thead { tr { th { "Run" } th { "Type" } th { "Status" } th { "Started" } th { "Ended" } th { "Reason" } } }
            tbody #run-rows {
                @for run in &runs { (row_markup(run)) }
            }
        }
        @if runs.is_empty() { p.empty #no-runs { "No runs match." } }
        @if let Some(next) = next { p { a href={"/console/runs?" (next)} { "Next page →" } } }
    };
    Ok(layout("Runs", Some(session), "/console/runs", body))
}

/// `GET /console/runs/{id}/row?status=&type=&q=`: one run's row, or 204 when it does not
/// pass the filters (the script then removes it).
pub(crate) async fn row(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let found = || -> Result<Option<WorkflowView>, ApiError> {
        check_access(&session.principal, Access::Client)?;
        let checked = crate::api::query(filters)?.check()?;
        Ok(workflow_view(&state, &WorkflowId::parse(id)?)?.filter(|v| checked.keeps(v)))
    };
    match found() {
        Ok(Some(view)) => html_response(StatusCode::OK, row_markup(&view)),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// One run as a table row.
fn row_markup(run: &WorkflowView) -> Markup {
    let parked = run.status == WorkflowStatus::Failed && run.closed_at_ms.is_none();
    let reason = run.reason.as_deref().filter(|_| run.status != WorkflowStatus::Completed).map(short);
    html! {
        tr data-id=(run.id.as_str()) data-status=(run.status.as_str()) {
            td { a href={"/console/runs/" (run.id.as_str())} { (run.id.as_str()) } }
            td { (run.workflow_type.as_str()) " v" (run.definition_version) }
            td {
                (status_badge(run.status, parked))
                @if let Some(label) = &run.domain_status { " " span.domain data-testid="domain-status" { (label) } }
            }
            td { (timestamp(run.created_at_ms)) }
            td { @if let Some(closed) = run.closed_at_ms { (timestamp(closed)) } }
            td.reason { @if let Some(reason) = reason { (reason) } }
        }
    }
}

/// At most [`MAX_ROW_REASON_CHARS`] characters of a reason, on one line.
fn short(reason: &str) -> String {
    let line: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match line.char_indices().nth(MAX_ROW_REASON_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_cut_at_its_limit_on_one_line() {
        let at_limit = "x".repeat(MAX_ROW_REASON_CHARS);
        assert_eq!(short(&at_limit), at_limit);
        let over = "é".repeat(MAX_ROW_REASON_CHARS + 1);
        assert_eq!(short(&over).chars().count(), MAX_ROW_REASON_CHARS + 1, "the limit and an ellipsis");
        assert_eq!(short("a\nb"), "a b");
    }
}
