//! `/v1/parked` (failed and parked runs grouped by error fingerprint) and `/v1/redrives`
//! (redrive jobs: start, read, stop). The work is `crate::redrive`'s; this module only
//! parses, checks and maps errors, and must never resume a run itself.

use super::error::ApiError;
use super::{ApiJson, AppState};
use crate::auth::Principal;
use crate::redrive::Error;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use shop_types::redrive::{ParkedGroups, RedriveJob, RedriveRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParkedQuery {
    #[serde(default)]
    group_by: Option<String>,
}

/// `GET /v1/parked[?group_by=fingerprint]`: the groups, largest first.
pub(crate) async fn parked(
    State(state): State<AppState>,
    Query(query): Query<ParkedQuery>,
) -> Result<Json<ParkedGroups>, ApiError> {
    if let Some(other) = query.group_by.as_deref().filter(|g| *g != "fingerprint") {
        return Err(ApiError::invalid(format!("group_by must be fingerprint, not {other}")));
    }
    let store = state.store.clone();
    let groups = tokio::task::spawn_blocking(move || crate::redrive::scan::groups(store.as_ref()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))??;
    Ok(Json(groups))
}

/// `POST /v1/redrives` with a required `Idempotency-Key`: 201 with a new job (or a dry run's
/// result), 200 with the job that key started already.
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RedriveRequest>,
) -> Result<(StatusCode, Json<RedriveJob>), ApiError> {
    let key = super::workflows::idempotency_key(&headers)?;
    let (job, created) = state.redrives.start(&key, request, principal.subject.to_string()).await.map_err(api_error)?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(job)))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RedriveJob>, ApiError> {
    state.redrives.get(&id).map(Json).ok_or_else(|| ApiError::not_found(format!("no redrive job {id}")))
}

/// `DELETE /v1/redrives/{id}`: stops the job; the runs it has not reached stay as they are.
pub(crate) async fn stop(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RedriveJob>, ApiError> {
    state.redrives.stop(&id).await.map(Json).map_err(api_error)
}

/// How the API answers a redrive error (the console's bulk retry answers the same).
pub(crate) fn api_error(error: Error) -> ApiError {
    let message = error.to_string();
    match error {
        Error::Invalid(_) => ApiError::invalid(message),
        Error::KeyReused => ApiError::new(StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED", message),
        Error::TooMany(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REDRIVES", message),
        Error::NotFound(_) => ApiError::not_found(message),
        Error::Api(error) => error,
    }
}
