//! Checkpoints: this replica's own as execution reports them, its peers'
//! signed votes, and the stable checkpoint 2f+1 matching votes make, which
//! moves the window up and lets the log below it go.

use std::collections::BTreeMap;

use super::{Output, Replica, state_transfer};
use crate::config::ReplicaId;
use crate::message::{Checkpoint, Hash, ReplicaMessage, Seq, checkpoint_header, domain};

impl Replica {
    pub(super) fn on_checkpoint_taken(&mut self, seq: Seq, state: Hash, out: &mut Vec<Output>) {
        if seq <= self.low {
            return;
        }
        self.own_checkpoints.insert(seq, state);
        let signature = self
            .secret
            .sign(domain::CHECKPOINT, &checkpoint_header(seq, &state, self.id));
        let checkpoint = Checkpoint {
            seq,
            state,
            replica: self.id,
            signature,
        };
        self.checkpoint_votes
            .entry(seq)
            .or_default()
            .insert(self.id, checkpoint.clone());
        out.push(Output::Broadcast(ReplicaMessage::Checkpoint(checkpoint)));
        self.try_stabilize(seq, out);
    }

    pub(super) fn on_checkpoint(
        &mut self,
        from: ReplicaId,
        checkpoint: Checkpoint,
        out: &mut Vec<Output>,
    ) {
        let Checkpoint {
            seq,
            state,
            replica,
            ..
        } = checkpoint;
        // Votes are signed, so a peer may relay others' (that is how a
        // replica that fell behind learns a checkpoint's agreed digest),
        // including this replica's own from before a restart.
        let _ = from;
        if replica as usize >= self.n {
            self.stats.wrong_sender += 1;
            return;
        }
        if seq % self.config.checkpoint_interval != 0 || seq == 0 {
            self.stats.out_of_window += 1;
            return;
        }
        if seq > self.high() {
            self.on_future_checkpoint(checkpoint);
            return;
        }
        if self.outside_window(seq) {
            return;
        }
        if let Some(existing) = self
            .checkpoint_votes
            .get(&seq)
            .and_then(|v| v.get(&replica))
        {
            if existing.state == state {
                self.stats.duplicate += 1;
            } else {
                self.stats.equivocation += 1;
            }
            return;
        }
        let header = checkpoint_header(seq, &state, replica);
        if !self.keys[replica as usize].verify(domain::CHECKPOINT, &header, &checkpoint.signature) {
            self.stats.bad_signature += 1;
            return;
        }
        self.checkpoint_votes
            .entry(seq)
            .or_default()
            .insert(replica, checkpoint);
        self.try_stabilize(seq, out);
    }

    pub(super) fn try_stabilize(&mut self, seq: Seq, out: &mut Vec<Output>) {
        if self.installing.is_some() {
            // A transferred state is replacing ours: our checkpoints are
            // judged again once it is in (see `on_state_installed`).
            return;
        }
        let Some(votes) = self.checkpoint_votes.get(&seq) else {
            return;
        };
        let mut tally: BTreeMap<&Hash, usize> = BTreeMap::new();
        for vote in votes.values() {
            *tally.entry(&vote.state).or_default() += 1;
        }
        let Some((&agreed, _)) = tally.into_iter().find(|(_, count)| *count >= self.quorum) else {
            return;
        };
        let certified = state_transfer::Certified {
            seq,
            state: agreed,
            proof: votes
                .values()
                .filter(|v| v.state == agreed)
                .cloned()
                .collect(),
        };
        match self.own_checkpoints.get(&seq) {
            // Not executed that far yet: stabilize once we have, or fetch
            // the state if execution does not get there in time.
            None => self.note_behind(certified, false),
            Some(own) if *own == agreed => self.stabilize(seq, agreed, certified.proof, out),
            Some(_) => self.repair(certified, out),
        }
    }

    /// Moves the low watermark to `seq`, proven by `proof` (a quorum of
    /// signed votes for `state`), and discards everything below it.
    pub(super) fn stabilize(
        &mut self,
        seq: Seq,
        state: Hash,
        proof: Vec<Checkpoint>,
        out: &mut Vec<Output>,
    ) {
        if self.installing.is_none()
            && let Some(behind) = self.behind.take_if(|b| b.target.seq <= seq)
        {
            // Whatever this replica was fetching (or repairing) is older than
            // a checkpoint it now has right: no longer needed. A later one
            // queued behind it still is.
            self.transfer = state_transfer::Transfer::default();
            self.behind = behind
                .next
                .filter(|next| next.seq > seq)
                .map(|next| state_transfer::Behind::new(next, self.now.max(1), behind.peer));
        }
        self.stable_proof = proof;
        self.stable_state = state;
        self.low = seq;
        self.future_checkpoints.retain(|_, vote| vote.seq > seq);
        self.log = self.log.split_off(&(seq + 1));
        self.withheld = self.withheld.split_off(&(seq + 1));
        self.proposals.forget_up_to(seq);
        self.prepared = self.prepared.split_off(&(seq + 1));
        self.pre_prepared = self.pre_prepared.split_off(&(seq + 1));
        self.proposals_on_disk = self.proposals_on_disk.split_off(&(seq + 1, [0; 32]));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&(seq + 1));
        self.known_batches
            .retain(|_, at| at.is_none_or(|s| s > seq));
        out.push(Output::Stable {
            seq,
            state,
            proof: self.stable_proof.clone(),
        });
        if self.is_primary() {
            // The window moved up.
            self.propose(out);
        }
    }
}
