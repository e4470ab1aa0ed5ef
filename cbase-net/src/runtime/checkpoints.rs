//! The checkpoints a replica can serve to peers that fell behind, and (with
//! a data directory) keeps on disk.
//!
//! Taking a checkpoint copies nothing: the executor's barrier only folds the
//! changes since the last one into the state's digest and hands them over
//! (see [`Execution`](super::execution::Execution)). This store keeps the
//! state of the stable checkpoint (the *base*) and the changes of the
//! checkpoints taken after it. When a later checkpoint becomes stable, its
//! changes (and those before it) are written to the data directory in one
//! durable commit: each costs what changed. The protocol never lets
//! execution run more than a window ahead of its stable checkpoint, and
//! execution waits for the disk while the writes handed to it run a window
//! ahead of the last one written ([`CheckpointStore::limit_unwritten`]), so
//! the changes held are bounded by two windows, however slow the disk.
//!
//! With a data directory, the base lives there once written, and nowhere
//! in memory: the service holds the live state, and a second copy of it in
//! memory would double what a replica needs. It is read back only when a
//! peer that fell behind is served it, or a state transfer compares with it.
//! Without one, the base is not copied either: the service state keeps the
//! earlier values of the entries changed since the stable checkpoint
//! ([`State::keep_versions`](cbase_core::State::keep_versions)), and a
//! checkpoint is read from the live state with those put back ([`LiveState`]),
//! while requests go on ([`CheckpointStore::live`]). A store made with
//! [`CheckpointStore::new`] instead holds its base as a whole copy in
//! memory (with a data directory, until it is on disk), with the changes
//! folded into it. A peer asking for a checkpoint in the store gets it
//! materialized outside the store's locks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cbase_core::{Snapshot, StateChanges};
use parking_lot::{Condvar, Mutex};

use crate::checkpoint::CheckpointState;
use crate::checkpoint::parts::{CheckpointIndex, LocalCheckpoint};
use crate::message::{Checkpoint, Hash, Seq};
use crate::storage::{Storage, StorageError};

use super::execution::CheckpointRecord;
use super::prepared_index::PreparedIndex;

/// A checkpoint's changes since the one before, as the store keeps them.
#[derive(Debug)]
struct Newer {
    seq: Seq,
    digest: Hash,
    changes: Arc<StateChanges>,
    clients: crate::checkpoint::ClientTable,
    clock: u64,
}

/// The service's live state, read at a recent checkpoint: how a replica
/// without a data directory serves its checkpoints with no copy of its state.
pub trait LiveState: Send + Sync {
    /// The service state at checkpoint `seq` (O(state) to encode, while
    /// requests run); `None` if it can no longer be read (let go).
    fn snapshot_at(&self, seq: Seq) -> Option<Snapshot>;

    /// Checkpoints before `seq` will not be read again.
    fn forget_before(&self, seq: Seq);
}

impl std::fmt::Debug for dyn LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveState")
    }
}

/// Where the stable checkpoint's state is kept.
#[derive(Debug)]
enum Base {
    /// In memory, whole: a replica without a data directory, or a base that
    /// came whole (the initial state, a state transfer) until it is on disk.
    Memory(Arc<CheckpointState>),
    /// In the data directory only: read back when a peer is served it or a
    /// state transfer compares with it, so a durable replica holds its state
    /// once in memory (in the service), not twice.
    Stored(Arc<Storage>),
    /// Nowhere but the live service state and the versions it keeps (a
    /// replica without a data directory): read from there when asked for.
    Live {
        live: Arc<dyn LiveState>,
        clients: crate::checkpoint::ClientTable,
        clock: u64,
    },
}

#[derive(Debug)]
struct Stable {
    seq: Seq,
    digest: Hash,
    base: Base,
    /// The base came whole and is not on disk yet.
    unwritten: bool,
    /// A write of the whole base is on its way to disk: later writes, which
    /// reach the disk after it, carry only changes.
    whole_pending: bool,
    /// The newest checkpoint whose changes a write begun already carries:
    /// writes reach the disk in the order they are begun, so the next one
    /// carries only the changes after it.
    handed: Seq,
    /// Counts the bases installed whole, so that a write begun before one
    /// does not mark the new one written.
    generation: u64,
}

