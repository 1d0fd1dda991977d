//! The activities this process serves: which domains it runs, how a task's activity name
//! maps to a domain call, and how the call's result becomes the outcome reported to the
//! engine.
//!
//! This is the one place that reads task payloads (the order input, earlier steps' results,
//! static params) and applies injected faults. It never talks to the engine and never
//! touches a store directly; the domain modules own their data.

use crate::faults::Faults;
use crate::inventory::{self, Inventory};
use crate::notification::{self, Notification};
use crate::payment::{self, Payment};
use crate::risk;
use serde::Deserialize;
use shop_types::api::{ActivityTask, TaskOutcome};
use shop_types::history::ActivityError;
use shop_types::order::{errors, OrderInput, ReserveOutput};
use shop_types::{JsonText, QueueName, WorkflowId};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A store failed: the attempt may succeed later, so it is retryable.
pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";

/// The step whose output holds the amount to charge (see `workflows/order.toml`).
const RESERVE_STEP: &str = "reserve_stock";
/// Longest idempotency key accepted from the engine. Generous on purpose: the engine builds
/// keys from a workflow id (up to 128 bytes) and a step name.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1024;

/// A group of activities served from one task queue of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Inventory,
    Payment,
    Notification,
    /// The fraud check (`risk.score`): stateless, so it opens no store.
    Risk,
    /// A stateless activity, for testing many workers on one queue.
    Echo,
}

impl Domain {
    pub const ALL: [Domain; 5] = [Domain::Inventory, Domain::Payment, Domain::Notification, Domain::Risk, Domain::Echo];
    /// Served when `--activities` is not given.
    pub const DEFAULT: [Domain; 4] = [Domain::Inventory, Domain::Payment, Domain::Notification, Domain::Risk];

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Inventory => "inventory",
            Domain::Payment => "payment",
            Domain::Notification => "notification",
            Domain::Risk => "risk",
            Domain::Echo => "echo",
        }
    }

    /// Whether the domain keeps data (a tree of the worker's store); risk and echo do not.
    pub fn has_store(self) -> bool {
        matches!(self, Domain::Inventory | Domain::Payment | Domain::Notification)
    }

    /// The task queue this domain polls, named after it.
    pub fn queue(self) -> QueueName {
        QueueName::parse(self.as_str()).expect("domain names are valid queue names")
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown activity group {0:?}: expected inventory, payment, notification, risk or echo")]
pub struct UnknownDomain(String);

impl FromStr for Domain {
    type Err = UnknownDomain;
    fn from_str(text: &str) -> Result<Self, UnknownDomain> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownDomain(text.to_owned()))
    }
}

/// The domains this process serves, each present only when served.
#[derive(Debug)]
pub struct Activities {
    pub inventory: Option<Arc<Inventory>>,
    pub payment: Option<Arc<Payment>>,
    pub notification: Option<Arc<Notification>>,
    pub risk: bool,
    pub echo: bool,
    pub faults: Arc<Faults>,
}

/// A failed activity call, ready to report.
struct Failure(ActivityError);

impl Failure {
    fn permanent(error_type: &str, message: impl Into<String>) -> Self {
        Failure(ActivityError { error_type: error_type.to_owned(), message: message.into(), retryable: false })
    }

    fn bad_input(message: impl Into<String>) -> Self {
        Failure::permanent(errors::BAD_INPUT, message)
    }
}

macro_rules! domain_failure {
    ($($module:ident),*) => {$(
        impl From<$module::Error> for Failure {
            fn from(err: $module::Error) -> Self {
                if let $module::Error::Store(store_error) = &err {
                    tracing::error!(error = %crate::ErrorChain(store_error), "store failure");
                }
                Failure(ActivityError {
                    error_type: err.error_type().to_owned(),
                    message: err.to_string(),
                    retryable: err.is_retryable(),
                })
            }
        }
    )*};
}
domain_failure!(inventory, payment, notification);

/// The part of the order input the activities read.
struct Order {
    id: WorkflowId,
    input: OrderInput,
}

impl Activities {
    /// The domains served, in a stable order.
    pub fn domains(&self) -> Vec<Domain> {
        let served = [
            (Domain::Inventory, self.inventory.is_some()),
            (Domain::Payment, self.payment.is_some()),
            (Domain::Notification, self.notification.is_some()),
            (Domain::Risk, self.risk),
            (Domain::Echo, self.echo),
        ];
        served.into_iter().filter_map(|(domain, on)| on.then_some(domain)).collect()
    }

