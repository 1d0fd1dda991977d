//! The seed-compatible order API, `/api/orders`: a thin mapping onto the generic workflow API
//! with the `order` workflow type. It validates the shop's input limits and shows runs as
//! orders; it must never hold order logic of its own (that is `workflows/order.toml` and the
//! workers).
//!
//! An order carries its customer (`customerId` in its input). A credential that speaks for a
//! customer (a JWT with a `sub`) places orders for that customer only: naming another in the
//! body is 403, naming none means itself; it sees only its own orders (another customer's is
//! 404, lists are filtered). A credential without a customer (a client token of a trusted
//! shop backend, an admin) names the customer in the body, or places an order of nobody's.

use super::workflows::{act, list_limit, list_views, start_run, Action, WaitQuery};
use super::{parse_wait, query, view_after_wait, wait_slot, wait_until_settled, ApiError, ApiJson, AppState};
use crate::auth::Principal;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shop_types::api::{WorkflowStatus, WorkflowView};
use shop_types::order::{OrderInput, OrderList, OrderView, PlaceOrderRequest, ORDER_WORKFLOW_TYPE};
use shop_types::{CustomerId, JsonText, WorkflowId};

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /api/orders[?wait=30s]`. Without `wait`: 202 for a new order, 200 for an existing
/// one (the seed's contract). With `wait` (at most `MAX_WAIT_MS`, holding a waiting-read
/// slot like `GET /api/orders/{id}?wait=`, taken before the order is placed so that a refused
/// wait places nothing): 200 once the order is final, else 202 when the wait runs out. Every
/// 202 names the order's URL in `Location`, where the caller waits on.
pub(crate) async fn place(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    wait: Result<Query<WaitQuery>, QueryRejection>,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(query(wait)?.wait.as_deref())?;
    let slot = wait.map(|_| wait_slot(&state, &principal)).transpose()?;
    let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
    let header_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(value) => Some(
            value.to_str().map_err(|_| ApiError::bad_request("INVALID_ID", "Idempotency-Key is not text"))?.to_owned(),
        ),
        None => None,
    };
    let id = match (request.order_id.clone(), header_key) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::invalid("orderId and the Idempotency-Key header differ"));
        }
        (Some(id), _) | (None, Some(id)) => WorkflowId::parse(id)?,
        // The server chooses: one whose shard this node owns, so the start needs no hop.
        (None, None) => super::forward::local_id(&state.cluster),
    };
    let input = OrderInput {
        order_id: id.to_string(),
        order_items: request.order_items,
        shipping_address: request.shipping_address,
        payment_method: request.payment_method,
        customer_id: order_customer(&principal, request.customer_id)?,
    };
    input.check().map_err(|e| ApiError::invalid(e.to_string()))?;
    let input =
        serde_json::to_value(&input).map(|v| JsonText::from_value(&v)).map_err(|e| ApiError::invalid(e.to_string()))?;
    let trace = crate::trace::incoming(&headers)?;
    let (mut status, Json(mut view)) =
        start_run(&state, id.clone(), shop_types::order::order_workflow_type(), input, trace).await?;
    if let (Some(deadline), Some(slot)) = (deadline, &slot) {
        view = wait_until_settled(&state, &id, deadline, slot).await?;
        status = if view.status == WorkflowStatus::Running { StatusCode::ACCEPTED } else { StatusCode::OK };
    }
    let mut response = (status, Json(order_view(view)?)).into_response();
    if status == StatusCode::ACCEPTED {
        // An order id is URL-safe (ID characters only), so the path needs no escaping.
        if let Ok(location) = HeaderValue::from_str(&format!("/api/orders/{id}")) {
            response.headers_mut().insert(LOCATION, location);
        }
    }
    Ok(response)
}

/// The customer an order placed by `principal` is for. A credential that speaks for a
/// customer may name only itself (403 otherwise: the body is well-formed, the caller just
/// may not act for someone else); any other credential's choice stands.
fn order_customer(principal: &Principal, requested: Option<CustomerId>) -> Result<Option<CustomerId>, ApiError> {
    match (principal.subject.customer(), requested) {
        (Some(own), Some(named)) if *own != named => Err(ApiError::forbidden(format!(
            "this credential speaks for customer {own} and may not place an order for customer {named}"
        ))),
        (Some(own), _) => Ok(Some(own.clone())),
        (None, requested) => Ok(requested),
    }
}

/// Whether `principal` may see `order`: a credential that speaks for a customer sees its own
/// orders only; every other client or admin sees all.
fn visible_to(principal: &Principal, order: &OrderView) -> bool {
    principal.subject.customer().is_none_or(|own| order.customer_id.as_ref() == Some(own))
}

/// Checks the input of an `order` run started through the generic API: it must be an order
/// (the shape the order API builds, every limit the order API checks) for the run's own id,
/// or the order views could not show it. Its customer follows the order API's rule; the input
/// comes back with the caller's own customer filled in when it named none.
pub(crate) fn check_run_input(principal: &Principal, id: &WorkflowId, input: JsonText) -> Result<JsonText, ApiError> {
    let mut order: OrderInput = input
        .deserialize_as()
        .map_err(|e| ApiError::invalid(format!("input: an {ORDER_WORKFLOW_TYPE} run's input must be an order: {e}")))?;
    if order.order_id != id.as_str() {
        return Err(ApiError::invalid(format!("input.orderId must be the workflow id {id}, got {:?}", order.order_id)));
    }
    order.check().map_err(|e| ApiError::invalid(format!("input.{e}")))?;
    let customer = order_customer(principal, order.customer_id.clone())?;
    if customer == order.customer_id {
        return Ok(input);
    }
    order.customer_id = customer;
    serde_json::to_value(&order).map(|v| JsonText::from_value(&v)).map_err(|e| ApiError::invalid(e.to_string()))
}

fn order_view(view: WorkflowView) -> Result<OrderView, ApiError> {
    if view.workflow_type != ORDER_WORKFLOW_TYPE {
        return Err(ApiError::not_found(format!("order {} not found", view.id)));
    }
    let status = view.domain_status.clone().unwrap_or_else(|| default_label(view.status).to_owned());
    let (input, reason) = match view.input.deserialize_as::<OrderInput>() {
        Ok(input) => (input, view.reason),
        // Every start path checks an order's input now; a run stored before that was true
        // is shown for what it is rather than breaking every page that lists it.
        Err(error) => {
            tracing::warn!(workflow_id = %view.id, %error, "an order run's stored input is not an order");
            let unreadable = OrderInput {
                order_id: view.id.to_string(),
                order_items: Vec::new(),
                shipping_address: String::new(),
                payment_method: String::new(),
                customer_id: None,
            };
            (unreadable, Some(format!("INVALID_ORDER_INPUT: the stored input is not an order: {error}")))
        }
    };
    Ok(OrderView {
        order_id: input.order_id,
        status,
        reason,
        order_items: input.order_items,
        shipping_address: input.shipping_address,
        payment_method: input.payment_method,
        customer_id: input.customer_id,
        created_at_ms: view.created_at_ms,
        closed_at_ms: view.closed_at_ms,
    })
}

/// The seed's order statuses, for a definition that declares no labels.
fn default_label(status: WorkflowStatus) -> &'static str {
    match status {
        WorkflowStatus::Running => "PENDING",
        WorkflowStatus::Completed => "CONFIRMED",
        WorkflowStatus::Compensated | WorkflowStatus::Terminated => "CANCELLED",
        WorkflowStatus::Failed => "FAILED",
    }
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let id = WorkflowId::parse(id)?;
    let wait = parse_wait(query(wait)?.wait.as_deref())?;
    let view = view_after_wait(&state, &principal, &id, wait).await?;
    let order = order_view(view)?;
    if !visible_to(&principal, &order) {
        // 404, not 403: another customer's order ids are not confirmed to exist.
        return Err(ApiError::not_found(format!("order {id} not found")));
    }
    Ok(Json(order))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderListQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<OrderListQuery>, QueryRejection>,
) -> Result<Json<OrderList>, ApiError> {
    let params = query(params)?;
    let limit = list_limit(params.limit)?;
    let cursor = params.cursor.map(WorkflowId::parse).transpose()?;
    let wanted = params.status.map(|s| s.to_ascii_uppercase());
    let (views, next_cursor) =
        list_views(&state, None, cursor, limit, |view| view.workflow_type == ORDER_WORKFLOW_TYPE)?;
    let mut orders = Vec::with_capacity(views.len());
    for view in views {
        let order = order_view(view)?;
        if wanted.as_deref().is_none_or(|w| order.status == w) && visible_to(&principal, &order) {
            orders.push(order);
        }
    }
    Ok(Json(OrderList { orders, next_cursor }))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let id = WorkflowId::parse(id)?;
    let reason =
        super::workflows::optional_reason(&headers, &body)?.unwrap_or_else(|| "cancelled by the customer".into());
    let view = act(&state, &principal, id, Action::Cancel, reason).await?;
    Ok((StatusCode::ACCEPTED, Json(order_view(view)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_input(input: &str) -> WorkflowView {
        WorkflowView {
            id: WorkflowId::parse("odd-1").expect("valid"),
            workflow_type: shop_types::order::order_workflow_type(),
            definition_version: 1,
            status: WorkflowStatus::Running,
            domain_status: None,
            created_at_ms: 1,
            closed_at_ms: None,
            reason: None,
            input: JsonText::parse(input).expect("valid JSON"),
            output: None,
            waiting_for: Vec::new(),
            definition_hash: None,
            why: None,
        }
    }

    #[test]
    fn a_stored_order_run_that_is_not_an_order_is_shown_flagged_not_refused() {
        let view = order_view(run_with_input(r#"{"x":1}"#)).expect("shown");
        assert_eq!(view.order_id, "odd-1");
        assert_eq!(view.status, "PENDING");
        assert!(view.reason.is_some_and(|r| r.starts_with("INVALID_ORDER_INPUT")));
    }
}
