//! `for_each = { items = "/input/orderItems", max_concurrency = 4, tolerated_failures = 0 }`
//! on an activity step: one instance of the activity per item of the array the run's context
//! holds at `items`, at most `max_concurrency` in flight at once.
//!
//! This module owns the declared shape, its validation and limits, and how instances are
//! addressed. It must never evaluate the pointer (the state does, once, when the step starts)
//! and never change the stored `StepRef` format: an instance is named by an ordinary
//! `StepRef` whose index lies in a range no declared step can use.
//!
//! Addressing: the k-th `for_each` step of a definition (in forward-step order) has its
//! instance i at forward index `FOR_EACH_REF_BASE + k * MAX_FOR_EACH_ITEMS + i`, and that
//! instance's compensation (when the step declares one) at the same index in the
//! compensation phase. Histories and task tokens carry these refs unchanged
//! (`f32771/1` is attempt 1 of item 3 of the first `for_each`).

use super::predicate::check_pointer;
use serde::Deserialize;

/// Most items one `for_each` runs: an array holding more fails the step when it starts.
pub const MAX_FOR_EACH_ITEMS: usize = 256;
/// Highest `max_concurrency` a `for_each` may declare.
pub const MAX_FOR_EACH_CONCURRENCY: u32 = 32;
/// Most `for_each` steps one definition declares (their instances share the ref range).
pub const MAX_FOR_EACH_STEPS: usize = 8;
/// The first step index of instance refs: far above any declared step's index (at most
/// `MAX_STEPS` on the main line plus `MAX_STEPS` per branch), and the whole range,
/// `MAX_FOR_EACH_STEPS * MAX_FOR_EACH_ITEMS` indices, fits below `u16::MAX`.
pub const FOR_EACH_REF_BASE: u16 = 32_768;
/// The params keys an instance's task gets its item and its index under.
pub const ITEM_PARAM: &str = "item";
pub const INDEX_PARAM: &str = "index";

const _: () = assert!(FOR_EACH_REF_BASE as usize + MAX_FOR_EACH_STEPS * MAX_FOR_EACH_ITEMS <= u16::MAX as usize);

/// A step's `for_each`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ForEach {
    /// JSON Pointer into the run's context (`/input/...` or `/steps/<name>/...`).
    pub items: String,
    pub max_concurrency: u32,
    /// Instances that may fail for good while the step still completes (their output is
    /// `null`); one more fails the step.
    pub tolerated_failures: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForEach {
    items: String,
    max_concurrency: Option<u32>,
    tolerated_failures: Option<u32>,
}

impl RawForEach {
    /// Validates a `for_each` of a step with the given traits.
    pub(super) fn resolve(
        &self,
        step: &super::StepDef,
        in_branch: bool,
        params_keys: &mut dyn Iterator<Item = &String>,
        step_names: &dyn Fn(&str) -> bool,
    ) -> Result<ForEach, String> {
        if !matches!(step.construct, super::Construct::Activity { .. }) {
            return Err("for_each belongs to an activity step".into());
        }
        if in_branch {
            return Err("a for_each cannot be inside a branch or after compensation".into());
        }
        if step.pivot {
            return Err("a for_each step cannot be the pivot (its instances finish one by one)".into());
        }
        if step.on_failure != super::OnFailure::Compensate {
            return Err("a for_each step takes tolerated_failures, not on_failure".into());
        }
        check_pointer(&self.items, step_names).map_err(|r| format!("for_each items: {r}"))?;
        let max_concurrency = self.max_concurrency.unwrap_or(1);
        if !(1..=MAX_FOR_EACH_CONCURRENCY).contains(&max_concurrency) {
            return Err(format!("for_each max_concurrency must be between 1 and {MAX_FOR_EACH_CONCURRENCY}"));
        }
        let tolerated_failures = self.tolerated_failures.unwrap_or(0);
        if tolerated_failures as usize >= MAX_FOR_EACH_ITEMS {
            return Err(format!("for_each tolerated_failures must be below {MAX_FOR_EACH_ITEMS}"));
        }
        for key in params_keys {
            if key == ITEM_PARAM || key == INDEX_PARAM {
                return Err(format!("params.{key} is where a for_each instance gets its item: declare another name"));
            }
        }
        Ok(ForEach { items: self.items.clone(), max_concurrency, tolerated_failures })
    }
}

/// Where an instance ref's index points: (the ordinal of its `for_each` step, the item).
pub fn decode_instance(index: u16) -> Option<(usize, usize)> {
    let offset = usize::from(index.checked_sub(FOR_EACH_REF_BASE)?);
    let ordinal = offset / MAX_FOR_EACH_ITEMS;
    (ordinal < MAX_FOR_EACH_STEPS).then_some((ordinal, offset % MAX_FOR_EACH_ITEMS))
}

/// The ref index of item `item` of the `ordinal`-th `for_each` step.
pub fn instance_index(ordinal: usize, item: usize) -> Option<u16> {
    if ordinal >= MAX_FOR_EACH_STEPS || item >= MAX_FOR_EACH_ITEMS {
        return None;
    }
    u16::try_from(usize::from(FOR_EACH_REF_BASE) + ordinal * MAX_FOR_EACH_ITEMS + item).ok()
}
