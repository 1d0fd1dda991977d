//! Child workflows: `workflow = { name = "...", version = N }` on a main-line step, which runs
//! another registered workflow as a run of its own and completes with its output.
//!
//! This module owns the construct's declared shape, its validation and the rules the decider
//! and the core share: how a child's run id is derived (`<parent>.<step>`) and how deep
//! children may nest. It must never look anything up in the registry (a child's definition
//! is found when the step starts, not when its parent is loaded), nor evaluate anything.

use serde::Deserialize;
use shop_types::limits::MAX_ID_LEN;
use shop_types::{WorkflowId, WorkflowType};

/// How many levels of children a run may have below it: a run nobody started is at depth 0,
/// its child at 1, ... A child step whose child would be deeper than this fails for good
/// when it would start (definitions reference each other by name, so this cannot be checked
/// when one is loaded).
pub const MAX_CHILD_DEPTH: u32 = 4;

/// The separator between a parent's id and its step's name in a child's run id.
pub const CHILD_ID_SEPARATOR: char = '.';

/// `workflow = { name = "...", version = N }`, as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChild {
    name: String,
    version: Option<u32>,
}

/// A child workflow step.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    /// The child's workflow type.
    pub name: WorkflowType,
    /// The version to run; `None` is the latest registered when the step starts (the
    /// version taken is recorded in `ChildStarted`).
    pub version: Option<u32>,
}

impl RawChild {
    /// Validates a child step named `step`: a main-line step (children are not started from
    /// branches), with a valid type and a positive version, whose derived child ids can fit
    /// [`MAX_ID_LEN`] for some parent id.
    pub(super) fn resolve(&self, step: &str, in_branch: bool) -> Result<Child, String> {
        if in_branch {
            return Err("a child workflow step must be on the main line, not in a branch".into());
        }
        let name = WorkflowType::parse(self.name.as_str()).map_err(|e| format!("workflow name: {e}"))?;
        if self.version == Some(0) {
            return Err("workflow version must be at least 1".into());
        }
        // The shortest parent id is one byte: `x.<step>` must fit, or no child id ever can.
        if 2 + step.len() > MAX_ID_LEN {
            return Err(format!(
                "a child's run id is <parent>{CHILD_ID_SEPARATOR}{step}, which cannot fit {MAX_ID_LEN} bytes; shorten the step name"
            ));
        }
        Ok(Child { name, version: self.version })
    }
}

/// The run id of the child that step `step` of run `parent` starts, or why there is none
/// (the parent's id is too long for it: the step then fails for good).
pub fn child_id(parent: &WorkflowId, step: &str) -> Result<WorkflowId, String> {
    WorkflowId::parse(format!("{parent}{CHILD_ID_SEPARATOR}{step}"))
        .map_err(|e| format!("the child's run id {parent}{CHILD_ID_SEPARATOR}{step} is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, version: Option<u32>) -> RawChild {
        RawChild { name: name.into(), version }
    }

    #[test]
    fn a_child_step_is_validated() {
        assert_eq!(raw("pay", Some(2)).resolve("s", false).map(|c| c.version), Ok(Some(2)));
        assert!(raw("pay", None).resolve("s", true).is_err(), "not in a branch");
        assert!(raw("pay", Some(0)).resolve("s", false).is_err());
        assert!(raw("a/b", None).resolve("s", false).is_err());
    }

    #[test]
    fn a_step_name_whose_child_ids_cannot_fit_is_refused_at_the_edge() {
        let fits = "s".repeat(MAX_ID_LEN - 2);
        assert!(raw("pay", None).resolve(&fits, false).is_ok());
        let too_long = "s".repeat(MAX_ID_LEN - 1);
        assert!(raw("pay", None).resolve(&too_long, false).is_err());
    }

    #[test]
    fn a_child_id_is_the_parent_dot_the_step_and_must_fit() {
        let parent = WorkflowId::parse("order-1").expect("valid");
        assert_eq!(child_id(&parent, "pay").map(|id| id.to_string()), Ok("order-1.pay".into()));
        let long = WorkflowId::parse("p".repeat(MAX_ID_LEN - 4)).expect("valid");
        assert!(child_id(&long, "abc").is_ok(), "exactly MAX_ID_LEN bytes");
        assert!(child_id(&long, "abcd").is_err(), "one byte over");
    }
}
