//! A replica that restarted without its memory must not contradict what it
//! said before.
//!
//! A replica without a disk keeps nothing across a restart, so after one it
//! does not know which views it voted in, what it prepared or, as a primary,
//! which sequence numbers it already assigned. (One with a disk knows the
//! highest view it voted in and what it prepared, see `durable.rs`, and
//! starts from there: [`Recovery::above`].) Voting again in such a view
//! could contradict its earlier votes: as a primary it would assign a
//! sequence number twice, as a backup it could prepare a second proposal.
//! So a replica started with [`Replica::restarted`](super::Replica::restarted)
//! only *learns* (executes what the others commit, fetches checkpoints) in
//! every view up to the highest one it hears of before it first votes for a
//! view change (the floor), and never builds a new-view for such a view. It
//! does vote in view changes, so that a cluster with one crashed replica and
//! one restarted one still reaches a quorum of votes; once it enters a view
//! above the floor, it cannot have acted there before, and it is an ordinary
//! replica again in that it votes and prepares there. (Its votes cannot
//! carry what it prepared before the restart, so while it recovers it
//! counts against f.)
//!
//! Entering such a view does not end the recovery: the replica still holds
//! none of the prepared certificates it held before, and were it to count
//! as correct from then on, a second replica restarting without its memory
//! (one at a time, as operators roll restarts) would leave too few holders
//! of a batch that committed for the next view change to carry it. So it
//! recovers until it again holds a certificate, prepared in a view it
//! entered since the restart, for every slot the view it entered carried
//! (the entered view carries every batch that may have committed before:
//! 2f+1 replicas prepared it, and the new view's quorum holds one of them
//! that neither restarted nor lies), or until a stable checkpoint covers
//! the slot. Entering a later view first replaces what it owes with that
//! view's carried slots, which again include every such batch. Only then is
//! it as good as a replica that never restarted. (PBFT's proactive recovery
//! ends the same way, at a checkpoint above every number the replica may
//! have prepared.) A replica restarted from its disk holds its certificates
//! and owes nothing.
//!
//! A replica restarted from its disk in the view it had entered (and voted
//! past in no vote its disk holds) need not wait for a view change at all.
//! Its disk names the highest number its window reached
//! ([`Durable::Window`](super::Durable::Window)), written before any
//! pre-prepare or prepare up there left, so it did nothing in that view
//! above it. It learns until its stable checkpoint reaches that number;
//! from then on nothing it does in the view can contradict what it did
//! before, and it takes part there again. In a cluster that is busy this
//! takes a window's worth of batches; an idle one leaves it learning until
//! the next view change, as before.
//!
//! The floor is right only if it heard of every view it may have entered.
//! Cut off from its peers, it would hear of none, vote for the view after
//! its own, and, when one peer relays that view's new-view, enter it as an
//! ordinary replica, free to prepare a second proposal where it prepared
//! one before the restart. So it votes only once enough peers have
//! answered a status it sent since the restart (each answer echoes the
//! `probe` it drew then, so none was sent before): n - q + f of them, where
//! q is the quorum (2f of the 3f peers when n = 3f+1). Why that suffices:
//! had it entered view v, q replicas voted for v, at least q - 1 of them
//! peers; while it recovers it counts against f, so at most f - 1 peers are
//! faulty; of n - 1 peers, the n - q + f that answered and the q - 1 that
//! voted share at least f, so at least one correct replica that voted for
//! v. A correct replica reports in every status it sends after a vote for
//! v that view or a later one, and its answer was sent after the restart,
//! so after the vote. The floor is then at least v. The count leaves out f
//! peers, so a cluster with one crashed replica and one restarting still
//! hears enough (q >= 2f).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ReplicaId;
use crate::message::{PreparedProof, ReplicaMessage, Seq, View};

