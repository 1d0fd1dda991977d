//! `shopctl order place|get|list|cancel|confirm-payment|fail-payment`: the seed-compatible
//! order API (`/api/orders`), and the payment signals of order v2.
//!
//! Owns the order arguments (`--item PRODUCT:QTY`) and how orders are shown. It checks the
//! documented limits before sending so a typo fails fast, but the engine stays the judge.

use super::{note_next_page, parse_wait, Context};
use crate::output::{self, or_dash, Table};
use anyhow::{anyhow, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use shop_client::engine::ListQuery;
use shop_types::limits::{MAX_LINE_QUANTITY, MAX_LIST_LIMIT, MAX_ORDER_LINES};
use shop_types::order::{OrderItem, OrderView, PlaceOrderRequest};
use shop_types::WorkflowId;
use std::time::Duration;

const DEFAULT_PAYMENT_METHOD: &str = "CREDIT_CARD";
const DEFAULT_ADDRESS: &str = "1 Market Street, Springfield";

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Place an order; with --wait, wait for its final status and show that.
    Place(PlaceArgs),
    /// Show one order.
    Get {
        id: WorkflowId,
        /// Wait up to this long for the order to be final (e.g. 30s).
        #[arg(long, value_parser = parse_wait)]
        wait: Option<Duration>,
    },
    /// List orders, newest first as the engine pages them.
    List {
        #[arg(long, value_enum, ignore_case = true)]
        status: Option<OrderStatus>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT as i64))]
        limit: Option<u32>,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel an order that is not final yet (what it did so far is undone).
    Cancel { id: WorkflowId },
    /// Confirm an order's payment: `payment_received` for a bank transfer,
    /// `payment_confirmed` (3-D Secure) otherwise. Sent once per order (its key is
    /// `confirm-payment:<ID>`), so running it again changes nothing.
    ConfirmPayment { id: WorkflowId },
    /// Fail a 3-D Secure order's payment (`payment_failed`): it is cancelled and refunded.
    /// Sent once per order (key `fail-payment:<ID>`).
    FailPayment { id: WorkflowId },
}

/// The signals of order v2 (`workflows/order-v2.toml`).
const PAYMENT_CONFIRMED: &str = "payment_confirmed";
const PAYMENT_FAILED: &str = "payment_failed";
const PAYMENT_RECEIVED: &str = "payment_received";

#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// An order line as PRODUCT:QUANTITY (e.g. 1:2); repeat for more lines.
    #[arg(long = "item", required = true, value_parser = parse_item)]
    items: Vec<OrderItem>,
    #[arg(long, default_value = DEFAULT_PAYMENT_METHOD)]
    payment_method: String,
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    address: String,
    /// The order's ID; placing the same ID again returns the existing order.
    #[arg(long)]
    id: Option<WorkflowId>,
    /// The customer the order is for (a client token or admin acting for its customers; a
    /// JWT with a `sub` is that customer already).
    #[arg(long)]
    customer: Option<shop_types::CustomerId>,
    /// Wait up to this long for the final status (e.g. 30s).
    #[arg(long, value_parser = parse_wait)]
    wait: Option<Duration>,
}

/// The order statuses the API filters on.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
    Failed,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Failed => "FAILED",
        }
    }
}

/// The status of an order that is not final yet.
const PENDING: &str = "PENDING";

pub async fn run(command: OrderCommand, ctx: &Context) -> Result<()> {
    match command {
        OrderCommand::Place(args) => place(args, ctx).await,
        OrderCommand::Get { id, wait } => {
            let reply = ctx.client.engine().order(id.as_str(), wait).await?;
            ctx.show(&reply, show_order)
        }
        OrderCommand::List { status, limit, cursor } => {
            let query =
                ListQuery { status: status.map(|s| s.as_str().to_owned()), limit, cursor, ..ListQuery::default() };
            let reply = ctx.client.engine().orders(&query).await?;
            ctx.show(&reply, |list| {
                let mut table = Table::with_header(&["ORDER", "STATUS", "ITEMS", "PAYMENT", "CREATED", "REASON"]);
                for order in &list.orders {
                    table.row(vec![
                        order.order_id.clone(),
                        order.status.clone(),
                        items(&order.order_items),
                        order.payment_method.clone(),
                        output::timestamp(order.created_at_ms),
                        or_dash(order.reason.as_deref()),
                    ]);
                }
                table.print()
            })?;
            note_next_page(reply.body.next_cursor.as_deref());
            Ok(())
        }
        OrderCommand::Cancel { id } => {
            let reply = ctx.client.engine().cancel_order(id.as_str()).await?;
            ctx.show(&reply, show_order)
        }
        OrderCommand::ConfirmPayment { id } => {
            let order = ctx.client.engine().order(id.as_str(), None).await?;
            let name = match order.body.payment_method.as_str() {
                shop_types::order::BANK_TRANSFER => PAYMENT_RECEIVED,
                _ => PAYMENT_CONFIRMED,
            };
            let key = format!("confirm-payment:{id}");
            super::workflow::send_signal(ctx, &id, name, &key, &shop_types::JsonText::object([])).await
        }
        OrderCommand::FailPayment { id } => {
            let key = format!("fail-payment:{id}");
            super::workflow::send_signal(ctx, &id, PAYMENT_FAILED, &key, &shop_types::JsonText::object([])).await
        }
    }
}

