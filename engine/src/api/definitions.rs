//! `/v1/definitions`: list the registered definitions, register a new version (answering
//! which runs of older versions stay open on theirs), and check a definition without
//! registering it (its resolved plan).
//!
//! The handlers parse with `definition::parse` and register through the core; they never
//! write the store or the registry themselves, and never migrate a run to another version.

use super::{ApiError, AppState};
use crate::definition::{self, Construct, Definition, OnFailure, Sleep, StepDef};
use crate::registry::content_hash;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use shop_types::api::{
    DefinitionList, DefinitionPlan, DefinitionSummary, OpenRuns, PlannedCompensation, PlannedRetry, PlannedStep,
    PlannedTimeouts, RegisteredDefinition, WorkflowStatus,
};
use shop_types::limits::{MAX_BODY_BYTES, OPEN_RUNS_SAMPLE};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<DefinitionList>, ApiError> {
    let registry = state
        .registry
        .read()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "registry unavailable"))?;
    let mut definitions: Vec<DefinitionSummary> = registry
        .all()
        .iter()
        .map(|d| {
            let hash = registry.content_hash(d.name.as_str(), d.version).map(str::to_owned);
            summary_of(d, hash.unwrap_or_else(|| content_hash(&d.source)))
        })
        .collect();
    definitions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(Json(DefinitionList { definitions }))
}

fn summary_of(definition: &Definition, content_hash: String) -> DefinitionSummary {
    DefinitionSummary {
        name: definition.name.to_string(),
        version: definition.version,
        steps: definition.steps.iter().map(|s| s.name.to_string()).collect(),
        content_hash,
        source: definition.source.clone(),
    }
}

/// Registers a new definition version from its TOML text (`Content-Type: application/toml`),
/// and names the open runs of older versions of the same type, which stay on theirs.
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RegisteredDefinition>), ApiError> {
    let definition = parse_body(&headers, &body)?;
    let summary = summary_of(&definition, content_hash(&definition.source));
    let added = state.core.register(definition).await?;
    let open = open_runs_before(&state, &summary.name, summary.version).await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(RegisteredDefinition { definition: summary, open_runs_of_older_versions: open })))
}

/// Validates a definition and answers its resolved plan; registers nothing.
pub(crate) async fn check(headers: HeaderMap, body: Bytes) -> Result<Json<DefinitionPlan>, ApiError> {
    let definition = parse_body(&headers, &body)?;
    Ok(Json(plan_of(&definition)))
}

/// The body as a parsed definition: TOML, UTF-8, at most `MAX_BODY_BYTES`; a definition the
/// engine cannot run is 422 `INVALID_DEFINITION` with its line.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Definition, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type.starts_with("application/toml") || content_type.starts_with("text/plain")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "expected a TOML body with Content-Type: application/toml",
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "definition is too large"));
    }
    let source = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("BAD_BODY", "definition is not UTF-8"))?;
    definition::parse("request body", source)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_DEFINITION", e.to_string()))
}

/// The open runs (not terminal, parked included) of versions of `name` below `version`: an
/// exact count per version and a sample of at most `OPEN_RUNS_SAMPLE` ids each.
async fn open_runs_before(state: &AppState, name: &str, version: u32) -> Result<Vec<OpenRuns>, ApiError> {
    let open = open_runs(state).await?;
    Ok(open.into_iter().filter(|((n, v), _)| n == name && *v < version).map(|(_, runs)| runs).collect())
}

/// The open runs (not terminal, parked included) of every `(name, version)`: an exact count
/// and a sample of at most `OPEN_RUNS_SAMPLE` ids each. Reads the in-flight index and one
/// summary per run in it, off the async threads: the in-flight index is what recovery
/// replays, so it stays small.
pub(crate) async fn open_runs(state: &AppState) -> Result<BTreeMap<(String, u32), OpenRuns>, ApiError> {
    let store = state.store.clone();
    let scan = tokio::task::spawn_blocking(move || -> Result<_, crate::store::Error> {
        let mut by_version: BTreeMap<(String, u32), OpenRuns> = BTreeMap::new();
        for id in store.in_flight_held()? {
            let Some(run) = store.run(&id)? else { continue };
            if run.status.is_terminal() && run.status != WorkflowStatus::Failed {
                continue;
            }
            let key = (run.workflow_type.to_string(), run.definition_version);
            let entry = by_version.entry(key).or_insert_with(|| OpenRuns {
                version: run.definition_version,
                count: 0,
                sample: Vec::new(),
            });
            entry.count += 1;
            entry.sample.push(id);
        }
        for runs in by_version.values_mut() {
            runs.sample.sort();
            runs.sample.truncate(OPEN_RUNS_SAMPLE);
        }
        Ok(by_version)
    });
    let scanned = scan
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "the open-runs scan failed"))?;
    Ok(scanned?)
}