/// The state of a replica recovering from a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Recovery {
    /// The highest view heard of: the replica takes part in no view up to it.
    pub floor: View,
    /// Set at its first view-change vote: the floor no longer moves.
    pub frozen: bool,
    /// The highest view it has voted for since the restart.
    pub voted: View,
    /// Whether it restarted from its disk, and so knows every slot it voted
    /// to commit before (see `Replica::read_barrier`).
    pub from_disk: bool,
    /// The number its statuses carry until it first votes, for peers to
    /// echo (`None` after a restart from disk, which names the view).
    pub probe: Option<u64>,
    /// The peers that echoed `probe`.
    pub answered: BTreeSet<ReplicaId>,
    /// `None` while it only learns; once it entered a view above the
    /// floor, the slots that view carried for which it holds no
    /// certificate prepared since (see the module's notes).
    pub owed: Option<BTreeSet<Seq>>,
    /// The first view above the floor it entered: certificates prepared in
    /// it or later are ones it made since the restart.
    pub since: View,
    /// Restarted from its disk in the view it had entered (the floor), whose
    /// window reached this number: it takes part in that view again once its
    /// stable checkpoint is there.
    pub rejoin_at: Option<Seq>,
    /// Started from a restored copy: the end of the recovery is written to
    /// its directory ([`Durable::RestoreOver`](super::Durable::RestoreOver)).
    pub restored: bool,
}

impl Recovery {
    /// A replica restarted without its memory, its statuses carrying
    /// `probe` (drawn at random, so no status sent before the restart can
    /// echo it).
    pub fn new(probe: u64) -> Recovery {
        Recovery {
            floor: 0,
            frozen: false,
            voted: 0,
            from_disk: false,
            probe: Some(probe),
            answered: BTreeSet::new(),
            owed: None,
            since: 0,
            rejoin_at: None,
            restored: false,
        }
    }

    /// A replica restarted from its disk, which says it voted for or
    /// entered `view`: it takes part in no view up to it.
    pub fn above(view: View) -> Recovery {
        Recovery {
            floor: view,
            voted: view,
            from_disk: true,
            probe: None,
            ..Recovery::new(0)
        }
    }

    /// A replica started from a copy of its directory (a backup) that
    /// names `view`: it may have voted in later views since the copy was
    /// taken, so it learns in every view up to the highest it hears of, as
    /// one restarted without its memory does, and at least up to `view`.
    pub fn restored(view: View, probe: u64) -> Recovery {
        Recovery {
            floor: view,
            voted: view,
            restored: true,
            ..Recovery::new(probe)
        }
    }

    /// The probe its statuses carry now: until its first vote, when the
    /// floor stops moving and answers no longer matter.
    pub fn probe(&self) -> Option<u64> {
        self.probe.filter(|_| !self.frozen)
    }

    /// Peer `from` sent a status echoing `echo`.
    pub fn answer(&mut self, from: ReplicaId, echo: Option<u64>) {
        if echo.is_some() && echo == self.probe() {
            self.answered.insert(from);
        }
    }

    /// Whether it may vote for a view change: once `peers` peers (see
    /// [`answers_needed`]) have answered its probe, or at once if its disk
    /// names its last view.
    pub fn may_vote(&self, peers: usize) -> bool {
        self.frozen || self.from_disk || self.answered.len() >= peers
    }

    /// Raises the floor to the view a message shows, until frozen. A
    /// replica restarted from its disk does not: the disk names the
    /// highest view it voted for or entered (written before either took
    /// effect), and a faulty peer claiming a view far ahead, which costs it
    /// one unchecked message, would otherwise keep it learning for good.
    pub fn hear(&mut self, message: &ReplicaMessage) {
        if self.frozen || self.from_disk {
            return;
        }
        let view = match message {
            ReplicaMessage::PrePrepare(m) => m.view,
            ReplicaMessage::Prepare(m) => m.view,
            ReplicaMessage::Commit(m) => m.view,
            ReplicaMessage::ViewChange(m) => m.body.new_view,
            ReplicaMessage::NewView(m) => m.view,
            ReplicaMessage::Status(m) => m.changing_to.unwrap_or(m.view).max(m.view),
            _ => return,
        };
        self.floor = self.floor.max(view);
    }

