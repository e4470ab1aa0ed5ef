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
//! replica again. (Its votes cannot carry what it prepared before the
//! restart, so while it recovers it counts against f.)

use crate::message::{ReplicaMessage, View};

/// The state of a replica recovering from a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl Recovery {
    pub fn new() -> Recovery {
        Recovery {
            floor: 0,
            frozen: false,
            voted: 0,
            from_disk: false,
        }
    }

    /// A replica restarted from its disk, which says it voted for or
    /// entered `view`: it takes part in no view up to it.
    pub fn above(view: View) -> Recovery {
        Recovery {
            floor: view,
            frozen: false,
            voted: view,
            from_disk: true,
        }
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

    /// Whether entering `view` ends the recovery: a view above every one
    /// it may have acted in before the restart, and not below one it voted
    /// for since (it may follow the others into such a view, but only to
    /// learn: voting there would break the promise of its vote).
    pub fn ends_at(&self, view: View) -> bool {
        self.frozen && !self.covers(view) && view >= self.voted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Status;

    fn status(view: View, changing_to: Option<View>) -> ReplicaMessage {
        ReplicaMessage::Status(Status {
            view,
            changing_to,
            delivered: 0,
            low: 0,
            replica: 0,
        })
    }

    #[test]
    fn a_recovering_replica_votes_again_only_above_every_view_it_heard_of() {
        let mut recovery = Recovery::new();
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
        let mut recovery = Recovery::new();
        recovery.vote(1);
        recovery.vote(2);
        assert!(!recovery.ends_at(1), "below its vote for view 2: learner");
        assert!(recovery.ends_at(2));
        assert!(recovery.ends_at(3));
    }
}
