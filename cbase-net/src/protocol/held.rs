//! Normal-case messages for the view a replica is about to enter, held until
//! it enters it.
//!
//! A new primary's first pre-prepares, and its backups' prepares and commits,
//! can overtake the new-view that starts the view; dropping them would cost a
//! round of retransmission. But a peer can claim any view, so what is held is
//! bounded three ways: only messages for the next view this replica can
//! enter (the one it is changing to, or the one after its current view) are
//! held, only once they are authenticated, and at most a fixed number per
//! sender. Entering a view, or voting for a later one, drops what it made
//! obsolete.

use std::collections::BTreeMap;

use crate::config::ReplicaId;
use crate::message::{ReplicaMessage, View};

/// Held messages by view, with a count per sender.
#[derive(Debug, Default)]
pub(super) struct Held {
    by_view: BTreeMap<View, Vec<(ReplicaId, ReplicaMessage)>>,
    per_sender: BTreeMap<ReplicaId, usize>,
}

impl Held {
    /// Holds `message` for `view` unless `from` already has `limit` messages
    /// held. Returns whether it was held.
    pub fn hold(
        &mut self,
        view: View,
        from: ReplicaId,
        message: ReplicaMessage,
        limit: usize,
    ) -> bool {
        let count = self.per_sender.entry(from).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        self.by_view.entry(view).or_default().push((from, message));
        true
    }

    /// Takes the messages held for `view` and drops those for views below it.
    pub fn take(&mut self, view: View) -> Vec<(ReplicaId, ReplicaMessage)> {
        self.drop_below(view);
        let taken = self.by_view.remove(&view).unwrap_or_default();
        for (from, _) in &taken {
            self.forget_one(*from);
        }
        taken
    }

    /// Drops the messages held for views below `view`.
    pub fn drop_below(&mut self, view: View) {
        let keep = self.by_view.split_off(&view);
        let dropped = std::mem::replace(&mut self.by_view, keep);
        for (from, _) in dropped.into_values().flatten() {
            self.forget_one(from);
        }
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.per_sender.values().sum()
    }

    fn forget_one(&mut self, from: ReplicaId) {
        if let Some(count) = self.per_sender.get_mut(&from) {
            *count -= 1;
            if *count == 0 {
                self.per_sender.remove(&from);
            }
        }
    }
}