async fn place(args: PlaceArgs, ctx: &Context) -> Result<()> {
    if args.items.len() > MAX_ORDER_LINES {
        return Err(anyhow!("an order has at most {MAX_ORDER_LINES} lines; got {}", args.items.len()));
    }
    let request = PlaceOrderRequest {
        order_id: args.id.map(|id| id.as_str().to_owned()),
        order_items: args.items,
        shipping_address: args.address,
        payment_method: args.payment_method,
        customer_id: args.customer,
    };
    let placed = place_order(ctx, &request).await?;
    if placed.status == shop_client::StatusCode::OK {
        output::note(&format!("order {} already existed; showing it", placed.body.order_id));
    }
    let Some(wait) = args.wait else {
        return ctx.show(&placed, show_order);
    };
    let id = placed.body.order_id;
    let reply = ctx
        .client
        .engine()
        .order(&id, Some(wait))
        .await
        .with_context(|| format!("order {id} was placed, but waiting for it failed"))?;
    if reply.body.status == PENDING {
        output::note(&format!("order {id} is still {PENDING} after {}", output::duration(wait)));
    }
    ctx.show(&reply, show_order)
}

/// `POST /api/orders`; shared with the demo, which places orders the same way a user does.
pub async fn place_order(ctx: &Context, request: &PlaceOrderRequest) -> Result<crate::client::Reply<OrderView>> {
    Ok(ctx.client.engine().place_order(request).await?)
}

fn show_order(order: &OrderView) -> Result<()> {
    let mut table = Table::without_header();
    table.row(vec!["order".into(), order.order_id.clone()]);
    table.row(vec!["status".into(), order.status.clone()]);
    if let Some(reason) = &order.reason {
        table.row(vec!["reason".into(), reason.clone()]);
    }
    table.row(vec!["items".into(), items(&order.order_items)]);
    table.row(vec!["payment".into(), order.payment_method.clone()]);
    table.row(vec!["address".into(), order.shipping_address.clone()]);
    table.row(vec!["created".into(), output::timestamp(order.created_at_ms)]);
    if let Some(closed) = order.closed_at_ms {
        table.row(vec!["closed".into(), output::timestamp(closed)]);
    }
    table.print()
}

/// Order lines in the `--item` syntax, so what is shown can be pasted back.
fn items(lines: &[OrderItem]) -> String {
    lines.iter().map(|line| format!("{}:{}", line.product_id, line.quantity)).collect::<Vec<_>>().join(" ")
}

/// Parses `PRODUCT:QUANTITY`, with the quantity inside the documented bounds.
fn parse_item(text: &str) -> Result<OrderItem, String> {
    let (product, quantity) =
        text.split_once(':').ok_or_else(|| format!("{text:?}: expected PRODUCT:QUANTITY, e.g. 1:2"))?;
    let product_id: i64 = product.trim().parse().map_err(|_| format!("{text:?}: {product:?} is not a product id"))?;
    let quantity: i64 = quantity.trim().parse().map_err(|_| format!("{text:?}: {quantity:?} is not a quantity"))?;
    if !(1..=MAX_LINE_QUANTITY).contains(&quantity) {
        return Err(format!("{text:?}: the quantity must be 1..={MAX_LINE_QUANTITY}"));
    }
    Ok(OrderItem { product_id, quantity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_and_print_in_the_same_syntax() {
        let lines = vec![parse_item("1:2").expect("valid"), parse_item(" 3 : 1 ").expect("valid")];
        assert_eq!(items(&lines), "1:2 3:1");
    }

    #[test]
    fn items_outside_the_limits_are_refused() {
        for bad in ["1", "x:1", "1:y", "1:0", "1:1001", "1:-3"] {
            assert!(parse_item(bad).is_err(), "{bad}");
        }
        assert!(parse_item("1:1000").is_ok());
    }
}
