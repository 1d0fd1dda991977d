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

/// The charge step as `workflows/order-v2.toml` declares it (card branch).
const CHARGE_V2: &str = "name = \"charge_payment\"\nactivity = \"payment.charge\"\nqueue = \"payment\"\nretry = { non_retryable = [\"PAYMENT_DECLINED\", \"BAD_INPUT\"] }\n";
/// The charge step in [`order_with_circuit`]: quick retries, enough attempts and budget to
/// outlast a provider outage while the breaker holds its tasks.
const CHARGE_CIRCUIT: &str = "name = \"charge_payment\"\nactivity = \"payment.charge\"\nqueue = \"payment\"\nretry = { max_attempts = 100, initial_interval = \"50ms\", max_interval = \"200ms\", non_retryable = [\"PAYMENT_DECLINED\", \"BAD_INPUT\"] }\ntimeouts = { schedule_to_close = \"10m\" }\n";
/// The breaker [`order_with_circuit`] declares for `payment.charge`.
pub const CHARGE_CIRCUIT_TABLE: &str = "\n[activities.\"payment.charge\".circuit]\nfailure_ratio = 0.5\nwindow = \"1m\"\nmin_calls = 5\nopen_for = \"1s\"\nhalf_open_probes = 1\n";

/// The repository's order saga v2 as `version`, with a circuit breaker on `payment.charge`
/// (opens at half of at least 5 calls failing within a minute, open for 1 s, one probe) and
/// a charge that retries quickly for long. A test variant, not a version 3 of the file: a
/// breaker's settings are a deployment's choice about its provider, and the production
/// definition's content hash (pinned by every run) should not change for a test's.
pub fn order_with_circuit(version: u32) -> String {
    let path = workflows_dir().join("order-v2.toml");
    let v2 = std::fs::read_to_string(&path).expect("read workflows/order-v2.toml");
    assert!(v2.contains("\nversion = 2\n"), "workflows/order-v2.toml declares version 2");
    assert!(v2.contains(CHARGE_V2), "workflows/order-v2.toml declares charge_payment as this helper expects");
    let mut variant =
        v2.replacen("\nversion = 2\n", &format!("\nversion = {version}\n"), 1).replacen(CHARGE_V2, CHARGE_CIRCUIT, 1);
    variant.push_str(CHARGE_CIRCUIT_TABLE);
    variant
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
