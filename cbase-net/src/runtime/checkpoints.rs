//! The checkpoints a replica can serve to peers that fell behind, and (with
//! a data directory) keeps on disk.
//!
//! Taking a checkpoint copies nothing: the executor's barrier only folds the
//! changes since the last one into the state's digest and hands them over
//! (see [`Execution`](super::execution::Execution)). This store keeps the
//! state of the stable checkpoint in full (the *base*) and the changes of
//! the checkpoints taken after it. When a later checkpoint becomes stable,
//! its changes (and those before it) are written to the data directory in
//! one durable commit, then folded into the base: each costs what changed.
//! The protocol never lets execution run more than a window ahead of the
//! stable checkpoint, so the changes held are bounded by the window. A peer
//! asking for a checkpoint in the store gets it materialized (the base, with
//! the changes up to it applied) outside the store's lock.

use std::collections::VecDeque;
use std::sync::Arc;

use cbase_core::StateChanges;
use parking_lot::Mutex;

use crate::checkpoint::CheckpointState;
use crate::checkpoint::parts::{CheckpointIndex, LocalCheckpoint};
use crate::message::{Checkpoint, Hash, Seq};
use crate::storage::{Storage, StorageError};

use super::execution::CheckpointRecord;

/// A checkpoint's changes since the one before, as the store keeps them.
#[derive(Debug)]
struct Newer {
    seq: Seq,
    digest: Hash,
    changes: Arc<StateChanges>,
    clients: crate::checkpoint::ClientTable,
    clock: u64,
}

#[derive(Debug)]
struct Inner {
    base_seq: Seq,
    base_digest: Hash,
    base: Arc<CheckpointState>,
    /// The base came whole (the initial state, a state transfer) and is
    /// not on disk yet.
    base_unwritten: bool,
    /// Counts the bases installed whole, so that a write begun before one
    /// does not mark the new one written.
    generation: u64,
    newer: VecDeque<Newer>,
}

/// The recent checkpoints of one replica. Shared by its execution (which
/// adds them) and whatever serves them to peers.
#[derive(Debug)]
pub struct CheckpointStore {
    inner: Mutex<Inner>,
}

/// A stable checkpoint on its way to disk: what the store's base must move
/// by, gathered under its lock and written outside it.
pub struct StableWrite {
    seq: Seq,
    digest: Hash,
    proof: Vec<Checkpoint>,
    /// The base, if the disk does not have it yet.
    whole: Option<Arc<CheckpointState>>,
    changes: Vec<Arc<StateChanges>>,
    clients: crate::checkpoint::ClientTable,
    clock: u64,
    generation: u64,
}

impl StableWrite {
    /// The checkpoint's sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Writes it to `storage` in one durable commit. Costs what changed
    /// since the stored checkpoint (or the whole state, once, if the disk
    /// has none that the changes apply to).
    pub fn write(&self, storage: &Storage) -> Result<(), StorageError> {
        let changes: Vec<&StateChanges> = self.changes.iter().map(|c| &**c).collect();
        storage.stabilize(
            self.seq,
            self.digest,
            &self.proof,
            &self.clients,
            self.clock,
            self.whole.as_ref().map(|w| &w.snapshot),
            &changes,
        )
    }
}

/// What it takes to materialize one checkpoint, taken from the store under
/// its lock and built outside it.
pub struct Materialize {
    base: Arc<CheckpointState>,
    changes: Vec<Arc<StateChanges>>,
    clients: crate::checkpoint::ClientTable,
    clock: u64,
}

impl Materialize {
    /// The checkpoint's whole state. Costs O(state) unless it is the base.
    pub fn build(self) -> Arc<CheckpointState> {
        if self.changes.is_empty() {
            return self.base;
        }
        let mut state = CheckpointState::clone(&self.base);
        for changes in &self.changes {
            state.snapshot.apply(changes);
        }
        state.clients = self.clients;
        state.clock = self.clock;
        Arc::new(state)
    }
}