    /// The replica votes for view `target`: the floor stops moving.
    pub fn vote(&mut self, target: View) {
        self.frozen = true;
        self.voted = self.voted.max(target);
    }

    /// Whether the replica may have acted in `view` before the restart.
    pub fn covers(&self, view: View) -> bool {
        view <= self.floor
    }

    /// Whether entering `view` ends the learning: a view above every one
    /// it may have acted in before the restart, and not below one it voted
    /// for since (it may follow the others into such a view, but only to
    /// learn: voting there would break the promise of its vote).
    pub fn ends_at(&self, view: View) -> bool {
        self.frozen && !self.covers(view) && view >= self.voted
    }

    /// Whether it still only learns (takes part in no view).
    pub fn learns(&self) -> bool {
        self.owed.is_none()
    }

    /// Whether, working in `view` with its stable checkpoint at `low`, it
    /// may take part in that view again: restarted from its disk in it, not
    /// having voted since, and its checkpoint at or above every number its
    /// window reached before the restart.
    pub fn rejoins(&self, view: View, low: Seq) -> bool {
        self.from_disk
            && !self.frozen
            && self.learns()
            && view == self.floor
            && self.rejoin_at.is_some_and(|at| low >= at)
    }

    /// It entered `view`, for which [`ends_at`](Self::ends_at) holds, and
    /// the view carried the slots `carried` above its stable checkpoint: it
    /// takes part from now on, and owes a certificate for each of them. A
    /// replica restarted from its disk owes nothing.
    pub fn enter(&mut self, view: View, carried: BTreeSet<Seq>) {
        if self.from_disk {
            self.owed = Some(BTreeSet::new());
            return;
        }
        if self.owed.is_none() {
            self.since = view;
        }
        self.owed = Some(carried);
    }

    /// Drops the owed slots now covered, by the stable checkpoint at `low`
    /// or by a certificate in `prepared` from a view entered since the
    /// restart; true once it owes nothing (the recovery is over).
    pub fn settle(&mut self, low: Seq, prepared: &BTreeMap<Seq, PreparedProof>) -> bool {
        let since = self.since;
        match &mut self.owed {
            None => false,
            Some(owed) => {
                owed.retain(|seq| {
                    *seq > low
                        && prepared
                            .get(seq)
                            .is_none_or(|proof| proof.pre_prepare.view < since)
                });
                owed.is_empty()
            }
        }
    }
}

