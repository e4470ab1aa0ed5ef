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
use crate::message::{Checkpoint, Hash, Seq};
use crate::storage::{BaseUpdate, Storage, StorageError};

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
    /// The base came whole (a state transfer) and is not on disk yet.
    base_unwritten: bool,
    newer: VecDeque<Newer>,
}

/// The recent checkpoints of one replica. Shared by its execution (which
/// adds them) and whatever serves them to peers.
#[derive(Debug)]
pub struct CheckpointStore {
    inner: Mutex<Inner>,
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
    /// writes it to `storage` (if any) in one durable commit, then makes it
    /// the base. A checkpoint this replica does not hold (it has not
    /// executed that far, or holds a later base) changes nothing.
    pub fn stabilize(
        &self,
        seq: Seq,
        digest: Hash,
        proof: &[Checkpoint],
        storage: Option<&Storage>,
    ) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        if seq == inner.base_seq {
            if inner.base_unwritten && inner.base_digest == digest {
                if let Some(storage) = storage {
                    let base = &inner.base;
                    storage.stabilize(
                        seq,
                        digest,
                        proof,
                        &base.clients,
                        base.clock,
                        BaseUpdate::Whole(&base.snapshot),
                    )?;
                }
                inner.base_unwritten = false;
            }
            return Ok(());
        }
        let Some(last) = inner.newer.iter().position(|n| n.seq == seq) else {
            return Ok(());
        };
        if inner.newer[last].digest != digest {
            // Our own checkpoint differs from the agreed one: the protocol
            // repairs this replica by state transfer; nothing to keep.
            return Ok(());
        }
        if let Some(storage) = storage {
            let newest = &inner.newer[last];
            let changes: Vec<&StateChanges> = inner
                .newer
                .iter()
                .take(last + 1)
                .map(|n| &*n.changes)
                .collect();
            if inner.base_unwritten {
                // The base on disk is older than the one in memory: write
                // the whole of this checkpoint instead.
                let mut state = CheckpointState::clone(&inner.base);
                for changes in &changes {
                    state.snapshot.apply(changes);
                }
                storage.stabilize(
                    seq,
                    digest,
                    proof,
                    &newest.clients,
                    newest.clock,
                    BaseUpdate::Whole(&state.snapshot),
                )?;
            } else {
                storage.stabilize(
                    seq,
                    digest,
                    proof,
                    &newest.clients,
                    newest.clock,
                    BaseUpdate::Changes(&changes),
                )?;
            }
        }
        for _ in 0..=last {
            let oldest = inner.newer.pop_front().expect("held");
            inner.base_seq = oldest.seq;
            inner.base_digest = oldest.digest;
            // Copies the base only if a peer is being served it right now.
            let base = Arc::make_mut(&mut inner.base);
            base.snapshot.apply(&oldest.changes);
            base.clients = oldest.clients;
            base.clock = oldest.clock;
        }
        inner.base_unwritten = false;
        Ok(())
    }

    /// Replaces everything with `state`, installed at `seq` (state transfer).
    pub fn install(&self, seq: Seq, digest: Hash, state: Arc<CheckpointState>) {
        let mut inner = self.inner.lock();
        inner.base_seq = seq;
        inner.base_digest = digest;
        inner.base = state;
        inner.base_unwritten = true;
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

    /// The sequence numbers held, oldest first.
    pub fn held(&self) -> Vec<Seq> {
        let inner = self.inner.lock();
        std::iter::once(inner.base_seq)
            .chain(inner.newer.iter().map(|n| n.seq))
            .collect()
    }
}