    /// Runs one attempt and returns what to report. Never panics on any payload.
    pub async fn execute(&self, task: &ActivityTask) -> TaskOutcome {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match self.dispatch(task).await {
            Ok(output) => TaskOutcome::Completed { output },
            Err(Failure(error)) => TaskOutcome::Failed { error },
        }
    }

    async fn dispatch(&self, task: &ActivityTask) -> Result<JsonText, Failure> {
        if task.activity == "echo.run" && self.echo {
            return Ok(echo(task));
        }
        if task.activity == "risk.score" && self.risk {
            // Stateless and deterministic: every attempt of an order gets the same answer,
            // so it needs no idempotency record.
            let order = order(task)?;
            return match risk::score(&order.input) {
                Ok(score) => Ok(to_json(&score)),
                Err(refused) => Err(Failure::permanent(refused.error_type(), refused.to_string())),
            };
        }
        let key = task.idempotency_key.as_str();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(Failure::bad_input(format!(
                "the idempotency key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} bytes"
            )));
        }
        match (task.activity.as_str(), &self.inventory, &self.payment, &self.notification) {
            ("inventory.reserve", Some(inventory), _, _) => {
                let order = order(task)?;
                if self.faults.is_poison(&order.input.shipping_address) {
                    // Deliberate: the injected poison pill behaves like a bug that panics on
                    // one input. The poll loop survives it and reports nothing, so the engine
                    // times the attempt out and retries it.
                    panic!("injected poison pill: order {} cannot be reserved", order.id);
                }
                let output = inventory.reserve(&order.id, &order.input.order_items, key).await?;
                Ok(to_json(&output))
            }
            ("inventory.release", Some(inventory), _, _) => {
                inventory.release(&order(task)?.id, key).await?;
                Ok(JsonText::null())
            }
            ("inventory.commit", Some(inventory), _, _) => {
                inventory.commit(&order(task)?.id, key).await?;
                Ok(JsonText::null())
            }
            ("payment.charge", _, Some(payment), _) => self.charge(payment, task, key).await,
            ("payment.refund", _, Some(payment), _) => {
                if self.faults.on_refund() {
                    tracing::info!("injected fault: refund fails");
                    return Err(Failure(ActivityError {
                        error_type: errors::PAYMENT_UNAVAILABLE.to_owned(),
                        message: "the payment provider cannot refund now (injected fault)".to_owned(),
                        retryable: true,
                    }));
                }
                payment.refund(&order(task)?.id, key).await?;
                Ok(JsonText::null())
            }
            ("notification.send", _, _, Some(outbox)) => {
                let order = order(task)?;
                let kind = param_kind(task)?;
                let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                let outgoing = notification::Outgoing {
                    order_id: &order.id,
                    kind: &kind,
                    customer: order.input.customer_id.as_ref(),
                    at_ms,
                    idempotency_key: key,
                };
                let message = outbox.send(&outgoing).await?;
                Ok(to_json(&serde_json::json!({ "message": message })))
            }
            (other, _, _, _) => Err(Failure::permanent(
                errors::UNKNOWN_ACTIVITY,
                format!(
                    "activity {other:?} is not served by this worker (serving {})",
                    self.domains().iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",")
                ),
            )),
        }
    }

    async fn charge(&self, payment: &Payment, task: &ActivityTask, key: &str) -> Result<JsonText, Failure> {
        let order = order(task)?;
        let amount_cents = reserved_total(task)?;
        let fault = self.faults.on_charge();
        if let Some(hang) = fault.hang {
            tracing::info!(?hang, "injected fault: payment hangs before charging");
            tokio::time::sleep(hang).await;
        }
        if fault.fail {
            tracing::info!("injected fault: payment provider unavailable");
            return Err(Failure(ActivityError {
                error_type: errors::PAYMENT_UNAVAILABLE.to_owned(),
                message: "the payment provider is unavailable (injected fault)".to_owned(),
                retryable: true,
            }));
        }
        let output = payment.charge(&order.id, amount_cents, &order.input.payment_method, key).await?;
        if let Some(hang) = fault.hang_after {
            tracing::info!(?hang, "injected fault: payment hangs after charging, before reporting");
            tokio::time::sleep(hang).await;
        }
        Ok(to_json(&output))
    }
}

