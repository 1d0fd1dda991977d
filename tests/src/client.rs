//! The tests' view of [`shop_client`]: [`Api`] for the engine (order API and `/v1`) and
//! [`Admin`] for a worker's admin API. Every request goes through `shop-client`; what is the
//! harness's own are assertions: raw calls (the client's `send`) return a [`Reply`] (status
//! and JSON body) so tests can assert on error codes, typed helpers panic with the reason
//! when the system answers something else, and waits ride out an engine that restarts.

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shop_client::{Method, Options, Service};
use shop_types::api::{HistoryEventView, HistoryResponse, WorkflowList, WorkflowView};
use shop_types::order::{FaultConfig, NotificationEntry, OrderView, PaymentEntry, Product, SetStockRequest};
use std::time::{Duration, Instant};

/// How long one HTTP call may take; above the longest server-side wait we ask for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// The `wait` each long-poll read asks for (the engine caps it at 60 s).
const WAIT_PARAM: &str = "30s";
/// How long a test waits for one run to finish before it gives up.
pub const FINAL_DEADLINE: Duration = Duration::from_secs(90);
/// Pause before trying again when the engine cannot be reached (e.g. while it restarts).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Runs per page when listing every workflow.
const LIST_PAGE: usize = 1000;

/// The order status of a run that is not final yet.
pub const PENDING: &str = "PENDING";
pub const CONFIRMED: &str = "CONFIRMED";
pub const CANCELLED: &str = "CANCELLED";

/// An HTTP answer: its status and its body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The body as text, for bodies that are not JSON.
    pub text: String,
}

impl Reply {
    fn from_raw(raw: shop_client::RawReply) -> Reply {
        let text = String::from_utf8_lossy(&raw.body).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status: raw.status.as_u16(), body, text }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    /// `error.message` of an error body.
    pub fn message(&self) -> &str {
        self.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("")
    }

    /// Asserts this is the documented JSON error with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, Some(code)), "unexpected answer: {}", self.text);
        assert!(!self.message().is_empty(), "an error carries a message: {}", self.text);
    }

    /// Parses the body as `T`, panicking with the body when it does not fit.
    #[track_caller]
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("answer {} does not parse as expected: {e}: {}", self.status, self.text))
    }
}

/// The `POST /api/orders` body for `items` (`(productId, quantity)`) and a payment method.
pub fn order_body(order_id: Option<&str>, items: &[(i64, i64)], payment_method: &str) -> Value {
    let lines: Vec<Value> = items.iter().map(|(p, q)| json!({"productId": p, "quantity": q})).collect();
    let mut body = json!({
        "orderItems": lines,
        "shippingAddress": "1 Test Street, Testville",
        "paymentMethod": payment_method,
    });
    if let Some(id) = order_id {
        body["orderId"] = json!(id);
    }
    body
}

/// A client of `service` at `base` for the tests: no retry (tests assert on 429s and 503s),
/// a timeout above the longest wait they ask for.
fn client(service: Service, base: &str, token: Option<&str>) -> shop_client::Client {
    let options = Options { request_timeout: REQUEST_TIMEOUT, ..Options::default() };
    let client = shop_client::Client::new(service, base, options).expect("a valid base URL");
    let token = token.map(|token| token.parse().expect("a token is one word of visible ASCII"));
    client.with_token(token.as_ref()).expect("a token is header-safe")
}

