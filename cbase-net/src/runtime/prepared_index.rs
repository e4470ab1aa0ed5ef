//! The index of a restarted replica's stable checkpoint, built ahead of
//! need from the state it just loaded.
//!
//! A replica restarted from its data directory has usually fallen behind:
//! its peers moved on while it was down. To fetch only what differs, it
//! compares the checkpoint they agree on with its own stable one, indexed
//! (see [`crate::checkpoint::parts`]), and indexing a large state costs
//! seconds: reading it back from disk, then hashing every entry. It has
//! just read that state to restore its service, so it indexes that copy on
//! a thread of its own while it replays its log and waits for its peers'
//! manifest (which costs them as long).
//!
//! The index is taken by the first comparison even if the replica's stable
//! checkpoint moved on meanwhile (it often does, executing what its peers
//! still have in their logs): any state the replica had is a sound base to
//! compare with, since every part fetched is checked against the agreed
//! root and a bucket is kept only if its digest equals the agreed one. An
//! older base costs only the buckets changed since it. It holds a second
//! copy of the whole state, so it is let go if no transfer takes it within
//! [`KEEP`], or when a transferred state is installed.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::checkpoint::CheckpointState;
use crate::checkpoint::parts::CheckpointIndex;
use crate::message::Seq;

/// How long a prepared index waits to be taken.
const KEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// What is prepared: nothing, an index being built, or one ready.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Building(Seq),
    Ready(Seq, Arc<CheckpointIndex>),
}

/// An index of one checkpoint, built on a thread of its own and taken once.
#[derive(Debug, Default)]
pub(super) struct PreparedIndex {
    slot: Arc<(Mutex<Slot>, Condvar)>,
}

impl PreparedIndex {
    /// Starts indexing `state`, checkpoint `seq`, replacing whatever was
    /// prepared before.
    pub(super) fn prepare(&self, seq: Seq, state: Arc<CheckpointState>) {
        let slot = Arc::clone(&self.slot);
        let replaced = std::mem::replace(&mut *slot.0.lock(), Slot::Building(seq));
        drop(replaced);
        let started = std::thread::Builder::new()
            .name("cbase-index".to_owned())
            .spawn(move || {
                let index = Arc::new(CheckpointIndex::build(state));
                let (lock, ready) = &*slot;
                let mut current = lock.lock();
                if !matches!(*current, Slot::Building(at) if at == seq) {
                    // Let go of meanwhile: nobody will compare with it.
                    drop(current);
                    drop(index);
                    super::memory::give_back();
                    return;
                }
                *current = Slot::Ready(seq, index);
                ready.notify_all();
                // Not taken in time: the replica did not fall behind.
                let deadline = std::time::Instant::now() + KEEP;
                while matches!(*current, Slot::Ready(at, _) if at == seq) {
                    if ready.wait_until(&mut current, deadline).timed_out() {
                        let held = std::mem::take(&mut *current);
                        drop(current);
                        drop(held);
                        super::memory::give_back();
                        return;
                    }
                }
            });
        if started.is_err() {
            // No thread to spare: the comparison indexes it when needed.
            *self.slot.0.lock() = Slot::Empty;
        }
    }

    /// The prepared index, with its checkpoint, if one is prepared or being
    /// built (then waits for it). Taken: a second call gets `None`.
    pub(super) fn take(&self) -> Option<(Seq, Arc<CheckpointIndex>)> {
        let (lock, ready) = &*self.slot;
        let mut current = lock.lock();
        while matches!(*current, Slot::Building(_)) {
            ready.wait(&mut current);
        }
        let taken = std::mem::take(&mut *current);
        // Wakes the builder, which waits to let it go.
        ready.notify_all();
        match taken {
            Slot::Ready(at, index) => Some((at, index)),
            _ => None,
        }
    }

    /// Lets go of what is prepared (a newer state was installed).
    pub(super) fn forget(&self) {
        let (lock, ready) = &*self.slot;
        let held = std::mem::take(&mut *lock.lock());
        ready.notify_all();
        if matches!(held, Slot::Ready(..)) {
            drop(held);
            super::memory::give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: u8) -> Arc<CheckpointState> {
        Arc::new(CheckpointState::new(
            cbase_core::Snapshot::from_parts(vec![(
                "t".to_owned(),
                [(vec![1], vec![value])].into(),
            )]),
            Default::default(),
            0,
        ))
    }

    #[test]
    fn the_prepared_index_is_taken_once() {
        let prepared = PreparedIndex::default();
        assert!(prepared.take().is_none(), "nothing prepared");
        prepared.prepare(8, state(3));
        let (seq, index) = prepared.take().expect("waits for it to be built");
        assert_eq!(seq, 8);
        assert_eq!(index.manifest().digest(), state(3).digest());
        assert!(prepared.take().is_none(), "taken once");
    }

    #[test]
    fn an_installed_state_or_a_newer_preparation_replaces_it() {
        let prepared = PreparedIndex::default();
        prepared.prepare(8, state(3));
        prepared.forget();
        assert!(prepared.take().is_none());
        prepared.prepare(8, state(3));
        prepared.prepare(12, state(4));
        let (seq, index) = prepared.take().unwrap();
        assert_eq!(seq, 12);
        assert_eq!(index.manifest().digest(), state(4).digest());
    }
}
