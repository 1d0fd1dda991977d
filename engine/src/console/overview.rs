//! The overview page: live charts of runs started and finished per second, the end-to-end
//! latency percentiles of recent finished runs and the backlog per queue. The page's script
//! follows `GET /v1/overview/events` (one tick a second, aggregated by the engine from the
//! stream of committed events) and draws with inline SVG; the server renders the frame and
//! the first numbers only.
//!
//! It must never read the store (everything here comes from the stats follower and the
//! core's gauges) and never draw with anything but our own script (no chart library).

use super::page::{error_page, html_response, layout};
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::html;

/// Seconds of history the charts keep (the script drops older ticks).
pub const CHART_SECONDS: usize = 120;

/// `GET /console/overview`.
pub(crate) async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Response {
    if let Err(error) = check_access(&session.principal, Access::Client) {
        return error_page(Some(&session), error.status, &error.message);
    }
    let stats = &state.stream_stats;
    let latency = stats.latency();
    let body = html! {
        h1 { "Overview" span.live #live-state data-testid="live-state" {} }
        section.overview #overview data-seconds=(CHART_SECONDS) {
            div.counters {
                div.counter { span.label { "Runs started" } span.value #started data-testid="started" { (stats.started()) } }
                div.counter { span.label { "Runs finished" } span.value #finished data-testid="finished" { (stats.finished()) } }
                div.counter { span.label { "Started / s" } span.value #started-rate { "0" } }
                div.counter { span.label { "Finished / s" } span.value #finished-rate { "0" } }
            }
            h2 { "Runs per second (last " (CHART_SECONDS) " s)" span.legend { span.started { "■ started" } " " span.finished { "■ finished" } } }
            p.hint #rate-scale {}
            svg #rate-chart.chart viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="runs started and finished per second" {}
            h2 { "End-to-end latency of recent finished runs" span.legend { span.p50 { "■ p50" } " " span.p90 { "■ p90" } " " span.p99 { "■ p99" } } }
            div.counters #latency data-testid="latency" {
                div.counter { span.label { "p50" } span.value #p50 { (latency.p50) " ms" } }
                div.counter { span.label { "p90" } span.value #p90 { (latency.p90) " ms" } }
                div.counter { span.label { "p99" } span.value #p99 { (latency.p99) " ms" } }
                div.counter { span.label { "runs measured" } span.value #samples { (latency.samples) } }
            }
            p.hint #latency-scale {}
            svg #latency-chart.chart viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="latency percentiles" {}
            h2 { "Backlog per queue" }
            svg #backlog-chart.chart.bars viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="backlog per queue" {}
            table #backlog data-testid="backlog" { thead { tr { th { "Queue" } th { "Tasks waiting" } } } tbody {} }
        }
    };
    html_response(StatusCode::OK, layout("Overview", Some(&session), "/console/overview", body))
}
