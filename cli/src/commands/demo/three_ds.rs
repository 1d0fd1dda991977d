//! The demo's 3-D Secure orders: one confirmed by the customer's `payment_confirmed` signal,
//! one never answered and cancelled by its wait's timeout. Both run on a short-timeout
//! variant of order v2 (`shop_types::short_order`) that the demo registers in its own
//! temporary stack, as the next version of `order`, after every other sample order has
//! finished, so no other case runs on it. It must never register anything in a stack that
//! is not the demo's own.

use super::*;
use shop_types::api::InFlightView;
use shop_types::order::{CARD_3DS, ORDER_WORKFLOW_TYPE};
use shop_types::short_order::ShortOrderV2;
use shop_types::JsonText;

/// How long the variant's 3-D Secure wait lasts before the order is cancelled: long enough
/// for the demo's own signal to arrive first in case (f), short enough to watch case (g).
const THREE_DS_TIMEOUT: &str = "3s";
/// The signal that confirms a 3-D Secure payment (`workflows/order-v2.toml`).
pub(super) const PAYMENT_CONFIRMED: &str = "payment_confirmed";
/// How often the demo looks whether case (f)'s wait has opened.
const WAIT_POLL: Duration = Duration::from_millis(100);

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "f",
            title: "3-D Secure confirmed by a signal",
            id: "demo-f-3ds-confirmed",
            items: &[(7, 1)],
            payment_method: CARD_3DS,
            charge_failures: 0,
            signal: Some(PAYMENT_CONFIRMED),
            expected: Outcome::new(CONFIRMED, None, 0),
        },
        Case {
            label: "g",
            title: "3-D Secure unanswered, cancelled by its timeout",
            id: "demo-g-3ds-timeout",
            items: &[(8, 1)],
            payment_method: CARD_3DS,
            charge_failures: 0,
            signal: None,
            expected: Outcome::new(CANCELLED, Some(WAIT_TIMEOUT), 0),
        },
    ]
}

/// Registers the short-timeout variant of order v2 as the next version of `order`; returns
/// that version.
pub(super) async fn register_variant(ctx: &Context) -> Result<u32> {
    let definitions = ctx.client.engine().definitions().await?.body.definitions;
    let orders = || definitions.iter().filter(|d| d.name == ORDER_WORKFLOW_TYPE);
    let v2 = orders()
        .find(|d| d.version == 2)
        .ok_or_else(|| anyhow!("the demo's engine has no order v2 to build the 3-D Secure variant from"))?;
    let version = orders().map(|d| d.version).max().unwrap_or(2).saturating_add(1);
    let variant = ShortOrderV2 { version, wait_timeout: THREE_DS_TIMEOUT, cancel_window: "0s" };
    let text = variant.build(&v2.source)?;
    ctx.client.engine().register_definition(&text).await.context("cannot register the short-timeout order")?;
    Ok(version)
}

/// Places a 3-D Secure order; sends its signal (if any) once its wait is open, as the
/// payment provider would after the customer's answer; and waits for it to be final.
pub(super) async fn run_case(ctx: &Context, case: &Case) -> Result<OrderView> {
    let request = PlaceOrderRequest {
        order_id: Some(case.id.to_owned()),
        order_items: order_items(case.items),
        shipping_address: ADDRESS.to_owned(),
        payment_method: case.payment_method.to_owned(),
        customer_id: None,
    };
    order::place_order(ctx, &request).await?;
    if let Some(signal) = case.signal {
        wait_until_waiting(ctx, case.id).await?;
        let key = format!("demo:{}:{signal}", case.id);
        // A signal's payload is a JSON object; the provider's answer carries nothing more.
        let payload = JsonText::parse("{}")?;
        ctx.client.engine().signal(case.id, signal, &key, &payload).await?;
        output::note(&format!("({}) sent {signal} to {}", case.label, case.id));
    }
    Ok(ctx.client.engine().order(case.id, Some(FINAL_WAIT)).await?.body)
}

/// Waits (at most [`FINAL_WAIT`]) until run `id` shows an open wait.
async fn wait_until_waiting(ctx: &Context, id: &str) -> Result<()> {
    let deadline = Instant::now() + FINAL_WAIT;
    loop {
        let view = ctx.client.engine().workflow(id, None).await?.body;
        if view.waiting_for.iter().any(|w| matches!(w, InFlightView::Wait { .. })) {
            return Ok(());
        }
        if view.status.is_terminal() || Instant::now() >= deadline {
            return Err(anyhow!("{id} never waited for its 3-D Secure answer (it is {})", view.status.as_str()));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// What a 3-D Secure order's wait saw, in the words the judge compares.
pub(super) fn wait_summary(history: &[HistoryEventView]) -> String {
    let signals: Vec<&str> = history
        .iter()
        .filter_map(|e| match &e.event {
            EventKind::SignalReceived { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let end = if history.iter().any(|e| matches!(e.event, EventKind::WaitCompleted { .. })) {
        "wait completed"
    } else if history.iter().any(|e| matches!(e.event, EventKind::WaitTimedOut { .. })) {
        "wait timed out"
    } else {
        "no wait ended"
    };
    let signals = if signals.is_empty() { "no signal".to_owned() } else { signals.join(" + ") };
    format!("{signals} received, {end}")
}

/// What [`wait_summary`] must say for `case`, from its inputs.
pub(super) fn expected_wait(case: &Case) -> String {
    match case.signal {
        Some(signal) => format!("{signal} received, wait completed"),
        None => "no signal received, wait timed out".to_owned(),
    }
}
