//! Variants of the repository's definitions that tests register to reach a path quickly,
//! built from the real files so they never drift from them.

use crate::process::workflows_dir;

/// `max_attempts` of the refund compensation in [`order_with_quick_refund`].
pub const QUICK_REFUND_MAX_ATTEMPTS: u32 = 3;
/// The refund compensation as `workflows/order.toml` declares it, and as the variant does.
const REFUND_COMPENSATION_V1: &str =
    "activity = \"payment.refund\"\nqueue = \"payment\"\nretry = { max_attempts = 20, max_interval = \"10s\" }";
const REFUND_COMPENSATION_QUICK: &str = "activity = \"payment.refund\"\nqueue = \"payment\"\nretry = { max_attempts = 3, initial_interval = \"10ms\", max_interval = \"20ms\" }";

/// The repository's order saga v1 as `version`, with a refund that gives up after
/// [`QUICK_REFUND_MAX_ATTEMPTS`] quick attempts (so a refund that keeps failing parks the run
/// at once); everything else as in version 1.
pub fn order_with_quick_refund(version: u32) -> String {
    let path = workflows_dir().join("order.toml");
    let v1 = std::fs::read_to_string(&path).expect("read workflows/order.toml");
    assert!(v1.contains("\nversion = 1\n"), "workflows/order.toml declares version 1");
    assert!(v1.contains(REFUND_COMPENSATION_V1), "workflows/order.toml declares the refund as this helper expects");
    v1.replacen("\nversion = 1\n", &format!("\nversion = {version}\n"), 1).replacen(
        REFUND_COMPENSATION_V1,
        REFUND_COMPENSATION_QUICK,
        1,
    )
}

/// The confirm step as `workflows/order.toml` declares it.
const CONFIRM_ACTIVITY: &str = "activity = \"inventory.commit\"";
/// An activity no worker serves: the inventory worker fails it for good (`UNKNOWN_ACTIVITY`).
const CONFIRM_UNSERVED: &str = "activity = \"inventory.unserved\"";

/// [`order_with_quick_refund`] whose confirm step fails for good after the payment was
/// charged, so every order compensates a real charge: a refund that keeps failing parks it
/// with money to give back.
pub fn order_failing_after_charge(version: u32) -> String {
    let quick = order_with_quick_refund(version);
    assert!(quick.contains(CONFIRM_ACTIVITY), "workflows/order.toml declares the confirm as this helper expects");
    quick.replacen(CONFIRM_ACTIVITY, CONFIRM_UNSERVED, 1)
}