impl CheckpointStore {
    /// A store whose base is `state`, the checkpoint at `seq` with `digest`.
    pub fn new(seq: Seq, digest: Hash, state: CheckpointState) -> CheckpointStore {
        CheckpointStore {
            inner: Mutex::new(Inner {
                base_seq: seq,
                base_digest: digest,
                base: Arc::new(state),
                // The initial state is on no disk yet.
                base_unwritten: true,
                generation: 0,
                newer: VecDeque::new(),
            }),
        }
    }

    /// Adds the checkpoint `record` took (the next after the newest held).
    pub fn push(&self, record: &CheckpointRecord) {
        self.inner.lock().newer.push_back(Newer {
            seq: record.seq,
            digest: record.digest,
            changes: Arc::clone(&record.changes),
            clients: record.clients.clone(),
            clock: record.clock,
        });
    }

    /// Checkpoint `seq` became stable with `digest`, proven by `proof`:
    /// writes it to `storage` (if any), then makes it the base. The same as
    /// [`begin_stabilize`](Self::begin_stabilize), [`StableWrite::write`] and
    /// [`finish_stabilize`](Self::finish_stabilize) in a row.
    pub fn stabilize(
        &self,
        seq: Seq,
        digest: Hash,
        proof: &[Checkpoint],
        storage: Option<&Storage>,
    ) -> Result<(), StorageError> {
        if let Some(write) = self.begin_stabilize(seq, digest, proof) {
            if let Some(storage) = storage {
                write.write(storage)?;
            }
            self.finish_stabilize(write);
        }
        Ok(())
    }

    /// What writing stable checkpoint `seq` to disk takes, gathered under
    /// the lock (references, no copies); `None` if there is nothing to write
    /// (the store does not hold it, or holds a later base, or its own digest
    /// differs: the protocol repairs that by state transfer).
    pub fn begin_stabilize(
        &self,
        seq: Seq,
        digest: Hash,
        proof: &[Checkpoint],
    ) -> Option<StableWrite> {
        let inner = self.inner.lock();
        let (changes, clients, clock) = if seq == inner.base_seq {
            if !inner.base_unwritten || inner.base_digest != digest {
                return None;
            }
            (Vec::new(), inner.base.clients.clone(), inner.base.clock)
        } else {
            let last = inner.newer.iter().position(|n| n.seq == seq)?;
            let newest = &inner.newer[last];
            if newest.digest != digest {
                return None;
            }
            let changes = inner
                .newer
                .iter()
                .take(last + 1)
                .map(|n| Arc::clone(&n.changes))
                .collect();
            (changes, newest.clients.clone(), newest.clock)
        };
        Some(StableWrite {
            seq,
            digest,
            proof: proof.to_vec(),
            whole: inner.base_unwritten.then(|| Arc::clone(&inner.base)),
            changes,
            clients,
            clock,
            generation: inner.generation,
        })
    }