/// The recent checkpoints of one replica. Shared by its execution (which
/// adds them) and whatever serves them to peers.
///
/// Two locks, always taken in this order when both are: the stable
/// checkpoint's, which folding a stable checkpoint into an in-memory base
/// holds for as long as that takes, and the newer checkpoints', which
/// execution takes at every checkpoint and so never waits for a fold.
#[derive(Debug)]
pub struct CheckpointStore {
    stable: Mutex<Stable>,
    newer: Mutex<VecDeque<Newer>>,
    /// The data directory that stable checkpoints are written to, if any.
    storage: OnceLock<Arc<Storage>>,
    /// The live state that checkpoints are read from, for a replica with
    /// no data directory ([`CheckpointStore::live`]).
    live: OnceLock<Arc<dyn LiveState>>,
    /// After a restart, the stable checkpoint indexed from the state just
    /// loaded, for the state transfer that usually follows.
    prepared: PreparedIndex,
    /// How far (in sequence numbers) the stable checkpoints handed to the
    /// disk may run ahead of the last one written before execution waits
    /// for the disk ([`limit_unwritten`](Self::limit_unwritten)).
    unwritten_limit: AtomicU64,
    /// Signalled whenever a write finishes, the base is replaced, or the
    /// writer stops.
    written: Condvar,
    /// The thread that finishes writes has stopped: nobody waits for it.
    writer_gone: AtomicBool,
    /// How many times the stable checkpoint was read back from disk.
    #[cfg(test)]
    base_reads: std::sync::atomic::AtomicUsize,
    /// Pushes waiting for the disk now.
    #[cfg(test)]
    waiting_pushes: std::sync::atomic::AtomicUsize,
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
/// its locks and built outside them.
pub struct Materialize {
    seq: Seq,
    base: Source,
    /// The changes of the checkpoints after the base up to `seq`, oldest first.
    changes: Vec<(Seq, Arc<StateChanges>)>,
    clients: crate::checkpoint::ClientTable,
    clock: u64,
}

/// Where a materialized checkpoint starts from.
enum Source {
    Memory(Arc<CheckpointState>),
    Stored(Arc<Storage>),
    /// Read whole from the live state: no changes to apply.
    Live(Arc<dyn LiveState>),
}

impl Materialize {
    /// The checkpoint's whole state. Costs O(state) unless it is an
    /// in-memory base. `None` if it is no longer to be had: the disk moved
    /// past it meanwhile, or could not be read (which is logged).
    pub fn build(self) -> Option<Arc<CheckpointState>> {
        let (from, state) = match self.base {
            Source::Live(live) => {
                let snapshot = live.snapshot_at(self.seq)?;
                return Some(Arc::new(CheckpointState::new(
                    snapshot,
                    self.clients,
                    self.clock,
                )));
            }
            Source::Memory(base) if self.changes.is_empty() => return Some(base),
            Source::Memory(base) => (0, CheckpointState::clone(&base)),
            Source::Stored(storage) => match storage.stable_state() {
                Ok(Some((stored, state))) if stored <= self.seq => (stored, state),
                Ok(_) => return None,
                Err(error) => {
                    tracing::warn!(%error, "a stored checkpoint could not be read back");
                    return None;
                }
            },
        };
        let mut state = state;
        // The disk may have moved on from the base this was gathered at,
        // but not past `seq`: the changes it has already folded in are
        // skipped, and those after it bring it to `seq`.
        let mut changed = false;
        for (_, changes) in self.changes.iter().filter(|(at, _)| *at > from) {
            state.snapshot.apply(changes);
            changed = true;
        }
        if changed {
            state.clients = self.clients;
            state.clock = self.clock;
        }
        Some(Arc::new(state))
    }
}

impl CheckpointStore {
    /// A store whose base is `state`, the checkpoint at `seq` with `digest`.
    pub fn new(seq: Seq, digest: Hash, state: CheckpointState) -> CheckpointStore {
        // The initial state is on no disk yet.
        CheckpointStore::with_base(seq, digest, Base::Memory(Arc::new(state)), true)
    }

