//! The registry of workflow definitions: every registered `(name, version)`, and which
//! version new runs of a name start on (the highest).
//!
//! Runs are pinned to the version they started with, so a version, once registered, is never
//! replaced: registering the same version with different content is refused.

use crate::definition::Definition;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct Registry {
    by_name: HashMap<shop_types::WorkflowType, BTreeMap<u32, Arc<Definition>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version} of workflow {name:?} is already registered with different content; give the new one a higher version")]
pub struct VersionConflict {
    pub name: shop_types::WorkflowType,
    pub version: u32,
}

impl Registry {
    /// Adds `definition`; `Ok(false)` when the identical version was already there.
    pub fn insert(&mut self, definition: Definition) -> Result<bool, VersionConflict> {
        let versions = self.by_name.entry(definition.name.clone()).or_default();
        if let Some(existing) = versions.get(&definition.version) {
            if existing.source == definition.source {
                return Ok(false);
            }
            return Err(VersionConflict { name: definition.name, version: definition.version });
        }
        versions.insert(definition.version, Arc::new(definition));
        Ok(true)
    }

    pub fn contains(&self, name: &str, version: u32) -> bool {
        self.get(name, version).is_some()
    }

    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.by_name.get(name)?.get(&version).cloned()
    }

    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.by_name.get(name)?.values().next_back().cloned()
    }

    pub fn all(&self) -> Vec<Arc<Definition>> {
        self.by_name.values().flat_map(|versions| versions.values().cloned()).collect()
    }
}
