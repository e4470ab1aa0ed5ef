//! Normal-case messages for the view a replica is about to enter, held until
//! it enters it.
//!
//! A new primary's first pre-prepares, and its backups' prepares and commits,
//! can overtake the new-view that starts the view; dropping them would cost a
//! round of retransmission. But a peer can claim any view, so what is held is
//! bounded four ways: only messages for the next view this replica can
//! enter (the one it is changing to, or the one after its current view) are
//! held, only once they are authenticated, at most one of each kind per
//! sender and sequence number (a faulty next primary's second pre-prepare
//! for a slot, and its third, are dropped rather than held by the proposal
//! bytes), and at most a window's worth of each kind per sender: so a
//! sender can make a replica hold no more than a window of proposals, what
//! the normal case holds anyway. Entering a view, or voting for a later
//! one, drops what it made obsolete.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ReplicaId;
use crate::message::{ReplicaMessage, Seq, View};

/// Which kind of normal-case message, and for which sequence number.
type Slot = (u8, Seq);

/// The slot a held message is for; `None` for a message that is not held.
fn slot_of(message: &ReplicaMessage) -> Option<Slot> {
    match message {
        ReplicaMessage::PrePrepare(m) => Some((0, m.seq)),
        ReplicaMessage::Prepare(m) => Some((1, m.seq)),
        ReplicaMessage::Commit(m) => Some((2, m.seq)),
        _ => None,
    }
}

/// Held messages by view, with a count per sender and kind.
#[derive(Debug, Default)]
pub(super) struct Held {
    by_view: BTreeMap<View, Vec<(ReplicaId, ReplicaMessage)>>,
    /// Per sender and kind of message, how many are held.
    per_sender: BTreeMap<(ReplicaId, u8), usize>,
    /// What is held: one message per view, sender, kind and sequence number.
    taken: BTreeSet<(View, ReplicaId, Slot)>,
}

impl Held {
    /// Holds `message` for `view` unless `from` already has one of its kind
    /// held for its sequence number in that view, or `limit` of its kind.
    /// Returns whether it was held.
    pub fn hold(
        &mut self,
        view: View,
        from: ReplicaId,
        message: ReplicaMessage,
        limit: usize,
    ) -> bool {
        let Some(slot) = slot_of(&message) else {
            return false;
        };
        let count = self.per_sender.entry((from, slot.0)).or_default();
        if *count >= limit || self.taken.contains(&(view, from, slot)) {
            return false;
        }
        *count += 1;
        self.taken.insert((view, from, slot));
        self.by_view.entry(view).or_default().push((from, message));
        true
    }

    /// Takes the messages held for `view` and drops those for views below it.
    pub fn take(&mut self, view: View) -> Vec<(ReplicaId, ReplicaMessage)> {
        self.drop_below(view);
        let taken = self.by_view.remove(&view).unwrap_or_default();
        for (from, message) in &taken {
            self.forget_one(view, *from, message);
        }
        taken
    }

    /// Drops the messages held for views below `view`.
    pub fn drop_below(&mut self, view: View) {
        let keep = self.by_view.split_off(&view);
        let dropped = std::mem::replace(&mut self.by_view, keep);
        for (held_for, messages) in dropped {
            for (from, message) in messages {
                self.forget_one(held_for, from, &message);
            }
        }
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.per_sender.values().sum()
    }

    fn forget_one(&mut self, view: View, from: ReplicaId, message: &ReplicaMessage) {
        let Some(slot) = slot_of(message) else {
            return;
        };
        self.taken.remove(&(view, from, slot));
        if let Some(count) = self.per_sender.get_mut(&(from, slot.0)) {
            *count -= 1;
            if *count == 0 {
                self.per_sender.remove(&(from, slot.0));
            }
        }
    }
}
