//! Unit tests of the benchmark's plan and parsing.

use super::*;
use shop_types::order::PlaceOrderRequest;

#[test]
fn the_mix_must_add_up() {
    assert_eq!(parse_mix("80,10,10"), Ok(Mix { confirmed: 80, out_of_stock: 10 }));
    assert!(parse_mix("80,10").is_err());
    assert!(parse_mix("80,10,11").is_err());
    assert!(parse_mix("a,b,c").is_err());
}

#[test]
fn plans_follow_the_mix_and_the_seed() -> Result<()> {
    let mix = Mix { confirmed: 80, out_of_stock: 10 };
    let plan = plan_orders(1000, mix, 7)?;
    let count = |e: Expected| plan.iter().filter(|o| o.expected == e).count();
    assert_eq!((count(Expected::Confirmed), count(Expected::OutOfStock), count(Expected::Declined)), (800, 100, 100));
    for order in plan.iter().filter(|o| o.expected == Expected::OutOfStock) {
        let request: PlaceOrderRequest = serde_json::from_slice(&order.body)?;
        assert_eq!(request.order_items[0].product_id, EMPTY_PRODUCT);
    }
    let again = plan_orders(1000, mix, 7)?;
    assert!(plan.iter().zip(&again).all(|(a, b)| a.body == b.body));
    Ok(())
}