    /// A store whose checkpoints are read from `live`, the service state
    /// (which keeps versions from checkpoint `seq` on), never copied: for a
    /// replica with no data directory. `seq` has `digest`, an empty client
    /// table and the agreed clock at 0 (the initial state).
    pub fn live(seq: Seq, digest: Hash, live: Arc<dyn LiveState>) -> CheckpointStore {
        let base = Base::Live {
            live: Arc::clone(&live),
            clients: Default::default(),
            clock: 0,
        };
        let store = CheckpointStore::with_base(seq, digest, base, false);
        let _ = store.live.set(live);
        store
    }

    fn with_base(seq: Seq, digest: Hash, base: Base, unwritten: bool) -> CheckpointStore {
        CheckpointStore {
            stable: Mutex::new(Stable {
                seq,
                digest,
                base,
                unwritten,
                whole_pending: false,
                handed: seq,
                generation: 0,
            }),
            newer: Mutex::new(VecDeque::new()),
            storage: OnceLock::new(),
            live: OnceLock::new(),
            prepared: PreparedIndex::default(),
            unwritten_limit: AtomicU64::new(u64::MAX),
            written: Condvar::new(),
            writer_gone: AtomicBool::new(false),
            #[cfg(test)]
            base_reads: Default::default(),
            #[cfg(test)]
            waiting_pushes: Default::default(),
        }
    }

    /// Makes [`push`](Self::push) wait while the stable checkpoints handed
    /// to the disk ([`begin_stabilize`](Self::begin_stabilize)) run `seqs`
    /// or more sequence numbers ahead of the last one written
    /// ([`finish_stabilize`](Self::finish_stabilize)). The protocol keeps
    /// execution within a window of *its* stable checkpoint, not of the
    /// disk's: on a disk slower than the state changes, the checkpoints
    /// waiting to be written (each with its changes and client table) would
    /// otherwise pile up without bound. With a limit of the window, the
    /// store holds at most two windows of checkpoints.
    pub fn limit_unwritten(&self, seqs: u64) {
        self.unwritten_limit.store(seqs.max(1), Ordering::Release);
    }

    /// The thread that finishes writes stopped (the replica halts or shuts
    /// down): [`push`](Self::push) no longer waits for it.
    pub fn writer_stopped(&self) {
        self.writer_gone.store(true, Ordering::Release);
        let _stable = self.stable.lock();
        self.written.notify_all();
    }

    /// Stable checkpoints are written to `storage`: from the first one
    /// written on, the store keeps the base there and not in memory.
    pub fn keep_on(&self, storage: Arc<Storage>) {
        let _ = self.storage.set(storage);
    }

