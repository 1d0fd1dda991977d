//! The registry of workflow definitions: every registered `(name, version)` with the
//! content hash of its source, and which version new runs of a name start on (the highest).
//!
//! Runs are pinned to the version they started with, so a version, once registered, is never
//! replaced: registering the same version with different content is refused. This module
//! never reads or writes the store; the core persists what it registers.

use crate::definition::Definition;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct Registry {
    by_name: HashMap<shop_types::WorkflowType, BTreeMap<u32, Registered>>,
}

/// A registered version and the hash of its source, computed once when it is inserted.
struct Registered {
    definition: Arc<Definition>,
    content_hash: String,
    /// When this engine process registered it (clock ms); `None` for a version loaded at
    /// start-up (the store keeps no registration time).
    registered_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version} of workflow {name:?} is already registered with different content; give the new one a higher version")]
pub struct VersionConflict {
    pub name: shop_types::WorkflowType,
    pub version: u32,
}

/// `sha256:<lowercase hex>` of a definition's TOML source, byte for byte: the identity of
/// what a run was started on (a reformatted file is another content).
pub fn content_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    let mut text = String::with_capacity(7 + digest.len() * 2);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

impl Registry {
    /// Adds `definition`; `Ok(false)` when the identical version was already there.
    pub fn insert(&mut self, definition: Definition) -> Result<bool, VersionConflict> {
        let versions = self.by_name.entry(definition.name.clone()).or_default();
        if let Some(existing) = versions.get(&definition.version) {
            if existing.definition.source == definition.source {
                return Ok(false);
            }
            return Err(VersionConflict { name: definition.name, version: definition.version });
        }
        let content_hash = definition.content_hash.clone();
        versions.insert(
            definition.version,
            Registered { definition: Arc::new(definition), content_hash, registered_at_ms: None },
        );
        Ok(true)
    }

    /// Records that `(name, version)` was registered at `at_ms` (through the API).
    pub fn mark_registered(&mut self, name: &str, version: u32, at_ms: u64) {
        if let Some(registered) = self.by_name.get_mut(name).and_then(|versions| versions.get_mut(&version)) {
            registered.registered_at_ms = Some(at_ms);
        }
    }

    /// When this engine process registered `(name, version)`, if it did (not at start-up).
    pub fn registered_at_ms(&self, name: &str, version: u32) -> Option<u64> {
        self.by_name.get(name)?.get(&version)?.registered_at_ms
    }

    pub fn contains(&self, name: &str, version: u32) -> bool {
        self.get(name, version).is_some()
    }

    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Definition>> {
        self.by_name.get(name)?.get(&version).map(|r| r.definition.clone())
    }

    /// The content hash recorded when `(name, version)` was registered.
    pub fn content_hash(&self, name: &str, version: u32) -> Option<&str> {
        self.by_name.get(name)?.get(&version).map(|r| r.content_hash.as_str())
    }

    pub fn latest(&self, name: &str) -> Option<Arc<Definition>> {
        self.by_name.get(name)?.values().next_back().map(|r| r.definition.clone())
    }

    pub fn all(&self) -> Vec<Arc<Definition>> {
        self.by_name.values().flat_map(|versions| versions.values().map(|r| r.definition.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_is_the_sha256_of_the_source() {
        // The SHA-256 of the empty string, a published test vector.
        assert_eq!(content_hash(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_ne!(content_hash("a"), content_hash("a "));
    }
}