fn order(task: &ActivityTask) -> Result<Order, Failure> {
    let input: OrderInput = task
        .input
        .deserialize_as()
        .map_err(|err| Failure::bad_input(format!("the task input is not an order: {err}")))?;
    let id =
        WorkflowId::parse(input.order_id.as_str()).map_err(|err| Failure::bad_input(format!("bad orderId: {err}")))?;
    Ok(Order { id, input })
}

/// The amount to charge: the total the reserve step computed.
fn reserved_total(task: &ActivityTask) -> Result<i64, Failure> {
    #[derive(Deserialize)]
    struct Results {
        reserve_stock: ReserveOutput,
    }
    task.results
        .deserialize_as::<Results>()
        .map(|results| results.reserve_stock.total_cents)
        .map_err(|err| Failure::bad_input(format!("results.{RESERVE_STEP}.totalCents is missing or invalid: {err}")))
}

fn param_kind(task: &ActivityTask) -> Result<String, Failure> {
    #[derive(Deserialize)]
    struct Params {
        kind: String,
    }
    task.params
        .deserialize_as::<Params>()
        .map(|params| params.kind)
        .map_err(|err| Failure::bad_input(format!("params.kind is missing or invalid: {err}")))
}

fn echo(task: &ActivityTask) -> JsonText {
    to_json(&serde_json::json!({
        "input": task.input.to_value(),
        "params": task.params.to_value(),
        "attempt": task.attempt,
    }))
}