    /// After `write` reached the disk (or at once, without one): folds the
    /// checkpoints up to its own into the base.
    pub fn finish_stabilize(&self, write: StableWrite) {
        // Its hold on the base goes first: folding into a base that is
        // shared would copy all of it.
        let (seq, generation) = (write.seq, write.generation);
        drop(write);
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            // A transferred state replaced the base meanwhile.
            return;
        }
        while inner.newer.front().is_some_and(|n| n.seq <= seq) {
            let oldest = inner.newer.pop_front().expect("held");
            inner.base_seq = oldest.seq;
            inner.base_digest = oldest.digest;
            // Copies the base only if a peer is being served it right now.
            let base = Arc::make_mut(&mut inner.base);
            base.snapshot.apply(&oldest.changes);
            base.clients = oldest.clients;
            base.clock = oldest.clock;
        }
        if inner.base_seq == seq {
            inner.base_unwritten = false;
        }
    }

    /// Replaces everything with `state`, installed at `seq` (state transfer).
    pub fn install(&self, seq: Seq, digest: Hash, state: Arc<CheckpointState>) {
        let mut inner = self.inner.lock();
        inner.base_seq = seq;
        inner.base_digest = digest;
        inner.base = state;
        inner.base_unwritten = true;
        inner.generation += 1;
        inner.newer.clear();
    }

    /// The base is on disk already: it was just read from there.
    pub fn mark_written(&self) {
        self.inner.lock().base_unwritten = false;
    }

    /// How to materialize checkpoint `seq`, with its digest, if the store has it.
    pub fn get(&self, seq: Seq) -> Option<(Hash, Materialize)> {
        let inner = self.inner.lock();
        if seq == inner.base_seq {
            return Some((
                inner.base_digest,
                Materialize {
                    base: Arc::clone(&inner.base),
                    changes: Vec::new(),
                    clients: Default::default(),
                    clock: 0,
                },
            ));
        }
        let last = inner.newer.iter().position(|n| n.seq == seq)?;
        let newest = &inner.newer[last];
        Some((
            newest.digest,
            Materialize {
                base: Arc::clone(&inner.base),
                changes: inner
                    .newer
                    .iter()
                    .take(last + 1)
                    .map(|n| Arc::clone(&n.changes))
                    .collect(),
                clients: newest.clients.clone(),
                clock: newest.clock,
            },
        ))
    }

    /// The whole state of checkpoint `seq`, if the store has it.
    pub fn state(&self, seq: Seq) -> Option<Arc<CheckpointState>> {
        self.get(seq).map(|(_, materialize)| materialize.build())
    }

    /// The stable checkpoint held in full, with its sequence number.
    pub fn base(&self) -> (Seq, Arc<CheckpointState>) {
        let inner = self.inner.lock();
        (inner.base_seq, Arc::clone(&inner.base))
    }

    /// The sequence numbers held, oldest first.
    pub fn held(&self) -> Vec<Seq> {
        let inner = self.inner.lock();
        std::iter::once(inner.base_seq)
            .chain(inner.newer.iter().map(|n| n.seq))
            .collect()
    }
}

/// A replica fetching a checkpoint compares it with its stable one (the
/// base): checkpoints after it differ from it by at most a window of
/// requests, and it needs no copy.
impl LocalCheckpoint for CheckpointStore {
    fn index(&self) -> Option<Arc<CheckpointIndex>> {
        Some(Arc::new(CheckpointIndex::build(self.base().1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbase_core::{Snapshot, StateChanges};
    use std::time::Duration;

    fn state(value: u8) -> CheckpointState {
        let entries = [(vec![1u8], vec![value])].into();
        CheckpointState::new(
            Snapshot::from_parts(vec![("t".to_owned(), entries)]),
            Default::default(),
            0,
        )
    }

    fn record(seq: Seq, value: u8) -> CheckpointRecord {
        let changes = StateChanges::from_parts(vec![(
            "t".to_owned(),
            [(vec![1u8], Some(vec![value]))].into(),
        )]);
        CheckpointRecord {
            seq,
            digest: state(value).digest(),
            state_digest: state(value).snapshot.digest(),
            changes: Arc::new(changes),
            clients: Default::default(),
            client_table_bytes: 0,
            clock: 0,
            barrier: Duration::ZERO,
        }
    }

    #[test]
    fn a_stable_checkpoint_is_folded_into_the_base_without_copying_it() {
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.push(&record(4, 4));
        store.push(&record(8, 8));
        let base = Arc::as_ptr(&store.state(0).unwrap());
        store.stabilize(4, state(4).digest(), &[], None).unwrap();
        assert_eq!(store.held(), [4, 8]);
        let folded = store.state(4).unwrap();
        assert_eq!(folded.digest(), state(4).digest());
        assert_eq!(Arc::as_ptr(&folded), base, "the base was changed in place");
        drop(folded);
        // A later checkpoint is still materialized from the base.
        assert_eq!(store.state(8).unwrap().digest(), state(8).digest());
        // One the store does not hold, or with another digest, changes nothing.
        store.stabilize(12, [1; 32], &[], None).unwrap();
        store.stabilize(8, [1; 32], &[], None).unwrap();
        assert_eq!(store.held(), [4, 8]);
    }

    #[test]
    fn a_write_begun_before_a_state_transfer_does_not_touch_its_base() {
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.push(&record(4, 4));
        let write = store
            .begin_stabilize(4, state(4).digest(), &[])
            .expect("held");
        store.install(12, state(12).digest(), Arc::new(state(12)));
        store.finish_stabilize(write);
        assert_eq!(store.held(), [12]);
        assert_eq!(store.state(12).unwrap().digest(), state(12).digest());
    }
}
