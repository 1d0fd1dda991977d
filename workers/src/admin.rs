//! The worker's own admin HTTP API: health, stock, the payment ledger, the notification
//! outbox and the fault settings.
//!
//! Every error is `{"error":{"code","message"}}` through one `ApiError`, and internal
//! failures are logged here and answered without their details. A write is answered only
//! after the domain has flushed it. This module owns no data: it calls the domains.
//!
//! Every route but `/healthz` (unknown paths included) sits behind
//! [`admin_auth::require_admin`]: this API can set stock, read the ledger and inject faults,
//! so it must never answer an unauthenticated caller unless the worker runs `--open`.

use crate::activities::{Activities, Domain};
use crate::admin_auth::{self, AdminAuth};
use crate::faults;
use crate::inventory::{self, Inventory};
use crate::ErrorChain;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use shop_types::api::{ErrorBody, ErrorDetail};
use shop_types::limits::MAX_BODY_BYTES;
use shop_types::order::{FaultConfig, NotificationEntry, PaymentEntry, Product, SetStockRequest};
use std::sync::Arc;

/// An error answer with a stable `code`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` on a 429 or 503.
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    /// Tells the caller when to try again.
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    fn not_served(domain: Domain) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "DOMAIN_NOT_SERVED",
            format!("this worker does not serve {domain}; start it with --activities including {domain}"),
        )
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_VALUE", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::UNPROCESSABLE_ENTITY => "INVALID_VALUE",
            _ => "MALFORMED_REQUEST",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", rejection.body_text())
    }
}

impl From<inventory::Error> for ApiError {
    fn from(err: inventory::Error) -> Self {
        match err {
            inventory::Error::BadInput(message) => ApiError::invalid(message),
            other => {
                tracing::error!(error = %ErrorChain(&other), "admin stock update failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "the inventory store failed; see the worker's log",
                )
            }
        }
    }
}

impl From<faults::Error> for ApiError {
    fn from(err: faults::Error) -> Self {
        ApiError::invalid(err.to_string())
    }
}

#[derive(Debug, serde::Serialize)]
struct HealthBody {
    status: &'static str,
    activities: Vec<&'static str>,
    /// This process's ID, so a supervisor can tell its own child from whoever else answers
    /// on the port.
    pid: u32,
}

/// The admin router over this process's activities, behind `auth`; tests drive it with
/// `oneshot`.
pub fn router(activities: Arc<Activities>, auth: AdminAuth) -> Router {
    Router::new()
        .route("/stock", get(list_stock))
        .route("/stock/:product_id", axum::routing::put(set_stock))
        .route("/payments", get(list_payments))
        .route("/notifications", get(list_notifications))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Everything above, the fallback included, needs an admin; `/healthz`, added after
        // this layer, does not (supervisors and load balancers probe it).
        .layer(from_fn_with_state(auth, admin_auth::require_admin))
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(activities)
}

/// `GET /metrics`: this process's metrics in the Prometheus text format.
async fn metrics() -> Result<Response, ApiError> {
    let text = crate::metrics::encode()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "could not encode the metrics"))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE_TEXT)], text).into_response())
}

async fn health(State(activities): State<Arc<Activities>>) -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok",
        activities: activities.domains().into_iter().map(Domain::as_str).collect(),
        pid: std::process::id(),
    })
}

fn inventory(activities: &Activities) -> Result<&Inventory, ApiError> {
    activities.inventory.as_deref().ok_or(ApiError::not_served(Domain::Inventory))
}

async fn list_stock(State(activities): State<Arc<Activities>>) -> Result<Json<Vec<Product>>, ApiError> {
    Ok(Json(inventory(&activities)?.products()))
}

async fn set_stock(
    State(activities): State<Arc<Activities>>,
    product_id: Result<Path<i64>, PathRejection>,
    request: Result<Json<SetStockRequest>, JsonRejection>,
) -> Result<Json<Product>, ApiError> {
    let Path(product_id) = product_id?;
    let Json(request) = request?;
    let product = inventory(&activities)?.set_stock(product_id, &request).await?;
    Ok(Json(product))
}

