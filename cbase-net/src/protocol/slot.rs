//! One sequence number's agreement state: the pre-prepare, and the prepares
//! and commits gathered for it.

use std::collections::BTreeMap;

use crate::config::ReplicaId;
use crate::message::{Hash, PrePrepare};

/// Agreement on one sequence number in the current view.
#[derive(Default, Debug)]
pub(crate) struct Slot {
    pub pre_prepare: Option<PrePrepare>,
    /// Digest each backup prepared, by backup.
    pub prepares: BTreeMap<ReplicaId, Hash>,
    /// Digest each replica committed, by replica.
    pub commits: BTreeMap<ReplicaId, Hash>,
    /// This replica has sent its commit.
    pub commit_sent: bool,
    /// The batch is committed locally (prepared and 2f+1 commits).
    pub committed: bool,
}

impl Slot {
    pub fn digest(&self) -> Option<&Hash> {
        self.pre_prepare.as_ref().map(|p| &p.digest)
    }

    /// A pre-prepare and 2f matching prepares from backups.
    pub fn is_prepared(&self, f: usize) -> bool {
        match self.digest() {
            Some(digest) => self.prepares.values().filter(|d| *d == digest).count() >= 2 * f,
            None => false,
        }
    }

    /// Prepared, and 2f+1 matching commits (this replica's included).
    pub fn is_committed(&self, f: usize) -> bool {
        match self.digest() {
            Some(digest) => {
                self.is_prepared(f)
                    && self.commits.values().filter(|d| *d == digest).count() > 2 * f
            }
            None => false,
        }
    }
}
