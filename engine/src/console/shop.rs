//! The shop beside a run: on an order's run page, that order's products in stock (with the
//! units reserved), its payments and its notifications, read from the workers' admin APIs
//! (`--worker-admin URL`, repeatable) with the engine's admin credential. The run page's
//! script fetches this panel (`/console/runs/{id}/shop`) once the page is shown.
//!
//! It must never make the run page fail: no worker configured, a worker down or refusing
//! is said plainly in the panel (with a 200). It only reads the workers' admin APIs, never
//! changes them, and never shows the credential it calls them with.

use super::page::html_response;
use super::session::Session;
use crate::api::auth::{check_access, Access};
use crate::api::{workflow_view, ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};
use shop_client::{Client, Options, Service};
use shop_types::auth::BearerToken;
use shop_types::order::{NotificationEntry, OrderInput, PaymentEntry, Product};
use shop_types::WorkflowId;
use std::time::Duration;

/// How long the panel waits for one worker's answer before it says the worker is down.
pub const WORKER_ADMIN_TIMEOUT_MS: u64 = 2_000;
/// Most workers the engine asks (`--worker-admin` given more often is refused at start).
pub const MAX_WORKER_ADMINS: usize = 16;

/// The workers' admin APIs the console reads, each with the engine's admin credential.
#[derive(Debug, Clone, Default)]
pub struct WorkerAdmins {
    clients: Vec<Client>,
}

/// Why the workers' admin APIs cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkerAdminError {
    #[error("--worker-admin is given {0} times; at most {MAX_WORKER_ADMINS}")]
    TooMany(usize),
    #[error("--worker-admin {url}: {reason}")]
    Url { url: String, reason: String },
}

impl WorkerAdmins {
    /// Clients of `urls`, sending `token` (the engine's admin credential; none when open).
    pub fn new(urls: &[String], token: Option<&BearerToken>) -> Result<WorkerAdmins, WorkerAdminError> {
        if urls.len() > MAX_WORKER_ADMINS {
            return Err(WorkerAdminError::TooMany(urls.len()));
        }
        let timeout = Duration::from_millis(WORKER_ADMIN_TIMEOUT_MS);
        let options = Options { connect_timeout: timeout, request_timeout: timeout, ..Options::default() };
        let clients = urls
            .iter()
            .map(|url| {
                let error = |e: shop_client::Error| WorkerAdminError::Url { url: url.clone(), reason: e.to_string() };
                Client::new(Service::Worker, url, options.clone()).map_err(error)?.with_token(token).map_err(error)
            })
            .collect::<Result<_, _>>()?;
        Ok(WorkerAdmins { clients })
    }
}

/// What one worker says about an order: each part, or why that part could not be read (a
/// worker may serve only some of the shop's domains, or be down).
struct WorkerPanel {
    base: String,
    stock: Result<Vec<Product>, String>,
    payments: Result<Vec<PaymentEntry>, String>,
    notifications: Result<Vec<NotificationEntry>, String>,
}

async fn read_worker(client: &Client, order_id: &str, products: &[i64]) -> WorkerPanel {
    let (stock, payments, notifications) = tokio::join!(client.stock(), client.payments(), client.notifications());
    WorkerPanel {
        base: client.base_str().to_owned(),
        stock: stock
            .map(|r| r.body.into_iter().filter(|p| products.contains(&p.product_id)).collect())
            .map_err(|e| e.to_string()),
        payments: payments
            .map(|r| r.body.into_iter().filter(|p| p.order_id == order_id).collect())
            .map_err(|e| e.to_string()),
        notifications: notifications
            .map(|r| r.body.into_iter().filter(|n| n.order_id == order_id).collect())
            .map_err(|e| e.to_string()),
    }
}

/// `GET /console/runs/{id}/shop`: the panel; 200 whatever the workers say.
pub(crate) async fn panel(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let found = || -> Result<Option<OrderInput>, ApiError> {
        check_access(&session.principal, Access::Client)?;
        let id = WorkflowId::parse(id)?;
        let view =
            workflow_view(&state, &id)?.ok_or_else(|| ApiError::not_found(format!("workflow {id} not found")))?;
        Ok(serde_json::from_str::<OrderInput>(view.input.as_str()).ok())
    };
    let order = match found() {
        Ok(order) => order,
        Err(error) => return error.into_response(),
    };
    let markup = match order {
        None => html! { p.hint { "This run's input is not an order: no shop to show." } },
        Some(_) if state.worker_admins.clients.is_empty() => html! {
            p.problem data-testid="shop-none" { "No worker admin API is configured: start the engine with --worker-admin URL to see the shop here." }
        },
        Some(order) => {
            let products: Vec<i64> = order.order_items.iter().map(|item| item.product_id).collect();
            let mut panels = Vec::new();
            for client in &state.worker_admins.clients {
                panels.push(read_worker(client, &order.order_id, &products).await);
            }
            render(&order, &panels)
        }
    };
    html_response(StatusCode::OK, markup)
}

fn render(order: &OrderInput, panels: &[WorkerPanel]) -> Markup {
    html! {
        @for panel in panels {
            div.worker data-worker=(panel.base) {
                h3 { "Worker " code { (panel.base) } }
                h4 { "Stock of its products" }
                @match &panel.stock {
                    Err(why) => (unreadable(why)),
                    Ok(stock) => table data-testid="shop-stock" {
                        thead { tr { th { "Product" } th { "Ordered" } th { "In stock" } th { "Reserved (all orders)" } } }
                        tbody { @for item in &order.order_items {
                            @let product = stock.iter().find(|p| p.product_id == item.product_id);
                            tr { td { (item.product_id) @if let Some(p) = product { " " (p.name) } } td { (item.quantity) }
                                td { @if let Some(p) = product { (p.stock) } @else { "-" } }
                                td { @if let Some(p) = product { (p.reserved) } @else { "-" } } }
                        } }
                    },
                }
                h4 { "Payments" }
                @match &panel.payments {
                    Err(why) => (unreadable(why)),
                    Ok(payments) if payments.is_empty() => p.hint { "none" },
                    Ok(payments) => table data-testid="shop-payments" { tbody { @for p in payments {
                        tr { td { (p.kind) } td { (p.amount_cents) " cents" } td { code { (p.idempotency_key) } } }
                    } } },
                }
                h4 { "Notifications" }
                @match &panel.notifications {
                    Err(why) => (unreadable(why)),
                    Ok(notifications) if notifications.is_empty() => p.hint { "none" },
                    Ok(notifications) => table data-testid="shop-notifications" { tbody { @for n in notifications {
                        tr { td { (n.kind) } td { (n.message) } }
                    } } },
                }
            }
        }
    }
}

fn unreadable(why: &str) -> Markup {
    html! { p.problem data-testid="shop-down" { "Cannot be read from this worker now: " (why) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_of_workers_is_taken() {
        let urls = |n: usize| (0..n).map(|i| format!("http://127.0.0.1:{}", 9_000 + i)).collect::<Vec<_>>();
        assert_eq!(WorkerAdmins::new(&urls(MAX_WORKER_ADMINS), None).expect("at the limit").clients.len(), 16);
        assert!(matches!(WorkerAdmins::new(&urls(MAX_WORKER_ADMINS + 1), None), Err(WorkerAdminError::TooMany(17))));
        assert!(matches!(WorkerAdmins::new(&["not a url".into()], None), Err(WorkerAdminError::Url { .. })));
    }
}
