//! The queues and workers page: per task queue, its backlog, how long its oldest task has
//! waited, the polls waiting on it now and the workers that polled it lately; then each
//! activity's circuit breaker (state, until when it is open, its window). Live: the
//! page's script follows the overview stream (`GET /v1/overview/events`, one tick a second)
//! and fetches the table (`/console/queues/live`) on each tick.
//!
//! It must never read the store: the numbers are the core's gauges (`core::Stats::queues`),
//! which keep a queue once seen, so a drained queue shows zeros instead of vanishing, and
//! the breakers' views (`core::Stats::circuits`).

use super::page::{error_page, html_response, layout};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::AppState;
use crate::core::{CircuitState, POLLER_RECENT_MS};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use shop_types::describe::millis;

fn table(state: &AppState) -> Markup {
    let now = state.clock.now_ms();
    let queues = state.core.stats.queue_views();
    let circuits = state.core.stats.circuits.lock().map(|c| c.clone()).unwrap_or_default();
    html! {
        @if queues.is_empty() { p.empty { "No queue has had a task or a poll yet." } }
        @else {
            table #queues data-testid="queues" {
                thead { tr { th { "Queue" } th { "Backlog" } th { "Oldest task waiting" } th { "Polls waiting" }
                    th { "Workers polling (last " (millis(POLLER_RECENT_MS)) ")" } } }
                tbody { @for (name, gauge) in &queues {
                    tr data-queue=(name) {
                        td { (name) }
                        td.backlog { (gauge.ready) }
                        td { @match gauge.oldest_scheduled_ms { Some(since) => (millis(now.saturating_sub(since))), None => "-" } }
                        td { (gauge.waiting_polls) }
                        td.pollers class=[(gauge.recent_pollers == 0).then_some("failed")] { (gauge.recent_pollers) }
                    }
                } }
            }
        }
        @if !circuits.is_empty() {
            h2 { "Circuit breakers" }
            table #circuits data-testid="circuits" {
                thead { tr { th { "Activity" } th { "State" } th { "Open for" } th { "Failures / calls in window" } th { "Settings" } } }
                tbody { @for (activity, circuit) in &circuits {
                    tr data-activity=(activity) {
                        td { (activity) }
                        td.state class=[(circuit.state != CircuitState::Closed).then_some("failed")] {
                            (circuit.state.as_str())
                            @if circuit.state != CircuitState::Closed { ": its tasks wait" }
                        }
                        td { @match circuit.open_until_ms { Some(until) => (millis(until.saturating_sub(now))), None => "-" } }
                        td { (circuit.failures) " / " (circuit.calls) }
                        td { (circuit.config) }
                    }
                } }
            }
        }
    }
}

/// `GET /console/queues`.
pub(crate) async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    if let Err(error) = check_access(&session.principal, Access::Client) {
        return error_page(Some(&session), error.status, &error.message);
    }
    let body = html! {
        h1 { "Queues and workers" span.live #live-state data-testid="live-state" {} }
        div #queues-live { (table(&state)) }
    };
    html_response(StatusCode::OK, layout("Queues", Some(&session), "/console/queues", body))
}

/// `GET /console/queues/live`: the table alone.
pub(crate) async fn live(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    match check_access(&session.principal, Access::Client) {
        Ok(()) => html_response(StatusCode::OK, table(&state)),
        Err(error) => error.into_response(),
    }
}
