//! A replica's data directory, simulated: what the runtime writes (see
//! `cbase_net::storage`), with the same sync rules, so that a restart from
//! disk (one replica, or every replica at once) is a simulated fault.
//!
//! - What the protocol asks to persist, and stable checkpoints, are synced.
//! - Executed batches are written unsynced; a sync carries them along. A
//!   restart may lose the unsynced ones (a directory that lost its last
//!   writes), as a power cut can.

use std::collections::BTreeMap;

use cbase_net::checkpoint::CheckpointState;
use cbase_net::message::{Checkpoint, Hash, PreparedProof, Proposal, Seq, View};
use cbase_net::protocol::{Committed, Durable, Recovered};

#[derive(Clone, Debug, Default)]
pub struct Disk {
    view: View,
    entered: Option<(View, Seq)>,
    window: Option<(View, Seq)>,
    /// Started from a restored copy, its recovery not over yet.
    pub restored: bool,
    stable: Option<(Seq, Hash, Vec<Checkpoint>, CheckpointState)>,
    prepared: BTreeMap<Seq, (PreparedProof, Option<Proposal>)>,
    /// Proposals it vouched for, by (sequence number, digest).
    proposals: BTreeMap<(Seq, Hash), (View, Proposal)>,
    /// Proposals written since the last sync (not synced on their own).
    unsynced_proposals: BTreeMap<(Seq, Hash), (View, Proposal)>,
    executed: BTreeMap<Seq, Committed>,
    /// Executed batches written since the last sync.
    unsynced: BTreeMap<Seq, Committed>,
}

impl Disk {
    fn sync(&mut self) {
        let unsynced = std::mem::take(&mut self.unsynced);
        self.executed.extend(unsynced);
        let proposals = std::mem::take(&mut self.unsynced_proposals);
        self.proposals.extend(proposals);
    }

    pub fn persist(&mut self, durable: Durable) {
        match durable {
            Durable::Prepared { proof, proposal } => {
                self.prepared
                    .insert(proof.pre_prepare.seq, (proof, proposal));
            }
            Durable::Proposal {
                view,
                seq,
                digest,
                proposal,
            } => {
                // Written, and synced with the next record that is.
                self.unsynced_proposals
                    .insert((seq, digest), (view, proposal));
                return;
            }
            Durable::View(view) => self.view = self.view.max(view),
            Durable::Entered { view, carried } => {
                self.view = self.view.max(view);
                self.entered = Some((view, carried));
            }
            Durable::Window { view, seq } => self.window = self.window.max(Some((view, seq))),
            Durable::RestoreOver => self.restored = false,
        }
        self.sync();
    }

    /// Forgets what was not synced (a power cut took it).
    pub fn drop_unsynced(&mut self) {
        self.unsynced.clear();
        self.unsynced_proposals.clear();
    }

    pub fn log_executed(&mut self, committed: &Committed) {
        self.unsynced.insert(committed.seq, committed.clone());
    }

    /// A stable checkpoint with the state it holds.
    pub fn stabilize(
        &mut self,
        seq: Seq,
        digest: Hash,
        proof: Vec<Checkpoint>,
        state: CheckpointState,
    ) {
        self.stable = Some((seq, digest, proof, state));
        self.prepared = self.prepared.split_off(&(seq + 1));
        self.proposals = self.proposals.split_off(&(seq + 1, [0; 32]));
        self.unsynced_proposals = self.unsynced_proposals.split_off(&(seq + 1, [0; 32]));
        self.sync();
        self.executed = self.executed.split_off(&(seq + 1));
    }

    /// What a restart reads back; `lose_unsynced` drops the writes that
    /// were not synced yet.
    pub fn read(
        &self,
        lose_unsynced: bool,
    ) -> (Option<(Seq, CheckpointState)>, Vec<Committed>, Recovered) {
        let mut executed = self.executed.clone();
        let mut proposals = self.proposals.clone();
        if !lose_unsynced {
            executed.extend(self.unsynced.clone());
            proposals.extend(self.unsynced_proposals.clone());
        }
        let low = self.stable.as_ref().map_or(0, |s| s.0);
        // Replayed only as far as the batches follow the checkpoint.
        let mut replay = Vec::new();
        for (seq, committed) in executed.range(low + 1..) {
            if *seq != low + 1 + replay.len() as u64 {
                break;
            }
            replay.push(committed.clone());
        }
        let recovered = Recovered {
            view: self.view,
            entered: self.entered,
            window: self.window,
            restored: self.restored,
            stable: self
                .stable
                .as_ref()
                .map(|(seq, digest, proof, _)| (*seq, *digest, proof.clone())),
            prepared: self.prepared.values().cloned().collect(),
            proposals: proposals
                .range((low + 1, [0; 32])..)
                .map(|((seq, digest), (view, proposal))| (*view, *seq, *digest, proposal.clone()))
                .collect(),
            executed: low,
            executed_proposals: replay
                .iter()
                .map(|c| (c.seq, c.digest, c.proposal.clone()))
                .collect(),
        };
        let state = self
            .stable
            .as_ref()
            .map(|(seq, _, _, state)| (*seq, state.clone()));
        (state, replay, recovered)
    }
}