/// How many peers must answer the probe of a replica restarted without its
/// memory before it votes, in a cluster of `n` with quorums of `quorum` and
/// at most `f` faulty: n - q + f (2f for n = 3f+1; see the module's notes).
pub fn answers_needed(n: usize, quorum: usize, f: usize) -> usize {
    n - quorum + f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Signature;
    use crate::message::{PrePrepareHeader, Status};

    /// A certificate for `seq` prepared in `view` (the settling looks at
    /// nothing else).
    fn prepared_in(view: View, seq: Seq) -> PreparedProof {
        PreparedProof {
            pre_prepare: PrePrepareHeader {
                view,
                seq,
                digest: [0; 32],
                signature: Signature::from_bytes([0; 64]),
            },
            prepares: Vec::new(),
        }
    }

    fn status(view: View, changing_to: Option<View>) -> ReplicaMessage {
        ReplicaMessage::Status(Status {
            view,
            changing_to,
            delivered: 0,
            low: 0,
            replica: 0,
            probe: None,
            echo: None,
        })
    }

    #[test]
    fn a_recovering_replica_votes_again_only_above_every_view_it_heard_of() {
        let mut recovery = Recovery::new(7);
        recovery.hear(&status(3, Some(4)));
        assert!(recovery.covers(4), "it may have entered view 4 before");
        assert!(!recovery.ends_at(5), "not before it has voted");
        recovery.vote(5);
        recovery.hear(&status(9, None));
        assert_eq!(recovery.floor, 4, "the floor stops at the first vote");
        assert!(!recovery.ends_at(4));
        assert!(recovery.ends_at(5));
    }

    /// Found by the simulation: a recovering replica that voted for view 2
    /// followed the others into view 1 and, its recovery over, voted there.
    #[test]
    fn following_the_others_below_its_own_vote_keeps_it_learning() {
        let mut recovery = Recovery::new(7);
        recovery.vote(1);
        recovery.vote(2);
        assert!(!recovery.ends_at(1), "below its vote for view 2: learner");
        assert!(recovery.ends_at(2));
        assert!(recovery.ends_at(3));
    }

    #[test]
    fn it_votes_only_once_2f_peers_echoed_its_probe_and_a_restart_from_disk_at_once() {
        let mut recovery = Recovery::new(7);
        assert_eq!(recovery.probe(), Some(7));
        // Answers to another probe (an earlier restart's) and none at all
        // do not count; one peer answering twice counts once.
        recovery.answer(1, Some(8));
        recovery.answer(2, None);
        recovery.answer(3, Some(7));
        recovery.answer(3, Some(7));
        assert!(!recovery.may_vote(2));
        recovery.answer(1, Some(7));
        assert!(recovery.may_vote(2));
        recovery.vote(1);
        assert_eq!(recovery.probe(), None, "no probe once the floor is fixed");
        assert!(Recovery::above(3).may_vote(2));
        // 2f for n = 3f+1; n = 5 with f = 1 (quorums of 4) needs 2; n = 6
        // with f = 1 (quorums of 4) needs 3.
        assert_eq!(answers_needed(4, 3, 1), 2);
        assert_eq!(answers_needed(7, 5, 2), 4);
        assert_eq!(answers_needed(5, 4, 1), 2);
        assert_eq!(answers_needed(6, 4, 1), 3);
        assert_eq!(Recovery::above(3).probe(), None);
    }

    #[test]
    fn taking_part_it_recovers_once_each_carried_slot_has_a_certificate_since_or_a_checkpoint() {
        let mut recovery = Recovery::new(7);
        recovery.vote(1);
        let mut prepared = BTreeMap::new();
        assert!(recovery.learns());
        assert!(!recovery.settle(0, &prepared), "learning: not over");
        recovery.enter(1, BTreeSet::from([3, 4, 5]));
        assert!(!recovery.learns(), "it takes part in view 1");
        // A certificate from before view 1 (kept in a restored copy, say)
        // is not one it made since the restart.
        prepared.insert(4, prepared_in(0, 4));
        prepared.insert(5, prepared_in(1, 5));
        assert!(!recovery.settle(2, &prepared), "3 and 4 owed");
        assert!(
            !recovery.settle(3, &prepared),
            "a checkpoint covers 3, not 4"
        );
        assert_eq!(recovery.owed, Some(BTreeSet::from([4])));
        // View 2 carries 4 and 6: what it owes is that view's slots, and a
        // certificate from view 1 or later counts.
        recovery.vote(2);
        recovery.enter(2, BTreeSet::from([4, 6]));
        prepared.insert(4, prepared_in(2, 4));
        assert!(!recovery.settle(3, &prepared), "6 owed");
        assert_eq!(recovery.since, 1);
        assert!(recovery.settle(6, &prepared), "a checkpoint covers 6");
    }

    #[test]
    fn a_replica_restarted_from_disk_owes_nothing_when_it_takes_part() {
        let mut recovery = Recovery::above(3);
        recovery.vote(4);
        assert!(recovery.ends_at(4));
        recovery.enter(4, BTreeSet::from([5, 6]));
        assert!(recovery.settle(0, &BTreeMap::new()));
    }
}