async fn list_payments(State(activities): State<Arc<Activities>>) -> Result<Json<Vec<PaymentEntry>>, ApiError> {
    let payment = activities.payment.as_deref().ok_or(ApiError::not_served(Domain::Payment))?;
    Ok(Json(payment.ledger()))
}

async fn list_notifications(
    State(activities): State<Arc<Activities>>,
) -> Result<Json<Vec<NotificationEntry>>, ApiError> {
    let outbox = activities.notification.as_deref().ok_or(ApiError::not_served(Domain::Notification))?;
    Ok(Json(outbox.entries()))
}

async fn get_faults(State(activities): State<Arc<Activities>>) -> Json<FaultConfig> {
    Json(activities.faults.get())
}

async fn put_faults(
    State(activities): State<Arc<Activities>>,
    config: Result<Json<FaultConfig>, JsonRejection>,
) -> Result<Json<FaultConfig>, ApiError> {
    let Json(config) = config?;
    activities.faults.set(config)?;
    tracing::info!(faults = ?activities.faults.get(), "fault settings changed");
    Ok(Json(activities.faults.get()))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Faults;
    use crate::notification::Notification;
    use crate::store;
    use axum::body::Body;
    use axum::http::{header, Method, Request};
    use tower::ServiceExt;

    fn app(with_inventory: bool) -> Router {
        let activities = Activities {
            inventory: with_inventory.then(|| Arc::new(Inventory::open(store::temporary()).expect("opens"))),
            payment: None,
            notification: Some(Arc::new(Notification::open(store::temporary()).expect("opens"))),
            risk: false,
            echo: false,
            faults: Arc::new(Faults::new(FaultConfig::default()).expect("valid")),
        };
        router(Arc::new(activities), AdminAuth::Open)
    }

    async fn call(app: &Router, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("a valid request");
        let response = app.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES).await.expect("a readable body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn health_lists_the_served_activities() {
        let (status, body) = call(&app(true), Method::GET, "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"status": "ok", "activities": ["inventory", "notification"], "pid": std::process::id()})
        );
    }

    #[tokio::test]
    async fn stock_can_be_listed_and_set() {
        let app = app(true);
        let (status, body) = call(&app, Method::PUT, "/stock/11", Some(r#"{"units":5,"priceCents":250}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"productId": 11, "name": "Product 11", "priceCents": 250, "stock": 5, "reserved": 0})
        );
        let (status, body) = call(&app, Method::GET, "/stock", None).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> =
            body.as_array().expect("a list").iter().map(|p| p["productId"].as_i64().expect("an id")).collect();
        assert_eq!(ids, (1..=11).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn bad_stock_updates_get_the_error_shape() {
        let app = app(true);
        let (status, body) = call(&app, Method::PUT, "/stock/1", Some(r#"{"units":-1}"#)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "INVALID_VALUE");
        let (status, body) = call(&app, Method::PUT, "/stock/1", Some("{nope")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "MALFORMED_REQUEST");
        let (status, body) = call(&app, Method::PUT, "/stock/abc", Some(r#"{"units":1}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "MALFORMED_REQUEST");
        let (status, _) = call(&app, Method::PUT, "/stock/1", Some(r#"{"units":1,"extra":2}"#)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn unserved_domains_answer_404_with_a_code() {
        let app = app(false);
        for uri in ["/stock", "/payments"] {
            let (status, body) = call(&app, Method::GET, uri, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(body["error"]["code"], "DOMAIN_NOT_SERVED", "{uri}");
        }
        let (status, body) = call(&app, Method::GET, "/notifications", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!([]));
        let (status, body) = call(&app, Method::GET, "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn faults_can_be_read_and_changed() {
        let app = app(false);
        let (status, body) = call(&app, Method::PUT, "/faults", Some(r#"{"payment_fail_next":3}"#)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["payment_fail_next"], 3);
        let (_, body) = call(&app, Method::GET, "/faults", None).await;
        assert_eq!(body["payment_fail_next"], 3);
        let (status, body) = call(&app, Method::PUT, "/faults", Some(r#"{"payment_failure_rate":2.0}"#)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "INVALID_VALUE");
    }
}
