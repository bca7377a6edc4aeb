//! The mapping store port: versioned mapping sets. A push stores a whole set as the next
//! version; every instance (the local server, each warm function) reloads when the version in
//! force moves.

use super::StoreError;
use super::commit::CommitError;
use crate::time::UnixMillis;
use async_trait::async_trait;

/// A version of the mapping set: its files (name, YAML text), sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingVersion {
    pub version: u64,
    pub files: Vec<(String, String)>,
}

/// Contract: versions count up from 1 with no gaps; a push whose `expected` version is not the
/// one in force is refused ([`super::commit::Conflict::AlreadyDone`]: someone pushed first) and
/// stores nothing; readers see either the old set or the new one, never files of both; a
/// version's files are exactly those pushed (none of an earlier version stays).
#[async_trait]
pub trait MappingStore: Send + Sync {
    /// The version in force, 0 when nothing was pushed.
    async fn current_version(&self) -> Result<u64, StoreError>;
    /// The set in force, `None` when nothing was pushed.
    async fn current(&self) -> Result<Option<MappingVersion>, StoreError>;
    /// Stores `files` as the next version if `expected` (when given) is still in force;
    /// returns the new version.
    async fn push(
        &self,
        files: &[(String, String)],
        expected: Option<u64>,
        at: UnixMillis,
    ) -> Result<u64, CommitError>;
}
