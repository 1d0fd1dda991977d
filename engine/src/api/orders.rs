//! The seed-compatible order API, `/api/orders`: a thin mapping onto the generic workflow API
//! with the `order` workflow type. It validates the shop's input limits and shows runs as
//! orders; it must never hold order logic of its own (that is `workflows/order.toml` and the
//! workers).

use super::workflows::{list_limit, list_views, new_id, start_run, stop_run, WaitQuery};
use super::{parse_wait, query, view_after_wait, ApiError, ApiJson, AppState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use shop_types::api::{WorkflowStatus, WorkflowView};
use shop_types::limits::{MAX_LINE_QUANTITY, MAX_ORDER_LINES};
use shop_types::order::{OrderInput, OrderList, OrderView, PlaceOrderRequest, ORDER_WORKFLOW_TYPE};
use shop_types::{JsonText, WorkflowId};

/// Longest shipping address, and payment method name, accepted.
const MAX_ADDRESS_LEN: usize = 1024;
const MAX_PAYMENT_METHOD_LEN: usize = 64;
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

pub(crate) async fn place(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
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
        (None, None) => new_id(),
    };
    validate(&request)?;
    let input = OrderInput {
        order_id: id.to_string(),
        order_items: request.order_items,
        shipping_address: request.shipping_address,
        payment_method: request.payment_method,
    };
    let input =
        serde_json::to_value(&input).map(|v| JsonText::from_value(&v)).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (status, Json(view)) = start_run(&state, id, ORDER_WORKFLOW_TYPE.to_owned(), input).await?;
    Ok((status, Json(order_view(view)?)))
}

fn validate(request: &PlaceOrderRequest) -> Result<(), ApiError> {
    let lines = request.order_items.len();
    if !(1..=MAX_ORDER_LINES).contains(&lines) {
        return Err(ApiError::invalid(format!("orderItems: an order has 1 to {MAX_ORDER_LINES} lines, got {lines}")));
    }
    for (i, item) in request.order_items.iter().enumerate() {
        if item.product_id < 1 {
            return Err(ApiError::invalid(format!("orderItems[{i}].productId must be a positive product id")));
        }
        if !(1..=MAX_LINE_QUANTITY).contains(&item.quantity) {
            return Err(ApiError::invalid(format!(
                "orderItems[{i}].quantity must be between 1 and {MAX_LINE_QUANTITY}, got {}",
                item.quantity
            )));
        }
    }
    if request.payment_method.trim().is_empty() || request.payment_method.len() > MAX_PAYMENT_METHOD_LEN {
        return Err(ApiError::invalid(format!("paymentMethod must be 1 to {MAX_PAYMENT_METHOD_LEN} characters")));
    }
    if request.shipping_address.len() > MAX_ADDRESS_LEN {
        return Err(ApiError::invalid(format!("shippingAddress may be at most {MAX_ADDRESS_LEN} bytes")));
    }
    Ok(())
}

fn order_view(view: WorkflowView) -> Result<OrderView, ApiError> {
    if view.workflow_type != ORDER_WORKFLOW_TYPE {
        return Err(ApiError::not_found(format!("order {} not found", view.id)));
    }
    let input: OrderInput = view.input.deserialize_as().map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", format!("stored order is unreadable: {e}"))
    })?;
    let status = view.domain_status.clone().unwrap_or_else(|| default_label(view.status).to_owned());
    Ok(OrderView {
        order_id: input.order_id,
        status,
        reason: view.reason,
        order_items: input.order_items,
        shipping_address: input.shipping_address,
        payment_method: input.payment_method,
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
    Extension(principal): Extension<crate::auth::Principal>,
    Path(id): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let id = WorkflowId::parse(id)?;
    let wait = parse_wait(query(wait)?.wait.as_deref())?;
    let view = view_after_wait(&state, &principal, &id, wait).await?;
    Ok(Json(order_view(view)?))
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
        if wanted.as_deref().is_none_or(|w| order.status == w) {
            orders.push(order);
        }
    }
    Ok(Json(OrderList { orders, next_cursor }))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let id = WorkflowId::parse(id)?;
    let reason =
        super::workflows::optional_reason(&headers, &body)?.unwrap_or_else(|| "cancelled by the customer".into());
    let (status, Json(view)) = stop_run(&state, id, reason, false).await?;
    Ok((status, Json(order_view(view)?)))
}
