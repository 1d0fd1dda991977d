//! A poison pill: an activity that panics on one input.
//! Like every test here it starts its own stack and must never leave a process running.

use super::*;

/// The shipping address that makes `inventory.reserve` panic.
const POISON_ADDRESS: &str = "POISON";
/// Healthy orders placed behind the poison pill.
const NORMAL_ORDERS: usize = 10;
/// Products the healthy orders draw from (the default catalog has 100 units of each).
const NORMAL_PRODUCTS: [i64; 5] = [1, 2, 3, 4, 5];
/// Most units per healthy order.
const MAX_NORMAL_QUANTITY: i64 = 3;
/// The product the poison order asks for; none of the healthy orders touch it.
const POISON_PRODUCT: i64 = 9;
/// `max_attempts` of `reserve_stock` (the workflow default) in `workflows/order.toml`.
const RESERVE_MAX_ATTEMPTS: u32 = 6;
/// How the worker reports an activity that panicked.
const ACTIVITY_PANICKED: &str = "ACTIVITY_PANICKED";

/// An activity that panics on one input (a poison pill) fails its step through the normal
/// retry policy (ACTIVITY_PANICKED, retryable, up to `max_attempts`), so that one order
/// compensates and is cancelled; the worker survives every panic and confirms every other
/// order, with stock, money and notifications adding up.
#[tokio::test(flavor = "multi_thread")]
async fn poison_pill_cancels_its_own_order_and_the_worker_serves_the_rest() {
    let mut stack =
        Stack::start_with(EngineOptions::default(), WorkerOptions::with_args(["--poison-address", POISON_ADDRESS]))
            .await;
    let initial_stock = stack.admin.stock().await;

    let poison = PlacedOrder {
        order_id: "poison-pill".to_owned(),
        items: vec![(POISON_PRODUCT, 1)],
        payment_method: "CREDIT_CARD".to_owned(),
        expected_status: CANCELLED,
    };
    let mut body = order_body(Some(&poison.order_id), &poison.items, &poison.payment_method);
    body["shippingAddress"] = json!(POISON_ADDRESS);
    stack.api.place_order_ok(&body).await;

    let normal: Vec<PlacedOrder> = (0..NORMAL_ORDERS)
        .map(|i| PlacedOrder {
            order_id: format!("poison-normal-{i:02}"),
            items: vec![(NORMAL_PRODUCTS[i % NORMAL_PRODUCTS.len()], 1 + i as i64 % MAX_NORMAL_QUANTITY)],
            payment_method: "CREDIT_CARD".to_owned(),
            expected_status: CONFIRMED,
        })
        .collect();
    for order in &normal {
        stack.api.place_order_ok(&order_body(Some(&order.order_id), &order.items, &order.payment_method)).await;
    }

    for order in &normal {
        let view = stack.api.wait_order(&order.order_id).await;
        assert_eq!(view.status, CONFIRMED, "{}: reason {:?}", order.order_id, view.reason);
    }
    let view = stack.api.wait_order(&poison.order_id).await;
    assert_eq!(view.status, CANCELLED, "the poison pill's order compensates");

    let history = stack.api.history(&poison.order_id).await;
    assert_eq!(history_violations(&poison.order_id, &history), Vec::<String>::new());
    let expected: Vec<(u32, String, bool)> = (1..=RESERVE_MAX_ATTEMPTS)
        .map(|attempt| (attempt, ACTIVITY_PANICKED.to_owned(), attempt < RESERVE_MAX_ATTEMPTS))
        .collect();
    assert_eq!(
        failures(&step_events(&history, "reserve_stock")),
        expected,
        "every attempt panicked; the last failure is final"
    );
    assert_in_order(
        &event_labels(&history),
        &["StepFailed(reserve_stock)", "CompensationStarted", "StepCompleted(notify_cancelled)", "WorkflowCompensated"],
    );
    assert!(step_events(&history, "charge_payment").is_empty(), "nothing was charged for the poison pill");

    // The healthy orders took exactly their units; the poison product is untouched.
    let mut taken: HashMap<i64, i64> = HashMap::new();
    for order in &normal {
        for (product, quantity) in &order.items {
            *taken.entry(*product).or_default() += quantity;
        }
    }
    let now: HashMap<i64, (i64, i64)> =
        stack.admin.stock().await.into_iter().map(|p| (p.product_id, (p.stock, p.reserved))).collect();
    for before in &initial_stock {
        let expected = (before.stock - taken.get(&before.product_id).copied().unwrap_or(0), 0);
        assert_eq!(now.get(&before.product_id), Some(&expected), "product {}", before.product_id);
    }
    let mut all = normal;
    all.push(poison);
    assert_invariants(&stack.api, &stack.admin, &initial_stock, &all).await;

    // Six panics later the worker is the same process, still serving.
    assert_eq!(stack.worker.exit_status(), None, "the worker survived the panics");
    let health = stack.admin.get::<serde_json::Value>("/healthz").await;
    assert!(health.is_ok(), "the worker still answers: {health:?}");
}
