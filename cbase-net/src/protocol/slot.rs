//! One sequence number's agreement state: the pre-prepare header, and the
//! prepares and commits gathered for it. (Proposals are kept apart, by
//! digest: agreement is on digests, and a slot a new view re-issues may be
//! agreed on before its proposal has been fetched.)

use std::collections::BTreeMap;

use crate::config::ReplicaId;
use crate::message::{Hash, PrePrepareHeader, Prepare, PreparedProof};

/// Agreement on one sequence number in the current view.
#[derive(Default, Debug)]
pub(crate) struct Slot {
    pub header: Option<PrePrepareHeader>,
    /// Each backup's signed prepare, by backup: kept whole because a view
    /// change must prove what prepared.
    pub prepares: BTreeMap<ReplicaId, Prepare>,
    /// Digest each replica committed, by replica.
    pub commits: BTreeMap<ReplicaId, Hash>,
    /// This replica has sent its commit.
    pub commit_sent: bool,
    /// The batch is committed locally (prepared and 2f+1 commits).
    pub committed: bool,
    /// A backup holds the pre-prepare but withholds its prepare: the
    /// proposal carries unsigned batches it has not received from their
    /// clients (`awaiting`), or is stamped far behind its clock (`stale`),
    /// and fewer than f+1 replicas vouch for it yet (see `vouching`).
    pub withheld: bool,
    /// The digests of those batches.
    pub awaiting: Vec<crate::message::Hash>,
    /// The proposal was stamped more than `max_clock_lag` behind this
    /// backup's clock when its pre-prepare arrived.
    pub stale: bool,
}

impl Slot {
    pub fn digest(&self) -> Option<&Hash> {
        self.header.as_ref().map(|p| &p.digest)
    }

    fn matching_prepares(&self) -> impl Iterator<Item = &Prepare> {
        let digest = self.digest().copied();
        self.prepares
            .values()
            .filter(move |p| Some(p.digest) == digest)
    }

    /// A pre-prepare and `quorum - 1` matching prepares from backups (2f
    /// when n = 3f+1): with the primary, a quorum vouches for the proposal.
    pub fn is_prepared(&self, quorum: usize) -> bool {
        self.header.is_some() && self.matching_prepares().count() + 1 >= quorum
    }

    /// Prepared, and a quorum of matching commits (this replica's included).
    pub fn is_committed(&self, quorum: usize) -> bool {
        match self.digest() {
            Some(digest) => {
                self.is_prepared(quorum)
                    && self.commits.values().filter(|d| *d == digest).count() >= quorum
            }
            None => false,
        }
    }

    /// The certificate a view change carries for this slot, if it prepared.
    pub fn prepared_proof(&self, quorum: usize) -> Option<PreparedProof> {
        if !self.is_prepared(quorum) {
            return None;
        }
        Some(PreparedProof {
            pre_prepare: self.header?,
            prepares: self.matching_prepares().take(quorum - 1).cloned().collect(),
        })
    }
}
