//! The definitions page: every registered workflow definition and version (name, version,
//! content hash, when this engine registered it, its open runs), and a version's page with
//! its resolved steps and compensation plan, as `shopctl definition check` shows them
//! (`api::definitions::plan_of`, the same plan).
//!
//! It must never register or change a definition (that is the API's `POST /v1/definitions`),
//! and reads only the registry and the store's in-flight index.

use super::page::{error_page, html_response, layout, timestamp};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::definitions::{open_runs, plan_of};
use crate::api::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use shop_types::api::PlannedStep;

/// As a definition writes durations (`200ms`, `1m 30s`).
fn duration(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn internal() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "registry unavailable")
}

/// `GET /console/definitions`.
pub(crate) async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let render = async {
        check_access(&session.principal, Access::Client)?;
        let open = open_runs(&state).await?;
        let rows: Vec<(String, u32, String, Option<u64>)> = {
            let registry = state.registry.read().map_err(|_| internal())?;
            let mut rows: Vec<_> = registry
                .all()
                .iter()
                .map(|d| {
                    let (name, version) = (d.name.to_string(), d.version);
                    let hash = registry.content_hash(&name, version).unwrap_or(&d.content_hash).to_owned();
                    let at = registry.registered_at_ms(&name, version);
                    (name, version, hash, at)
                })
                .collect();
            rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            rows
        };
        Ok::<Markup, ApiError>(html! {
            h1 { "Definitions" }
            table #definitions data-testid="definitions" {
                thead { tr { th { "Name" } th { "Version" } th { "Content hash" } th { "Registered" } th { "Open runs" } } }
                tbody { @for (name, version, hash, at) in &rows {
                    @let runs = open.get(&(name.clone(), *version));
                    tr data-name=(name) data-version=(version) {
                        td { a href={"/console/definitions/" (name) "/" (version)} { (name) } }
                        td { (version) }
                        td { code { (hash) } }
                        td { @match at { Some(at) => (timestamp(*at)), None => span.hint { "at start-up" } } }
                        td.open { (runs.map_or(0, |r| r.count)) }
                    }
                } }
            }
            p.hint { "Open runs: not ended (parked included); each stays on the version it started with." }
        })
    };
    match render.await {
        Ok(body) => html_response(StatusCode::OK, layout("Definitions", Some(&session), "/console/definitions", body)),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

/// `GET /console/definitions/{name}/{version}`: the version's resolved plan.
pub(crate) async fn version(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let render = async {
        check_access(&session.principal, Access::Client)?;
        let version: u32 =
            version.parse().map_err(|_| ApiError::invalid(format!("{version:?} is not a version number")))?;
        let definition = state
            .registry
            .read()
            .map_err(|_| internal())?
            .get(&name, version)
            .ok_or_else(|| ApiError::not_found(format!("no definition {name} v{version}")))?;
        let plan = plan_of(&definition);
        let open = open_runs(&state).await?.remove(&(name.clone(), version));
        Ok::<Markup, ApiError>(html! {
            h1 { (plan.name) " v" (plan.version) }
            dl {
                dt { "Content hash" } dd { code { (plan.content_hash) } }
                @if let Some(timeout) = plan.execution_timeout_ms { dt { "Execution timeout" } dd { (duration(timeout)) } }
                dt { "Open runs" } dd data-testid="open-runs" {
                    (open.as_ref().map_or(0, |o| o.count))
                    @if let Some(open) = &open { @for id in &open.sample { " " a href={"/console/runs/" (id.as_str())} { (id.as_str()) } } }
                }
            }
            h2 { "Steps" }
            (steps_table(&plan.steps, true))
            h2 { "Compensation" }
            @if plan.compensation.is_empty() { p { "none" } }
            @else {
                p.hint { "In this order, only for the steps that completed." }
                table.plan data-testid="compensation-plan" {
                    thead { tr { th { "#" } th { "Undoes" } th { "Step" } th { "Activity" } th { "Queue" } th { "Retry" } th { "Timeouts" } } }
                    tbody { @for c in &plan.compensation {
                        tr { td { (c.order) } td { (c.undoes) } td { (c.step.name) } td { (c.step.activity) } td { (c.step.queue) }
                            td { (c.step.retry_text(duration)) } td { (c.step.timeouts_text(duration)) } }
                    } }
                }
            }
            @if !plan.after_compensation.is_empty() { h2 { "After compensation" } (steps_table(&plan.after_compensation, false)) }
            details { summary { "Source" } pre { (definition.source) } }
        })
    };
    match render.await {
        Ok(body) => html_response(StatusCode::OK, layout("Definition", Some(&session), "/console/definitions", body)),
        Err(error) => error_page(Some(&session), error.status, &error.message),
    }
}

fn steps_table(steps: &[PlannedStep], forward: bool) -> Markup {
    html! {
        table.plan data-testid=(if forward { "steps-plan" } else { "after-plan" }) {
            thead { tr { th { "Step" } th { "Activity" } th { "Queue" } th { "Retry" } th { "Timeouts" } th { "On failure" }
                @if forward { th { "Pivot" } th { "Compensated by" } } } }
            tbody { @for step in steps {
                tr {
                    td { (step.name) }
                    // A sleep, wait or choice has no activity: what it does stands in its place.
                    @match &step.construct {
                        Some(construct) => { td { (construct) } td { "-" } },
                        None => { td { (step.activity) } td { (step.queue) } },
                    }
                    td { (step.retry_text(duration)) } td { (step.timeouts_text(duration)) } td { (step.on_failure) }
                    @if forward {
                        td { @if step.pivot { "yes" } @else { "-" } }
                        td { (step.compensated_by.as_deref().unwrap_or("-")) }
                    }
                }
            } }
        }
    }
}