/// A definition as the plan the check answers.
pub(crate) fn plan_of(definition: &Definition) -> DefinitionPlan {
    let compensation_name = |index: usize| definition.compensations.get(index)?.as_ref().map(|c| c.name.to_string());
    let steps = definition
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| PlannedStep { compensated_by: compensation_name(index), ..planned(step) })
        .collect();
    // Compensation undoes completed steps in reverse order of the forward steps.
    let compensation = definition
        .steps
        .iter()
        .zip(&definition.compensations)
        .rev()
        .filter_map(|(step, compensation)| Some((step, compensation.as_ref()?)))
        .enumerate()
        .map(|(position, (step, compensation))| PlannedCompensation {
            order: u32::try_from(position + 1).unwrap_or(u32::MAX),
            undoes: step.name.to_string(),
            step: planned(compensation),
        })
        .collect();
    let labels = &definition.statuses;
    let status_labels = WorkflowStatus::ALL
        .into_iter()
        .filter_map(|status| Some((status.as_str().to_ascii_lowercase(), labels.label(status)?.to_owned())))
        .collect();
    DefinitionPlan {
        name: definition.name.to_string(),
        version: definition.version,
        content_hash: content_hash(&definition.source),
        execution_timeout_ms: definition.execution_timeout_ms,
        status_labels,
        steps,
        compensation,
        after_compensation: definition.after_compensation.iter().map(planned).collect(),
        circuits: definition
            .circuits
            .iter()
            .map(|(activity, circuit)| (activity.to_string(), circuit.describe()))
            .collect(),
    }
}

fn planned(step: &StepDef) -> PlannedStep {
    let retry = &step.retry;
    let timeouts = &step.timeouts;
    PlannedStep {
        name: step.name.to_string(),
        construct: construct(&step.construct),
        activity: step.activity().map(ToString::to_string).unwrap_or_default(),
        queue: step.queue().map(ToString::to_string).unwrap_or_default(),
        retry: PlannedRetry {
            initial_interval_ms: retry.initial_interval_ms,
            backoff_coefficient: retry.backoff_coefficient,
            max_interval_ms: retry.max_interval_ms,
            max_attempts: retry.max_attempts,
            jitter: retry.jitter,
            non_retryable: retry.non_retryable.clone(),
        },
        timeouts: PlannedTimeouts {
            schedule_to_start_ms: timeouts.schedule_to_start_ms,
            start_to_close_ms: timeouts.start_to_close_ms,
            schedule_to_close_ms: timeouts.schedule_to_close_ms,
            heartbeat_ms: timeouts.heartbeat_ms,
        },
        on_failure: match step.on_failure {
            OnFailure::Compensate => "compensate",
            OnFailure::Continue => "continue",
        }
        .to_owned(),
        pivot: step.pivot,
        compensated_by: None,
        params: step.params.clone(),
    }
}

/// A step that is not an activity, in a few words.
fn construct(construct: &Construct) -> Option<String> {
    match construct {
        Construct::Activity { .. } => None,
        Construct::Sleep(Sleep::For { ms }) => {
            Some(format!("sleep {}", humantime::format_duration(Duration::from_millis(*ms))))
        }
        Construct::Sleep(Sleep::Until { pointer }) => Some(format!("sleep until {pointer}")),
        Construct::Wait(wait) => Some(format!(
            "wait for {} ({}){}",
            wait.signals.join(", "),
            humantime::format_duration(Duration::from_millis(wait.timeout_ms)),
            if wait.fail_on.is_empty() { String::new() } else { format!(", failing on {}", wait.fail_on.join(", ")) }
        )),
        Construct::Choice(cases) => {
            Some(format!("choice: {}", cases.iter().map(|case| case.branch.as_str()).collect::<Vec<_>>().join(" | ")))
        }
        Construct::Parallel(branches) => Some(format!("parallel: {}", branches.join(" & "))),
        Construct::Child(child) => Some(match child.version {
            Some(version) => format!("workflow: {} v{version}", child.name),
            None => format!("workflow: {} (latest)", child.name),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_plan_compensates_in_reverse_and_names_what_it_undoes() {
        let source = include_str!("../../../workflows/order.toml");
        let definition = definition::parse("order.toml", source).expect("the order saga parses");
        let plan = plan_of(&definition);
        assert_eq!(plan.steps.len(), definition.steps.len());
        assert_eq!(plan.content_hash, content_hash(source));
        let undone: Vec<&str> = plan.compensation.iter().map(|c| c.undoes.as_str()).collect();
        let mut forward: Vec<&str> =
            plan.steps.iter().filter(|s| s.compensated_by.is_some()).map(|s| s.name.as_str()).collect();
        forward.reverse();
        assert_eq!(undone, forward);
        assert!(!undone.is_empty());
        let orders: Vec<u32> = plan.compensation.iter().map(|c| c.order).collect();
        assert_eq!(orders, (1..=u32::try_from(orders.len()).expect("small")).collect::<Vec<_>>());
    }
}