/// The engine's HTTP API.
#[derive(Clone)]
pub struct Api {
    client: shop_client::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api { client: client(Service::Engine, base, None), base: base.trim_end_matches('/').to_owned() }
    }

    /// An API client that sends `Authorization: Bearer <token>` with every request, for an
    /// engine that is not running `--open`.
    pub fn with_token(base: &str, token: &str) -> Api {
        Api { client: client(Service::Engine, base, Some(token)), base: base.trim_end_matches('/').to_owned() }
    }

    /// The `shop-client` underneath, for typed calls.
    pub fn client(&self) -> &shop_client::Client {
        &self.client
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        Ok(Reply::from_raw(self.client.send(Method::GET, path, None, Vec::new(), &[]).await?))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        let body = serde_json::to_vec(body)?;
        Ok(Reply::from_raw(self.client.send(Method::POST, path, Some("application/json"), body, &[]).await?))
    }

    /// A POST with a body and content type of the caller's choosing, and extra headers.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        Ok(Reply::from_raw(self.client.send(Method::POST, path, Some(content_type), body, headers).await?))
    }

    /// `POST /api/orders`.
    pub async fn place_order(&self, body: &Value) -> anyhow::Result<Reply> {
        self.post_json("/api/orders", body).await
    }

    /// `POST /api/orders`, panicking unless it is accepted (202); returns the order id.
    pub async fn place_order_ok(&self, body: &Value) -> String {
        let reply = self.place_order(body).await.expect("the engine answers POST /api/orders");
        assert_eq!(reply.status, 202, "a new order is accepted: {}", reply.text);
        let order: OrderView = reply.parse();
        order.order_id
    }

    /// `GET /api/orders/{id}` without waiting.
    pub async fn order(&self, id: &str) -> OrderView {
        let reply = self.get(&format!("/api/orders/{id}")).await.expect("the engine answers GET /api/orders/{id}");
        assert_eq!(reply.status, 200, "order {id}: {}", reply.text);
        reply.parse()
    }

    /// The order once it is final (`GET /api/orders/{id}?wait=30s`, repeated up to
    /// [`FINAL_DEADLINE`]); rides out an engine that is restarting.
    pub async fn wait_order(&self, id: &str) -> OrderView {
        let deadline = Instant::now() + FINAL_DEADLINE;
        loop {
            match self.get(&format!("/api/orders/{id}?wait={WAIT_PARAM}")).await {
                Ok(reply) if reply.status == 200 => {
                    let order: OrderView = reply.parse();
                    if order.status != PENDING {
                        return order;
                    }
                }
                Ok(reply) if reply.status == 503 => {}
                Ok(reply) => panic!("GET /api/orders/{id}: {} {}", reply.status, reply.text),
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
            assert!(Instant::now() < deadline, "order {id} was not final within {FINAL_DEADLINE:?}");
        }
    }

    /// `GET /v1/workflows/{id}` without waiting.
    pub async fn workflow(&self, id: &str) -> WorkflowView {
        let reply = self.get(&format!("/v1/workflows/{id}")).await.expect("the engine answers GET /v1/workflows/{id}");
        assert_eq!(reply.status, 200, "workflow {id}: {}", reply.text);
        reply.parse()
    }

    /// The run once it is terminal, like [`Api::wait_order`].
    pub async fn wait_workflow(&self, id: &str) -> WorkflowView {
        let deadline = Instant::now() + FINAL_DEADLINE;
        loop {
            match self.get(&format!("/v1/workflows/{id}?wait={WAIT_PARAM}")).await {
                Ok(reply) if reply.status == 200 => {
                    let view: WorkflowView = reply.parse();
                    if view.status.is_terminal() {
                        return view;
                    }
                }
                Ok(reply) if reply.status == 503 => {}
                Ok(reply) => panic!("GET /v1/workflows/{id}: {} {}", reply.status, reply.text),
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
            assert!(Instant::now() < deadline, "workflow {id} was not terminal within {FINAL_DEADLINE:?}");
        }
    }

    /// `GET /v1/workflows/{id}/history`.
    pub async fn history(&self, id: &str) -> Vec<HistoryEventView> {
        self.try_history(id).await.unwrap_or_else(|e| panic!("history of {id}: {e:#}"))
    }

    pub async fn try_history(&self, id: &str) -> anyhow::Result<Vec<HistoryEventView>> {
        let reply = self.get(&format!("/v1/workflows/{id}/history")).await?;
        if reply.status != 200 {
            bail!("{} {}", reply.status, reply.text);
        }
        let history: HistoryResponse = serde_json::from_value(reply.body).context("parse the history")?;
        Ok(history.events)
    }

    /// Every run the engine knows, over all pages of `GET /v1/workflows`.
    pub async fn all_workflows(&self) -> anyhow::Result<Vec<WorkflowView>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/workflows?limit={LIST_PAGE}&cursor={c}"),
                None => format!("/v1/workflows?limit={LIST_PAGE}"),
            };
            let reply = self.get(&path).await?;
            if reply.status != 200 {
                bail!("GET {path}: {} {}", reply.status, reply.text);
            }
            let page: WorkflowList = serde_json::from_value(reply.body).context("parse the workflow list")?;
            all.extend(page.workflows);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// How many runs the engine holds, for "nothing changed" checks.
    pub async fn workflow_count(&self) -> usize {
        self.all_workflows().await.expect("list the workflows").len()
    }

    /// `POST /v1/definitions` with a TOML body.
    pub async fn register_definition(&self, toml: &str) -> Reply {
        self.post_raw("/v1/definitions", "application/toml", toml.as_bytes().to_vec(), &[])
            .await
            .expect("the engine answers POST /v1/definitions")
    }

    /// `POST /v1/workflows`.
    pub async fn start_workflow(&self, workflow_type: &str, id: Option<&str>, input: Value) -> Reply {
        let mut body = json!({"type": workflow_type, "input": input});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        self.post_json("/v1/workflows", &body).await.expect("the engine answers POST /v1/workflows")
    }
}