    /// Adds the checkpoint `record` took (the next after the newest held),
    /// first waiting while the disk lags too far behind (see
    /// [`limit_unwritten`](Self::limit_unwritten)). Only writes begun wait:
    /// a replica whose checkpoints the others never confirm (it diverged)
    /// begins none, and goes on to the state transfer that repairs it.
    pub fn push(&self, record: &CheckpointRecord) {
        let limit = self.unwritten_limit.load(Ordering::Acquire);
        if limit != u64::MAX {
            let mut stable = self.stable.lock();
            while stable.handed.saturating_sub(stable.seq) >= limit
                && !self.writer_gone.load(Ordering::Acquire)
            {
                #[cfg(test)]
                self.waiting_pushes.fetch_add(1, Ordering::AcqRel);
                self.written.wait(&mut stable);
                #[cfg(test)]
                self.waiting_pushes.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.newer.lock().push_back(Newer {
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
        let mut stable = self.stable.lock();
        if seq < stable.handed {
            // A write of a later stable checkpoint is begun already: this
            // one, written after it, would move the disk back.
            return None;
        }
        let newer = self.newer.lock();
        let whole = match (&stable.base, stable.unwritten && !stable.whole_pending) {
            (Base::Memory(base), true) => Some(Arc::clone(base)),
            _ => None,
        };
        let (changes, clients, clock) = if seq == stable.seq {
            let base = whole.as_ref().filter(|_| stable.digest == digest)?;
            (Vec::new(), base.clients.clone(), base.clock)
        } else {
            let last = newer.iter().position(|n| n.seq == seq)?;
            let newest = &newer[last];
            if newest.digest != digest {
                return None;
            }
            let changes = newer
                .iter()
                .take(last + 1)
                .filter(|n| n.seq > stable.handed)
                .map(|n| Arc::clone(&n.changes))
                .collect();
            (changes, newest.clients.clone(), newest.clock)
        };
        stable.handed = stable.handed.max(seq);
        // Writes reach the disk in the order they are begun (one thread
        // writes them), so one whole base is enough: the writes after it
        // apply their changes, from the base on, over it. Writing the
        // whole state again for each would cost O(state) apiece.
        stable.whole_pending |= whole.is_some();
        Some(StableWrite {
            seq,
            digest,
            proof: proof.to_vec(),
            whole,
            changes,
            clients,
            clock,
            generation: stable.generation,
        })
    }

    /// After `write` reached the disk (or at once, without one): folds the
    /// checkpoints up to its own into the base. With a data directory the
    /// base is now on disk, and the one in memory is let go.
    pub fn finish_stabilize(&self, write: StableWrite) {
        // Its hold on the base goes first: folding into a base that is
        // shared would copy all of it.
        let (seq, generation) = (write.seq, write.generation);
        drop(write);
        self.fold_written(seq, generation);
        // Under the lock, so that a `push` that just found the disk behind
        // is waiting by now and not about to.
        let _stable = self.stable.lock();
        self.written.notify_all();
    }

    /// Folds the checkpoints up to `seq`, just written, into the base,
    /// unless the base was replaced since (another `generation`).
    fn fold_written(&self, seq: Seq, generation: u64) {
        let mut stable = self.stable.lock();
        if stable.generation != generation {
            // A transferred state replaced the base meanwhile.
            return;
        }
        let folded: Vec<Newer> = {
            let mut newer = self.newer.lock();
            let count = newer.iter().take_while(|n| n.seq <= seq).count();
            newer.drain(..count).collect()
        };
        let Some(last) = folded.last() else {
            if stable.seq == seq {
                let held = self.mark_stored(&mut stable);
                drop(stable);
                let_go(held);
            }
            return;
        };
        stable.seq = last.seq;
        stable.digest = last.digest;
        if let Base::Live {
            live,
            clients,
            clock,
        } = &mut stable.base
        {
            *clients = last.clients.clone();
            *clock = last.clock;
            live.forget_before(last.seq);
            return;
        }
        if let Some(storage) = self.storage.get() {
            // The write just put these changes on disk.
            let held = std::mem::replace(&mut stable.base, Base::Stored(Arc::clone(storage)));
            stable.unwritten = false;
            drop(stable);
            let_go(held);
            return;
        }
        for oldest in folded {
            if let Base::Memory(base) = &mut stable.base {
                // Copies the base only if a peer is being served it right now.
                let base = Arc::make_mut(base);
                base.snapshot.apply(&oldest.changes);
                base.clients = oldest.clients;
                base.clock = oldest.clock;
            }
        }
        stable.unwritten = false;
    }

    /// The base is on disk: keep it there only, if the store knows the disk.
    /// Returns the base it held in memory, for the caller to let go of
    /// outside the lock.
    #[must_use]
    fn mark_stored(&self, stable: &mut Stable) -> Option<Base> {
        stable.unwritten = false;
        let storage = self.storage.get()?;
        Some(std::mem::replace(
            &mut stable.base,
            Base::Stored(Arc::clone(storage)),
        ))
    }

    /// Replaces everything with `state`, installed at `seq` (state transfer).
    /// In a store read from the live state ([`live`](Self::live)), the
    /// state installed in the service keeps versions from `seq` on, and the
    /// copy is not held.
    pub fn install(&self, seq: Seq, digest: Hash, state: Arc<CheckpointState>) {
        let mut stable = self.stable.lock();
        stable.seq = seq;
        stable.digest = digest;
        let held = match self.live.get() {
            Some(live) => std::mem::replace(
                &mut stable.base,
                Base::Live {
                    live: Arc::clone(live),
                    clients: state.clients.clone(),
                    clock: state.clock,
                },
            ),
            None => std::mem::replace(&mut stable.base, Base::Memory(state)),
        };
        stable.unwritten = self.live.get().is_none();
        stable.whole_pending = false;
        stable.handed = seq;
        stable.generation += 1;
        self.newer.lock().clear();
        self.prepared.forget();
        // Nothing handed is unwritten any more.
        self.written.notify_all();
        drop(stable);
        let_go(held);
    }

    /// The base is on disk already: it was just read from there (a
    /// restart). The copy read is indexed on a thread of its own for the
    /// state transfer that usually follows, then let go (see the runtime's
    /// `prepared_index` module).
    pub fn mark_written(&self) {
        let mut stable = self.stable.lock();
        let seq = stable.seq;
        let held = self.mark_stored(&mut stable);
        drop(stable);
        match held {
            Some(Base::Memory(state)) => self.prepared.prepare(seq, state),
            held => let_go(held),
        }
    }

    /// How to materialize checkpoint `seq`, with its digest, if the store has it.
    pub fn get(&self, seq: Seq) -> Option<(Hash, Materialize)> {
        let stable = self.stable.lock();
        let base = match &stable.base {
            Base::Memory(state) => Source::Memory(Arc::clone(state)),
            Base::Stored(storage) => Source::Stored(Arc::clone(storage)),
            Base::Live { live, .. } => Source::Live(Arc::clone(live)),
        };
        if seq == stable.seq {
            // A base read from the live state takes the client table and
            // clock from here; the others carry their own.
            let (clients, clock) = match &stable.base {
                Base::Live { clients, clock, .. } => (clients.clone(), *clock),
                Base::Memory(_) | Base::Stored(_) => (Default::default(), 0),
            };
            return Some((
                stable.digest,
                Materialize {
                    seq,
                    base,
                    changes: Vec::new(),
                    clients,
                    clock,
                },
            ));
        }
        let newer = self.newer.lock();
        let last = newer.iter().position(|n| n.seq == seq)?;
        let newest = &newer[last];
        Some((
            newest.digest,
            Materialize {
                seq,
                base,
                changes: newer
                    .iter()
                    .take(last + 1)
                    .map(|n| (n.seq, Arc::clone(&n.changes)))
                    .collect(),
                clients: newest.clients.clone(),
                clock: newest.clock,
            },
        ))
    }

    /// The whole state of checkpoint `seq`, if the store has it (and, for
    /// one kept on disk, can still read it back).
    pub fn state(&self, seq: Seq) -> Option<Arc<CheckpointState>> {
        self.get(seq)?.1.build()
    }

    /// Whether [`base`](Self::base) can return checkpoint `seq`, as far as
    /// the store knows without reading it: `seq` is the stable checkpoint,
    /// or one a write begun already takes the disk to. Cheap, unlike
    /// reading a stored base back.
    pub fn may_be_base(&self, seq: Seq) -> bool {
        let stable = self.stable.lock();
        stable.seq <= seq && seq <= stable.handed.max(stable.seq)
    }

    /// The stable checkpoint in full, with its sequence number. For a base
    /// kept on disk this reads it back (O(state)), and the disk may have
    /// moved on to a later stable checkpoint: the two returned belong
    /// together. `None` if the disk could not be read (which is logged).
    pub fn base(&self) -> Option<(Seq, Arc<CheckpointState>)> {
        let storage = {
            let stable = self.stable.lock();
            match &stable.base {
                Base::Memory(state) => return Some((stable.seq, Arc::clone(state))),
                Base::Stored(storage) => Arc::clone(storage),
                Base::Live { .. } => {
                    let seq = stable.seq;
                    drop(stable);
                    // `None` if a later checkpoint became stable meanwhile
                    // and this one was let go: the caller asks again.
                    return self.state(seq).map(|state| (seq, state));
                }
            }
        };
        #[cfg(test)]
        self.base_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match storage.stable_state() {
            Ok(stored) => stored.map(|(seq, state)| (seq, Arc::new(state))),
            Err(error) => {
                tracing::warn!(%error, "the stable checkpoint could not be read back");
                None
            }
        }
    }

    /// How many times the stable checkpoint was read back from disk.
    #[cfg(test)]
    pub fn base_reads(&self) -> usize {
        self.base_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the base is held in memory (rather than on disk only).
    pub fn base_in_memory(&self) -> bool {
        matches!(self.stable.lock().base, Base::Memory(_))
    }

    /// The sequence numbers held, oldest first.
    pub fn held(&self) -> Vec<Seq> {
        let stable = self.stable.lock();
        std::iter::once(stable.seq)
            .chain(self.newer.lock().iter().map(|n| n.seq))
            .collect()
    }
}

/// Drops a base that was held in memory and, if it was the last hold on a
/// whole state, gives the memory back to the operating system.
fn let_go(held: impl Into<Option<Base>>) {
    if let Some(Base::Memory(state)) = held.into()
        && Arc::into_inner(state).is_some()
    {
        super::memory::give_back();
    }
}

/// A replica fetching a checkpoint compares it with its stable one (the
/// base): checkpoints after it differ from it by at most a window of
/// requests, and it needs no copy.
impl LocalCheckpoint for CheckpointStore {
    fn index(&self) -> Option<Arc<CheckpointIndex>> {
        if let Some((_, index)) = self.prepared.take() {
            // Prepared after a restart: perhaps older than the stable
            // checkpoint now, which is as sound a base (see the runtime's
            // `prepared_index` module).
            return Some(index);
        }
        let started = std::time::Instant::now();
        let base = self.base()?.1;
        let read = started.elapsed();
        let index = CheckpointIndex::build(base);
        tracing::info!(?read, took = ?started.elapsed(), "indexed our own checkpoint");
        Some(Arc::new(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The protocol thread begins a stable checkpoint's write
    /// (`begin_stabilize`) and moves on; the storage thread finishes it
    /// (`finish_stabilize`), and only that lets the store drop the
    /// checkpoints up to it. Execution runs up to a window past the
    /// protocol's stable checkpoint, not the store's: with a disk slower
    /// than checkpoints come, the store would keep every checkpoint since
    /// the last finished write (each with its changes and a copy of the
    /// client table). With the limit, execution waits for the disk instead,
    /// and the store holds a bounded number however the two threads
    /// interleave.
    #[test]
    fn checkpoints_held_while_stable_writes_are_queued_stay_within_the_window() {
        // Checkpoints every 4, a window of 2 intervals.
        let (interval, window) = (4u64, 8u64);
        let store = Arc::new(CheckpointStore::new(0, state(0).digest(), state(0)));
        store.limit_unwritten(window);
        let (writes, to_disk) = std::sync::mpsc::channel::<StableWrite>();
        let produced = Arc::new(AtomicBool::new(false));
        // The slowest disk: it finishes a write only once execution waits
        // for it (or has taken every checkpoint).
        let disk = {
            let (store, produced) = (Arc::clone(&store), Arc::clone(&produced));
            std::thread::spawn(move || {
                let mut most = 0;
                for write in to_disk {
                    while store.waiting_pushes.load(Ordering::Acquire) == 0
                        && !produced.load(Ordering::Acquire)
                    {
                        std::thread::yield_now();
                    }
                    store.finish_stabilize(write);
                    most = most.max(store.held().len());
                }
                most
            })
        };
        let mut most = 0;
        for i in 1..=64u64 {
            store.push(&record(interval * i, i as u8));
            most = most.max(store.held().len());
            // 2f+1 replicas agree on it at once: stable in the protocol,
            // which hands its write to the disk.
            let write = store
                .begin_stabilize(interval * i, state(i as u8).digest(), &[])
                .expect("the store holds it");
            writes.send(write).unwrap();
        }
        produced.store(true, Ordering::Release);
        drop(writes);
        let most = most.max(disk.join().unwrap());
        let bound = (window / interval + 2) as usize;
        assert!(
            most <= bound,
            "{most} checkpoints held at once while writes were queued (bound {bound})"
        );
        assert_eq!(store.held(), [64 * interval]);
    }

    /// A push waits while the writes handed to the disk run a window ahead
    /// of the last one written, and goes on once one finishes; and it never
    /// waits for a writer that stopped.
    #[test]
    fn a_checkpoint_waits_for_a_disk_a_window_behind_and_never_for_a_stopped_one() {
        let store = Arc::new(CheckpointStore::new(0, state(0).digest(), state(0)));
        store.limit_unwritten(8);
        store.push(&record(4, 4));
        store.push(&record(8, 8));
        let write = store.begin_stabilize(8, state(8).digest(), &[]).unwrap();
        let pusher = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.push(&record(12, 12)))
        };
        // The push must wait: 8 sequence numbers handed, none written.
        let waiting = || store.waiting_pushes.load(Ordering::Acquire);
        for _ in 0..10_000_000 {
            if waiting() == 1 {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(waiting(), 1, "the push did not wait for the disk");
        assert_eq!(store.held(), [0, 4, 8]);
        store.finish_stabilize(write);
        pusher.join().unwrap();
        assert_eq!(store.held(), [8, 12]);
        // A writer that stopped (the replica halts) is not waited for.
        let write = store.begin_stabilize(12, state(12).digest(), &[]).unwrap();
        store.push(&record(16, 16));
        let pusher = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.push(&record(20, 20)))
        };
        store.writer_stopped();
        pusher.join().unwrap();
        drop(write);
        assert_eq!(store.held(), [8, 12, 16, 20]);
    }

    /// A service state of one table, `t`, as `state(value)` encodes it.
    struct OneTable {
        t: cbase_core::Table<u8, u8>,
    }

    impl cbase_core::State for OneTable {
        fn containers(&self) -> Vec<(&'static str, &dyn cbase_core::Container)> {
            vec![("t", &self.t)]
        }
    }

    struct LiveTable(Arc<OneTable>);

    impl LiveState for LiveTable {
        fn snapshot_at(&self, seq: Seq) -> Option<Snapshot> {
            cbase_core::State::snapshot_at(&*self.0, seq).unwrap()
        }
        fn forget_before(&self, seq: Seq) {
            cbase_core::State::forget_versions_before(&*self.0, seq);
        }
    }

    #[test]
    fn without_a_data_directory_checkpoints_are_read_from_the_live_state_with_no_copy_held() {
        use cbase_core::{Container, State};
        let live = Arc::new(OneTable {
            t: cbase_core::Table::named("t"),
        });
        live.t.insert(1, 0);
        live.keep_versions(0);
        let store =
            CheckpointStore::live(0, state(0).digest(), Arc::new(LiveTable(Arc::clone(&live))));
        assert!(!store.base_in_memory(), "no copy of the state is held");

        // Requests change the state; checkpoints 4 and 8 are taken, and
        // the state moves on after 8.
        for seq in [4u8, 8] {
            live.t.insert(1, seq);
            live.checkpoint_taken(u64::from(seq));
            store.push(&record(u64::from(seq), seq));
        }
        live.t.insert(1, 9);
        for seq in [0u8, 4, 8] {
            let read = store.state(u64::from(seq)).expect("held");
            assert_eq!(read.digest(), state(seq).digest(), "checkpoint {seq}");
        }

        store.stabilize(4, state(4).digest(), &[], None).unwrap();
        assert!(store.state(0).is_none(), "let go with the values it needed");
        let (seq, base) = store.base().expect("the stable checkpoint");
        assert_eq!((seq, base.digest()), (4, state(4).digest()));
        assert_eq!(
            live.t.entry_log().versions_kept(),
            2,
            "the values before the changes after 4 and after 8"
        );

        // A transferred state is installed in the service, which keeps
        // versions from it on: the store holds no copy of it either.
        live.restore(&state(12).snapshot).unwrap();
        live.keep_versions(12);
        store.install(12, state(12).digest(), Arc::new(state(12)));
        assert!(!store.base_in_memory());
        assert_eq!(store.state(12).unwrap().digest(), state(12).digest());
        assert!(store.state(8).is_none());
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

    #[test]
    fn with_a_data_directory_the_stable_checkpoint_is_kept_on_disk_only() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), &["t"]).unwrap();
        let storage = Arc::new(storage);
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.keep_on(Arc::clone(&storage));
        store.push(&record(4, 4));
        store.push(&record(8, 8));
        // The initial state is written whole with the first stable checkpoint.
        store
            .stabilize(4, state(4).digest(), &[], Some(&storage))
            .unwrap();
        assert!(!store.base_in_memory(), "the base was let go once on disk");
        let (seq, base) = store.base().expect("read back");
        assert_eq!((seq, base.digest()), (4, state(4).digest()));
        assert_eq!(store.state(8).unwrap().digest(), state(8).digest());

        // Gathered before the disk moved on to 8, built after: the changes
        // already on disk are skipped, so it still builds checkpoint 8.
        let (_, at_eight) = store.get(8).unwrap();
        let (_, at_four) = store.get(4).unwrap();
        store
            .stabilize(8, state(8).digest(), &[], Some(&storage))
            .unwrap();
        assert_eq!(at_eight.build().unwrap().digest(), state(8).digest());
        // Checkpoint 4 is gone from the disk: nothing to serve, and nothing
        // to write either.
        assert!(at_four.build().is_none());
        assert!(store.begin_stabilize(4, state(4).digest(), &[]).is_none());
        assert_eq!(store.held(), [8]);
        assert_eq!(store.base().unwrap().0, 8);
    }

    #[test]
    fn a_transferred_state_is_held_in_memory_until_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), &["t"]).unwrap();
        let storage = Arc::new(storage);
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.keep_on(Arc::clone(&storage));
        store.install(12, state(12).digest(), Arc::new(state(12)));
        assert!(store.base_in_memory());
        store
            .stabilize(12, state(12).digest(), &[], Some(&storage))
            .unwrap();
        assert!(!store.base_in_memory());
        assert_eq!(store.state(12).unwrap().digest(), state(12).digest());
    }

    #[test]
    fn taking_a_checkpoint_does_not_wait_for_a_fold_in_progress() {
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.push(&record(4, 4));
        // Whoever holds the stable checkpoint's lock (a fold into the base)
        // does not hold up execution adding its next checkpoint.
        let folding = store.stable.lock();
        store.push(&record(8, 8));
        drop(folding);
        assert_eq!(store.held(), [0, 4, 8]);
    }

    #[test]
    fn the_whole_base_goes_to_disk_once_however_many_writes_queue_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), &["t"]).unwrap();
        let store = CheckpointStore::new(0, state(0).digest(), state(0));
        store.keep_on(Arc::new(storage));
        let storage = store.storage.get().unwrap().clone();
        store.push(&record(4, 4));
        store.push(&record(8, 8));
        // Both become stable before the first reaches the disk.
        let first = store.begin_stabilize(4, state(4).digest(), &[]).unwrap();
        let second = store.begin_stabilize(8, state(8).digest(), &[]).unwrap();
        assert!(first.whole.is_some());
        assert!(second.whole.is_none(), "the whole state is written once");
        assert_eq!(
            (first.changes.len(), second.changes.len()),
            (1, 1),
            "each checkpoint's changes are written once"
        );
        for write in [first, second] {
            write.write(&storage).unwrap();
            store.finish_stabilize(write);
        }
        let (seq, stored) = storage.stable_state().unwrap().unwrap();
        assert_eq!((seq, stored.digest()), (8, state(8).digest()));
        assert_eq!(store.held(), [8]);
    }
}