fn to_json<T: serde::Serialize>(output: &T) -> JsonText {
    let value = serde_json::to_value(output).expect("activity outputs are plain data that always serialize");
    JsonText::from_value(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;
    use shop_types::order::FaultConfig;
    use shop_types::{StepRef, TaskToken};

    fn activities(faults: FaultConfig) -> Activities {
        Activities {
            inventory: Some(Arc::new(Inventory::open(store::temporary()).expect("opens"))),
            payment: Some(Arc::new(Payment::open(store::temporary()).expect("opens"))),
            notification: Some(Arc::new(Notification::open(store::temporary()).expect("opens"))),
            risk: true,
            echo: true,
            faults: Arc::new(Faults::new(faults).expect("valid faults")),
        }
    }

    fn task(activity: &str, input: &str, results: &str, params: &str) -> ActivityTask {
        let workflow_id = WorkflowId::parse("o-1").expect("valid");
        ActivityTask {
            token: TaskToken { workflow_id: workflow_id.clone(), step: StepRef::forward(0), attempt: 2, mac: None },
            workflow_id,
            workflow_type: "order".parse().expect("valid"),
            step_name: "step".parse().expect("valid"),
            activity: activity.parse().expect("valid"),
            attempt: 2,
            idempotency_key: format!("o-1/{activity}"),
            input: JsonText::parse(input).expect("valid json"),
            results: JsonText::parse(results).expect("valid json"),
            params: JsonText::parse(params).expect("valid json"),
            start_to_close_ms: 10_000,
            heartbeat_ms: None,
            traceparent: None,
        }
    }

    const ORDER: &str = r#"{"orderId":"o-1","orderItems":[{"productId":1,"quantity":2}],
        "shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;

    fn failure(outcome: TaskOutcome) -> ActivityError {
        match outcome {
            TaskOutcome::Failed { error } => error,
            TaskOutcome::Completed { output } => panic!("expected a failure, got {output}"),
        }
    }

    fn output(outcome: TaskOutcome) -> serde_json::Value {
        match outcome {
            TaskOutcome::Completed { output } => output.to_value(),
            TaskOutcome::Failed { error } => panic!("expected a completion, got {error:?}"),
        }
    }

    #[tokio::test]
    async fn the_saga_steps_chain_through_their_outputs() {
        let acts = activities(FaultConfig::default());
        let reserved = output(acts.execute(&task("inventory.reserve", ORDER, "{}", "{}")).await);
        let total = reserved["totalCents"].as_i64().expect("a total");
        let results = serde_json::json!({ "reserve_stock": reserved }).to_string();
        let charged = output(acts.execute(&task("payment.charge", ORDER, &results, "{}")).await);
        assert_eq!(charged["amountCents"].as_i64(), Some(total));
        output(acts.execute(&task("inventory.commit", ORDER, &results, "{}")).await);
        let sent = output(acts.execute(&task("notification.send", ORDER, "{}", r#"{"kind":"ORDER_CONFIRMED"}"#)).await);
        assert_eq!(sent["message"], "Order o-1 confirmed");
    }

    #[tokio::test]
    async fn charge_needs_the_reserved_total_and_notify_needs_a_kind() {
        let acts = activities(FaultConfig::default());
        let err = failure(acts.execute(&task("payment.charge", ORDER, "{}", "{}")).await);
        assert_eq!(err.error_type, errors::BAD_INPUT);
        assert!(!err.retryable);
        let err = failure(acts.execute(&task("notification.send", ORDER, "{}", "{}")).await);
        assert_eq!(err.error_type, errors::BAD_INPUT);
        let err = failure(acts.execute(&task("inventory.reserve", "[1,2]", "{}", "{}")).await);
        assert_eq!(err.error_type, errors::BAD_INPUT);
    }

    #[tokio::test]
    async fn injected_failures_are_retryable_and_leave_no_charge() {
        let acts = activities(FaultConfig { payment_fail_next: 1, ..FaultConfig::default() });
        let results = r#"{"reserve_stock":{"totalCents":1234}}"#;
        let err = failure(acts.execute(&task("payment.charge", ORDER, results, "{}")).await);
        assert_eq!(err.error_type, errors::PAYMENT_UNAVAILABLE);
        assert!(err.retryable);
        let payment = acts.payment.as_ref().expect("served");
        assert!(payment.ledger().is_empty());
        output(acts.execute(&task("payment.charge", ORDER, results, "{}")).await);
        assert_eq!(payment.ledger().len(), 1);
    }

    #[tokio::test]
    async fn unknown_and_unserved_activities_are_permanent_failures() {
        let mut acts = activities(FaultConfig::default());
        let err = failure(acts.execute(&task("inventory.teleport", ORDER, "{}", "{}")).await);
        assert_eq!(err.error_type, errors::UNKNOWN_ACTIVITY);
        assert!(!err.retryable);
        acts.payment = None;
        let results = r#"{"reserve_stock":{"totalCents":1}}"#;
        let err = failure(acts.execute(&task("payment.charge", ORDER, results, "{}")).await);
        assert_eq!(err.error_type, errors::UNKNOWN_ACTIVITY);
    }

    #[tokio::test]
    async fn echo_returns_its_input_params_and_attempt() {
        let acts = activities(FaultConfig::default());
        let echoed = output(acts.execute(&task("echo.run", r#"{"x":1}"#, "{}", r#"{"p":true}"#)).await);
        assert_eq!(echoed, serde_json::json!({ "input": {"x": 1}, "params": {"p": true}, "attempt": 2 }));
    }

    #[tokio::test]
    async fn risk_scores_an_order_or_refuses_it_for_good() {
        let mut acts = activities(FaultConfig::default());
        let scored = output(acts.execute(&task("risk.score", ORDER, "{}", "{}")).await);
        assert_eq!(scored["totalQuantity"], 2);
        assert!(scored["score"].as_u64().is_some());
        let suspicious = r#"{"orderId":"o-1","orderItems":[{"productId":1,"quantity":51}],
            "shippingAddress":"PO Box 7","paymentMethod":"CREDIT_CARD"}"#;
        let err = failure(acts.execute(&task("risk.score", suspicious, "{}", "{}")).await);
        assert_eq!(err.error_type, errors::FRAUD_SUSPECTED);
        assert!(!err.retryable);
        acts.risk = false;
        let err = failure(acts.execute(&task("risk.score", ORDER, "{}", "{}")).await);
        assert_eq!(err.error_type, errors::UNKNOWN_ACTIVITY);
    }

    #[test]
    fn domains_parse_case_insensitively() {
        assert_eq!("RISK".parse::<Domain>(), Ok(Domain::Risk));
        assert_eq!("Payment".parse::<Domain>(), Ok(Domain::Payment));
        assert!("shipping".parse::<Domain>().is_err());
    }
}