/// A worker's admin API.
#[derive(Clone)]
pub struct Admin {
    client: shop_client::Client,
}

impl Admin {
    pub fn new(base: &str) -> Admin {
        Admin { client: client(Service::Worker, base, None) }
    }

    /// An admin API client that sends `Authorization: Bearer <token>` with every request, for
    /// a worker that is not running `--open`.
    pub fn with_token(base: &str, token: &str) -> Admin {
        Admin { client: client(Service::Worker, base, Some(token)) }
    }

    /// `GET path`, parsed as `T`; any answer but 200 is an error.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let reply = Reply::from_raw(self.client.send(Method::GET, path, None, Vec::new(), &[]).await?);
        if reply.status != 200 {
            bail!("GET {path}: {} {}", reply.status, reply.text);
        }
        serde_json::from_value(reply.body).with_context(|| format!("parse GET {path}"))
    }

    pub async fn stock(&self) -> Vec<Product> {
        self.client.stock().await.expect("GET /stock").body
    }

    /// One product, which must exist.
    pub async fn product(&self, product_id: i64) -> Product {
        self.stock()
            .await
            .into_iter()
            .find(|p| p.product_id == product_id)
            .unwrap_or_else(|| panic!("product {product_id} is in the catalog"))
    }

    /// `PUT /stock/{id}`: sets a product's available units (creating it if new).
    pub async fn set_stock(&self, product_id: i64, units: i64) -> Product {
        let request = SetStockRequest { units, name: None, price_cents: None };
        self.client
            .set_stock(product_id, &request)
            .await
            .unwrap_or_else(|e| panic!("PUT /stock/{product_id}: {e}"))
            .body
    }

    pub async fn payments(&self) -> Vec<PaymentEntry> {
        self.client.payments().await.expect("GET /payments").body
    }

    /// Ledger entries of one order.
    pub async fn payments_of(&self, order_id: &str) -> Vec<PaymentEntry> {
        self.payments().await.into_iter().filter(|p| p.order_id == order_id).collect()
    }

    pub async fn notifications(&self) -> Vec<NotificationEntry> {
        self.client.notifications().await.expect("GET /notifications").body
    }

    /// Outbox entries of one order.
    pub async fn notifications_of(&self, order_id: &str) -> Vec<NotificationEntry> {
        self.notifications().await.into_iter().filter(|n| n.order_id == order_id).collect()
    }

    /// `PUT /faults`.
    pub async fn set_faults(&self, faults: &FaultConfig) {
        self.client.set_faults(faults).await.unwrap_or_else(|e| panic!("PUT /faults: {e}"));
    }
}

/// Net amount charged for one order's ledger entries: charges minus refunds.
pub fn net_charged(entries: &[PaymentEntry]) -> i64 {
    entries
        .iter()
        .map(|e| match e.kind.as_str() {
            "charge" => e.amount_cents,
            "refund" => -e.amount_cents,
            other => panic!("unknown ledger entry kind {other:?}"),
        })
        .sum()
}
