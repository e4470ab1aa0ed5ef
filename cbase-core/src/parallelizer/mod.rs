//! The parallelizer: turns the agreed total order of requests into the partial
//! order their access sets require.
//!
//! Agreement hands every replica the same sequence of requests. Executing them
//! one by one is correct but wastes every core but one; executing them all at
//! once is wrong when two of them touch the same state. The parallelizer sits
//! between agreement and the executor (the CBASE architecture, Kotla & Dahlin,
//! DSN 2004): [`Parallelizer::schedule`] takes each request in agreed order and
//! says whether it may start now; [`Parallelizer::complete`] is told when one
//! finished and answers which waiting requests may start because of it. Two
//! requests that [`conflict`](crate::access::conflicts) run in agreed order;
//! the others run in any order, so every correct replica ends in the same state.
//!
//! # Why locks and not a dependency graph
//!
//! The published CBASE parallelizer tests each new request against every
//! pending one, building a dependency graph: O(window) conflict tests per
//! request, each O(keys²). [`PairwiseParallelizer`] is that design, kept as the
//! reference and the benchmark baseline. [`Parallelizer`] instead gives every
//! region of state a FIFO lock queue (as Solana's unified scheduler does for
//! accounts) and has each request enqueue on the regions it touches, so one
//! request costs O(its own keys) whatever the window size.
//!
//! # Lock nodes
//!
//! Keys have wildcards ([`Key::All`], [`Key::Table`], [`Key::Value`]), so the
//! regions form a hierarchy locked with multi-granularity modes (see
//! `lock.rs`): a region is taken in `R`/`W`, every enclosing region in an
//! intention mode `IR`/`IW`.
//!
//! * **GLOBAL**, one node: [`Key::All`] takes it in `R`/`W`, every other key in
//!   `IR`/`IW`.
//! * **TABLE(s)**, one node per table slot: one slot per table named in
//!   [`Parallelizer::new`] plus a CATCHALL slot shared by all other tables.
//!   [`Key::Table`] takes it in `R`/`W`, [`Key::Entry`] in `IR`/`IW`.
//! * **PREFIX(p)**, created on demand and dropped when idle, `p` a 64-bit mix
//!   of the table slot's salt and a [`PrefixHash`](crate::PrefixHash),
//!   between a table and its entries: [`Key::Prefix`] takes its own prefix in
//!   `R`/`W` and the shorter prefixes it lies under in `IR`/`IW`;
//!   [`Key::TupleEntry`] takes every prefix it lies under in `IR`/`IW` (and
//!   its table, GLOBAL and cell as [`Key::Entry`] does). Any of the five modes,
//!   like the table nodes.
//! * **CELL(c)**, created on demand and dropped when idle, `c` a 32-bit mix of
//!   the table slot's salt and the value: [`Key::Entry`] takes it in `R`/`W`
//!   (an entry of an unknown table uses the CATCHALL salt).
//! * A bare [`Key::Value`] means "this value in every table", so it takes the
//!   cell and a table intention in *every* slot, CATCHALL included; a bare
//!   [`Key::TupleValue`] also takes, in every slot, the intentions on the
//!   prefixes it lies under.
//!
//! A request reaching one node through several keys takes it once, in the join
//! of the modes (`R` on a table plus `IW` for an entry of it is `SIX`), and a
//! cell reached twice once (write wins), so a request never queues behind
//! itself. Because the join is exact (compatible with precisely what both
//! operands are compatible with), merging hides no conflict.
//!
//! # Grant rules
//!
//! Each node counts its holders and its waiters per mode and keeps the waiters
//! in a FIFO queue threaded through the waiting requests' own entries (so a
//! queue costs no allocation at all). A new request is granted a node at once
//! iff its mode is compatible with every holder *and every waiter*; otherwise it
//! joins the back of the queue. When a holder leaves, the queue is granted from
//! the front for as long as the front is compatible with the holders. A request
//! is ready when it has been granted every node it asked for.
//!
//! # Soundness
//!
//! Let `i` be scheduled before `j` and conflict with it: a key `a` of one
//! overlaps a key `b` of the other and at least one of them is a write. Then
//! `a` and `b` share a node in incompatible modes:
//!
//! * one is `*`: both take GLOBAL, one in `R`/`W`, the other in any mode; `W`
//!   is compatible with nothing and `R` with neither `IW` nor `W`;
//! * one is `t[*]` and the other `t[*]`, `t[v]` or `v` (which covers `t` through
//!   its slot, CATCHALL included): both take TABLE(slot(t)), one in `R`/`W`,
//!   the other in `R`/`W`/`IR`/`IW`, one of them writing: incompatible as above;
//! * one is a prefix `t[(a, *)]` and the other a prefix, tuple entry or tuple
//!   value that lies under it (or that it lies under): both take
//!   PREFIX(mix(salt(slot(t)), hash(a))), the prefix in `R`/`W`, the other in
//!   any mode, one of them writing: incompatible as above (a prefix does not
//!   meet a plain entry or value: see [`Key::covers`], which never lets one
//!   reach a tuple entry);
//! * both name a cell (`t[v]` or `v`) with the same value and an overlapping
//!   table: both take CELL(mix(salt(slot(t)), v)), one in `W`.
//!
//! Joining modes keeps the incompatibility. On that node `j` cannot be granted
//! while `i` holds it (incompatible holder) nor while `i` waits for it: at
//! `schedule` time `j` must be compatible with every waiter, and later the
//! queue is granted in FIFO order, `i` ahead of `j`, stopping at the first
//! request that cannot be granted. So `j` is granted that node, and hence
//! becomes ready, only after `i` released it, which happens when `i` completes.
//! Unrelated keys may share a node (collisions of 32-bit cell keys, unknown
//! tables in CATCHALL, strict FIFO in a queue): that only delays, never
//! reorders.
//!
//! A request reaching a cell twice must take it once: a cell records the slot
//! of the last request that took it, and that request clears the record when
//! it releases the cell, so the record names a request in flight, and a later
//! request in the same slot cannot mistake the cell for one it took.
//!
//! # Liveness
//!
//! Every wait points to an earlier request. A request waits on a node because
//! some holder or waiter there is incompatible with it. Waiters ahead of it in
//! a queue were scheduled before it (queues are appended in agreed order). A
//! holder granted at `schedule` time *after* it enqueued was compatible with it
//! (new requests must be compatible with every waiter), and a holder granted
//! from the queue was ahead of it; so every incompatible holder is earlier.
//! Hence the earliest unfinished request waits for nothing: it is at the front
//! of every queue it is in, every holder it conflicts with has completed, and
//! the release that removed the last of them granted it. So whenever every
//! earlier request has completed, a request is ready, and there is no deadlock.
//!
//! # Cost
//!
//! `schedule` and `complete` do O(1) work per key (one lookup in a
//! set-associative cell table at `schedule`, none at `complete`, which goes
//! straight to the position recorded; one map lookup per prefix node; O(tables)
//! for a bare value), plus one
//! step per request they wake; nothing depends on how many requests are
//! pending. The cell table holds exactly the cells of the requests in flight,
//! in 8 bytes each so that it stays in the cache (see `cells.rs`).
//! Per-request entry vectors are kept and reused with
//! their slot, and queues are threaded through them, so the steady state
//! allocates nothing.
//!
//! With large access sets, the cell table's cache misses and the per-key
//! instructions are the whole cost, so `schedule` works in two phases: it
//! first names every cell (one slot lookup per run of entries of the same
//! one or two tables) and prefetches each cell's set, so that the misses of all
//! the keys are in flight together; then it takes the cells in one tight
//! loop for the common case (a new cell in a set with a free way), leaving
//! existing, duplicate and spilling cells to the general path. `complete`
//! likewise releases cells in a tight loop until one has waiters.

mod cells;
mod lock;
mod naming;
mod nodes;
mod pairwise;
#[cfg(test)]
mod tests;

pub use pairwise::PairwiseParallelizer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::mem;

use crate::access::AccessSet;
use crate::key::{Key, TableId};
use cells::{
    CellKey, CellPos, CellState, CellTable, Found, MAX_CAPACITY, PremixedHasher, SPILLED, cell_key,
};
use lock::Mode;
use naming::{Scratch, TableIndex, name_entry_run};
use nodes::{Entry, EntryRef, FixedNode, PREFIX_NODE, PrefixNodes, acquire_node, release_fixed};

/// Handle of a scheduled request: its slot in the bounded window.
///
/// Valid from [`Parallelizer::schedule`] until the matching
/// [`Parallelizer::complete`]; after that the slot (and so the same `TaskId`)
/// is given to a later request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TaskId(u32);

impl TaskId {
    /// The slot number, in `0..capacity`: lets callers keep per-task data in a
    /// plain vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What [`Parallelizer::schedule`] says about a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Scheduled {
    /// The handle to report completion with.
    pub task: TaskId,
    /// Whether the request may start now. If not, it is reported later through
    /// the `ready` vector of [`Parallelizer::complete`].
    pub ready: bool,
}

/// [`Parallelizer::schedule`] was called with `capacity` requests in flight:
/// complete one first.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("parallelizer window is full ({capacity} requests in flight)")]
pub struct WindowFull {
    /// The window size the parallelizer was created with.
    pub capacity: usize,
}

/// Requests with at most this many keys take each cell as they name it: for
/// them, the two phases that let many keys' cache misses overlap cost more
/// than they save (measured: 2 keys ran 26% slower through them, 10 keys 7%
/// faster).
const FEW_KEYS: usize = 6;

/// The index of GLOBAL among the fixed nodes; table slot `s` is at `1 + s`.
const GLOBAL: usize = 0;

/// Schedules requests with per-region FIFO lock queues; see the [module
/// documentation](self) for the design and its correctness argument.
pub struct Parallelizer {
    capacity: usize,
    slots: Vec<Slot>,
    /// Free slot numbers; popped from the back so recently used (cache-warm)
    /// slots are reused first.
    free_slots: Vec<u32>,
    /// Agreed-order number of the next request.
    next_seq: u64,
    tables: TableIndex,
    /// GLOBAL, then one node per table slot (known tables, then CATCHALL).
    fixed: Vec<FixedNode>,
    /// Every cell some request in flight holds or waits for.
    cells: CellTable,
    /// The waiters of each cell that has any (those with
    /// `CellState::is_queued`), by cell key, first in line first.
    cell_queues: CellQueues,
    /// Every prefix node some request in flight holds or waits for.
    prefixes: PrefixNodes,
    scratch: Scratch,
}

impl fmt::Debug for Parallelizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parallelizer")
            .field("capacity", &self.capacity)
            .field("in_flight", &self.in_flight())
            .field("tables", &self.tables.ids)
            .field("cells", &self.cells.len())
            .field("prefixes", &self.prefixes.len())
            .finish()
    }
}

impl Parallelizer {
    /// The largest `capacity` [`new`](Self::new) takes: 32,766 requests in
    /// flight. A cell's lock state is 4 bytes, so that the cell table stays
    /// small enough for the cache: 15 bits count its readers (all ones
    /// meaning a writer), one says it has waiters, and 16 name the slot of
    /// its last taker (all ones meaning none).
    pub const MAX_CAPACITY: usize = MAX_CAPACITY;

    /// A parallelizer admitting up to `capacity` requests in flight (scheduled
    /// and not yet completed).
    ///
    /// `tables` are the tables of the service: each gets its own lock node, and
    /// a bare [`Key::Value`] locks that value in each of them. Tables not listed
    /// still work, but share one node (so `a[*]` and `b[*]` for two unlisted
    /// tables wait for each other needlessly). Duplicates are ignored.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or above [`Parallelizer::MAX_CAPACITY`].
    pub fn new(capacity: usize, tables: &[TableId]) -> Parallelizer {
        assert!(capacity >= 1, "parallelizer capacity must be at least 1");
        assert!(
            capacity <= MAX_CAPACITY,
            "parallelizer capacity must be at most {MAX_CAPACITY}, not {capacity}"
        );
        let capacity32 = capacity as u32;
        let tables = TableIndex::new(tables);
        let slot_count = tables.slot_count();
        Parallelizer {
            capacity,
            slots: (0..capacity).map(|_| Slot::new()).collect(),
            free_slots: (0..capacity32).rev().collect(),
            next_seq: 0,
            fixed: (0..1 + slot_count).map(|_| FixedNode::default()).collect(),
            cells: CellTable::default(),
            cell_queues: HashMap::default(),
            prefixes: HashMap::default(),
            scratch: Scratch {
                global: 0,
                tables: vec![0; slot_count],
                cell_keys: Vec::new(),
                prefixes: Vec::new(),
                prefix_index: HashMap::default(),
            },
            tables,
        }
    }

    /// The maximum number of requests in flight.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of requests scheduled and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.free_slots.len()
    }

    /// Whether [`schedule`](Self::schedule) would refuse the next request.
    pub fn is_full(&self) -> bool {
        self.free_slots.is_empty()
    }

    /// Takes the next request in agreed order. `ready` is true when it may
    /// start now; otherwise [`complete`](Self::complete) reports it later.
    ///
    /// # Errors
    ///
    /// [`WindowFull`] if `capacity` requests are in flight; nothing changes.
    pub fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        let Some(slot) = self.free_slots.pop() else {
            return Err(WindowFull {
                capacity: self.capacity,
            });
        };
        if self.cells.should_grow() {
            self.grow_cells();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // The vectors leave the slot while they are filled, so that linking
        // into other requests' entries (in `self.slots`) does not alias them.
        let held = &mut self.slots[slot as usize];
        let mut request = Request {
            slot,
            // Slots are below `MAX_CAPACITY`: see `CellState::owner`.
            owner: slot as u16,
            entries: mem::take(&mut held.entries),
            cells: mem::take(&mut held.cells),
            spilled: mem::take(&mut held.spilled),
            waiting: 0,
        };
        debug_assert!(request.entries.is_empty() && request.cells.is_empty());

        let keys = access.writes().len() + access.reads().len();
        if keys <= FEW_KEYS {
            // Writes first, so that a cell both written and read is taken in
            // W and the read finds it already taken.
            self.take_each::<true>(access.writes(), &mut request);
            self.take_each::<false>(access.reads(), &mut request);
        } else {
            self.take_many(access, keys, &mut request);
        }
        self.acquire_fixed_nodes(&mut request);

        let ready = request.waiting == 0;
        let entry = &mut self.slots[slot as usize];
        entry.entries = request.entries;
        entry.cells = request.cells;
        entry.spilled = request.spilled;
        entry.seq = seq;
        entry.waiting = request.waiting;
        entry.state = if ready {
            SlotState::Running
        } else {
            SlotState::Waiting
        };
        Ok(Scheduled {
            task: TaskId(slot),
            ready,
        })
    }

    /// Reports that `task` finished, releasing what it held. Appends to `ready`,
    /// in agreed order, every task that became ready because of it.
    ///
    /// # Panics
    ///
    /// If `task` is not running (never reported ready, still waiting, or
    /// already completed): that is a bug in the caller, and continuing would
    /// corrupt the lock queues.
    pub fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        let index = task.index();
        match self.slots.get(index).map(|slot| slot.state) {
            Some(SlotState::Running) => {}
            state => panic!(
                "Parallelizer::complete({task:?}): the task is not running (state {state:?}); \
                 only a task reported ready may be completed, and only once"
            ),
        }
        let start = ready.len();
        // Slots are below `MAX_CAPACITY`: see `CellState::owner`.
        let owner = index as u16;
        let held = &mut self.slots[index];
        let (mut entries, mut cells, mut spilled) = (
            mem::take(&mut held.entries),
            mem::take(&mut held.cells),
            mem::take(&mut held.spilled),
        );
        let (slots, queues) = (&mut self.slots, &mut self.cell_queues);
        let mut next = 0;
        while let Some(&packed) = cells.get(next) {
            let write = packed & 1 == 1;
            let run = if write {
                self.cells.release_run::<true>(&cells[next..], owner)
            } else {
                self.cells.release_run::<false>(&cells[next..], owner)
            };
            next += run;
            if run == 0 {
                // The run stopped at its first cell: that one has waiters.
                let mode = if write { Mode::Write } else { Mode::Read };
                self.cells.release_at(packed >> 1, |key, cell| {
                    release_cell(key, cell, (mode, owner), queues, slots, ready);
                });
                next += 1;
            }
        }
        for &(key, mode) in &spilled {
            self.cells.release_key(key, |key, cell| {
                release_cell(key, cell, (mode, owner), queues, slots, ready);
            });
        }
        for entry in &entries {
            if entry.node == PREFIX_NODE {
                let node = self
                    .prefixes
                    .get_mut(&entry.prefix)
                    .expect("a prefix node held by a request in flight exists");
                release_fixed(node, entry.mode, slots, ready);
                if node.is_idle() {
                    self.prefixes.remove(&entry.prefix);
                }
            } else {
                let node = &mut self.fixed[entry.node as usize];
                release_fixed(node, entry.mode, slots, ready);
            }
        }
        entries.clear();
        cells.clear();
        spilled.clear();
        let slot = &mut self.slots[index];
        slot.entries = entries;
        slot.cells = cells;
        slot.spilled = spilled;
        slot.state = SlotState::Free;
        self.free_slots.push(task.0);

        // Nodes are released in the order the request listed them, so tasks
        // woken by different nodes come out of order; callers want agreed order.
        if ready.len() - start > 1 {
            let slots = &self.slots;
            ready[start..].sort_unstable_by_key(|t| slots[t.index()].seq);
        }
    }

    /// Takes the cells of a request with many keys in two phases: the
    /// first names every cell (and gathers the modes wanted on the table
    /// nodes and GLOBAL), the second takes them. Writes first, so that a cell
    /// both written and read is taken in W and the read finds it already
    /// taken.
    fn take_many(&mut self, access: &AccessSet, keys: usize, request: &mut Request) {
        // The buffer of names only grows: past what is named, its contents
        // are stale.
        let mut cell_keys = mem::take(&mut self.scratch.cell_keys);
        if cell_keys.len() < keys {
            cell_keys.resize(keys, 0);
        }
        let (writes, reads) = (access.writes(), access.reads());
        let named_writes = self.name_cells::<true>(writes, &mut cell_keys, 0, reads.len());
        let named = self.name_cells::<false>(reads, &mut cell_keys, named_writes, 0);
        let mut packed = mem::take(&mut request.cells);
        packed.resize(named, 0);
        let taken = self.take_cells::<true>(&cell_keys[..named_writes], &mut packed, 0, request);
        let taken =
            self.take_cells::<false>(&cell_keys[named_writes..named], &mut packed, taken, request);
        packed.truncate(taken);
        request.cells = packed;
        self.scratch.cell_keys = cell_keys;
    }

    /// Phase one of `schedule`: writes the cell of each entry key and bare
    /// value in `keys` to `cells` from index `named` on, returning the index
    /// past the last (`cells` has room for one cell per key left, `later`
    /// of them in a later call), and collects the modes wanted on GLOBAL
    /// and on each table slot as mode sets, joined and acquired once every
    /// key has been seen. `WRITE` makes the mode a constant in the loop.
    ///
    /// Each cell's set is prefetched here, so that the cache misses of all the
    /// keys overlap rather than stalling phase two one by one.
    #[inline(always)]
    fn name_cells<const WRITE: bool>(
        &mut self,
        keys: &[Key],
        cells: &mut Vec<CellKey>,
        mut named: usize,
        later: usize,
    ) -> usize {
        let mode = if WRITE { Mode::Write } else { Mode::Read };
        let Parallelizer {
            tables,
            scratch,
            cells: table,
            ..
        } = self;
        // The two tables named last, with their slots' salts: the keys of a
        // request mostly name one or two tables, and then a whole run of
        // them costs one slot lookup per table.
        let mut recent: Option<[(TableId, u64); 2]> = None;
        let mut next = 0;
        while let Some(&key) = keys.get(next) {
            match key {
                Key::Entry(t, _) => {
                    let s = scratch.want_entry_table(tables, t, mode);
                    let seen = (t, tables.salts[s]);
                    let pair = match recent {
                        Some([latest, _]) => [seen, latest],
                        None => [seen, seen],
                    };
                    recent = Some(pair);
                    let run = name_entry_run(&keys[next..], pair, table, &mut cells[named..]);
                    named += run;
                    next += run;
                    continue;
                }
                Key::All | Key::Table(_) | Key::Prefix(..) => {
                    scratch.want_wildcard(tables, key, mode)
                }
                Key::TupleEntry(_, value, _) => {
                    let salt = scratch.want_tuple_entry(tables, key, mode);
                    let cell = cell_key(salt, value.0);
                    table.prefetch(cell);
                    cells[named] = cell;
                    named += 1;
                }
                Key::Value(value) | Key::TupleValue(value, _) => {
                    scratch.want_wildcard(tables, key, mode);
                    // Room for one cell per slot, and one per key left.
                    let room = named + tables.slot_count() + (keys.len() - next - 1) + later;
                    if cells.len() < room {
                        cells.resize(room, 0);
                    }
                    for &salt in &tables.salts {
                        cells[named] = cell_key(salt, value.0);
                        named += 1;
                    }
                }
            }
            next += 1;
        }
        named
    }

    /// Phase two of `schedule`: takes (or queues for) the cells `keys` in
    /// `WRITE` or read mode, writing their packed positions to `packed` from
    /// index `taken` on (it has room for one per key); returns the index past
    /// the last. A cell taken already or spilled has no position here.
    #[inline(always)]
    fn take_cells<const WRITE: bool>(
        &mut self,
        keys: &[CellKey],
        packed: &mut [u32],
        mut taken: usize,
        request: &mut Request,
    ) -> usize {
        let mode = if WRITE { Mode::Write } else { Mode::Read };
        let fresh = CellState::taken(request.owner, mode);
        let mode_bit = u32::from(WRITE);
        let mut next = 0;
        while next < keys.len() {
            let run =
                self.cells
                    .insert_new_run(&keys[next..], &mut packed[taken..], fresh, mode_bit);
            taken += run;
            next += run;
            if let Some(&key) = keys.get(next) {
                if let Some(cell) = self.acquire_cell_slow(key, mode, request) {
                    packed[taken] = cell;
                    taken += 1;
                }
                next += 1;
            }
        }
        taken
    }

    /// Takes the cells the keys need, each as it is named, and collects the
    /// modes wanted on GLOBAL and on each table slot as mode sets, joined and
    /// acquired once every key has been seen: the path of requests with few
    /// keys. `WRITE` makes the mode a constant in the loop.
    #[inline(always)]
    fn take_each<const WRITE: bool>(&mut self, keys: &[Key], request: &mut Request) {
        let mode = if WRITE { Mode::Write } else { Mode::Read };
        // The table of the last entry key, its slot's salt: the keys of one
        // request mostly name one table, and then the slot lookup and the
        // table intention are done once.
        let mut last: Option<(TableId, u64)> = None;
        for &key in keys {
            match key {
                Key::Entry(table, value) => {
                    let salt = match last {
                        Some((seen, salt)) if seen == table => salt,
                        _ => {
                            let s = self.scratch.want_entry_table(&self.tables, table, mode);
                            let salt = self.tables.salts[s];
                            last = Some((table, salt));
                            salt
                        }
                    };
                    self.take_cell(cell_key(salt, value.0), mode, request);
                }
                Key::All | Key::Table(_) | Key::Prefix(..) => {
                    self.scratch.want_wildcard(&self.tables, key, mode)
                }
                Key::TupleEntry(_, value, _) => {
                    let salt = self.scratch.want_tuple_entry(&self.tables, key, mode);
                    self.take_cell(cell_key(salt, value.0), mode, request);
                }
                Key::Value(value) | Key::TupleValue(value, _) => {
                    self.scratch.want_wildcard(&self.tables, key, mode);
                    for s in 0..self.tables.slot_count() {
                        let cell = cell_key(self.tables.salts[s], value.0);
                        self.take_cell(cell, mode, request);
                    }
                }
            }
        }
    }

    /// Takes the cell `key` for `request`, or queues it, and records its
    /// position in `request.cells` (or `request.spilled`).
    #[inline(always)]
    fn take_cell(&mut self, key: CellKey, mode: Mode, request: &mut Request) {
        if let Some(cell) = self.acquire_cell(key, mode, request) {
            request.cells.push(cell);
        }
    }

    /// `acquire_cell`, kept out of line for the two-phase path, where most
    /// cells are new and taken by `CellTable::insert_new_run`.
    #[inline(never)]
    fn acquire_cell_slow(
        &mut self,
        key: CellKey,
        mode: Mode,
        request: &mut Request,
    ) -> Option<u32> {
        self.acquire_cell(key, mode, request)
    }

    /// Takes the cell `key` for `request`, or queues it: the general case,
    /// where the cell may exist, or must spill. Returns the cell's packed
    /// position, or `None` if the request took it already or it spilled (and
    /// is then listed in `request.spilled`).
    #[inline(always)]
    fn acquire_cell(&mut self, key: CellKey, mode: Mode, request: &mut Request) -> Option<u32> {
        let fresh = CellState::taken(request.owner, mode);
        let pos = match self.cells.find_or_insert(key, fresh) {
            Found::Inserted(pos) => pos,
            Found::Existing(pos) => {
                if !self.take_existing_cell(key, pos, mode, request) {
                    return None;
                }
                pos
            }
        };
        if pos == SPILLED {
            request.spilled.push((key, mode));
            None
        } else {
            Some(pos << 1 | u32::from(mode == Mode::Write))
        }
    }

    /// Takes the existing cell `key` at `pos` for `request`, or queues it;
    /// false if the request took it already, through an earlier key. Kept out
    /// of line: most cells are new.
    #[inline(never)]
    fn take_existing_cell(
        &mut self,
        key: CellKey,
        pos: CellPos,
        mode: Mode,
        request: &mut Request,
    ) -> bool {
        let cell = self.cells.get_mut(key, pos);
        if cell.owner == request.owner {
            // Already taken by this request, in W or (reads come after
            // writes) in the same R: taking it again would queue behind
            // itself.
            return false;
        }
        cell.owner = request.owner;
        if !cell.is_queued() && cell.can_grant(mode) {
            cell.grant(mode);
        } else {
            // A non-empty cell queue always has a writer ahead (or holding),
            // so "compatible with every waiter" reduces to "no queue" here.
            cell.set_queued(true);
            self.cell_queues
                .entry(key)
                .or_default()
                .push_back(CellWaiter {
                    slot: request.slot,
                    mode,
                });
            request.waiting += 1;
        }
        true
    }

    /// Doubles the cell table and gives every request in flight its cells'
    /// new positions.
    #[cold]
    fn grow_cells(&mut self) {
        let old = self.cells.grow();
        for slot in &mut self.slots {
            let packed = mem::take(&mut slot.cells);
            for &cell in &packed {
                let key = old.key_at(cell >> 1);
                match self.cells.locate(key) {
                    Some(SPILLED) => {
                        let mode = if cell & 1 == 1 {
                            Mode::Write
                        } else {
                            Mode::Read
                        };
                        slot.spilled.push((key, mode));
                    }
                    Some(pos) => slot.cells.push(pos << 1 | (cell & 1)),
                    None => panic!("cell {key:016x} lost while growing"),
                }
            }
        }
    }

    fn acquire_fixed_nodes(&mut self, request: &mut Request) {
        let Parallelizer {
            fixed,
            slots,
            scratch,
            prefixes,
            ..
        } = self;
        if !scratch.prefixes.is_empty() {
            for (key, wanted) in scratch.prefixes.drain(..) {
                let mode = Mode::join_set(wanted).expect("a prefix is wanted in some mode");
                let node = prefixes.entry(key).or_default();
                acquire_node(node, PREFIX_NODE, key, mode, request, slots);
            }
            scratch.prefix_index.clear();
        }
        if let Some(mode) = Mode::join_set(mem::take(&mut scratch.global)) {
            acquire_node(&mut fixed[GLOBAL], GLOBAL as u32, 0, mode, request, slots);
        }
        for (s, wanted) in scratch.tables.iter_mut().enumerate() {
            if let Some(mode) = Mode::join_set(mem::take(wanted)) {
                let node = 1 + s;
                acquire_node(&mut fixed[node], node as u32, 0, mode, request, slots);
            }
        }
    }

    /// The number of cells in the table.
    #[cfg(test)]
    fn cell_nodes(&self) -> usize {
        self.cells.len()
    }
}

/// The request being scheduled.
struct Request {
    slot: u32,
    /// The slot as a cell's owner (see `CellState::owner`).
    owner: u16,
    entries: Vec<Entry>,
    cells: Vec<u32>,
    spilled: Vec<(CellKey, Mode)>,
    waiting: u32,
}

impl Request {
    /// The reference the next pushed entry will have.
    #[inline]
    fn next_ref(&self) -> EntryRef {
        EntryRef::new(self.slot, self.entries.len())
    }
}

/// A request waiting for a cell.
#[derive(Clone, Copy, Debug)]
struct CellWaiter {
    slot: u32,
    mode: Mode,
}

type CellQueues = HashMap<CellKey, VecDeque<CellWaiter>, BuildHasherDefault<PremixedHasher>>;

/// Releases `mode` on the cell `key` for the request in slot `owner`, then
/// grants its waiters from the front of its queue for as long as they are
/// compatible with its holders.
#[inline(always)]
fn release_cell(
    key: CellKey,
    cell: &mut CellState,
    (mode, owner): (Mode, u16),
    queues: &mut CellQueues,
    slots: &mut [Slot],
    ready: &mut Vec<TaskId>,
) {
    cell.release(mode, owner);
    if cell.is_queued() {
        grant_cell_queue(key, cell, queues, slots, ready);
    }
}

/// Grants the waiters of the cell `key` from the front of its queue for as
/// long as they are compatible with its holders, and drops the queue once
/// empty.
#[cold]
fn grant_cell_queue(
    key: CellKey,
    cell: &mut CellState,
    queues: &mut CellQueues,
    slots: &mut [Slot],
    ready: &mut Vec<TaskId>,
) {
    let queue = queues
        .get_mut(&key)
        .expect("a cell marked queued has a queue");
    while let Some(&CellWaiter { slot, mode }) = queue.front() {
        if !cell.can_grant(mode) {
            break;
        }
        cell.grant(mode);
        queue.pop_front();
        wake(slots, slot as usize, ready);
    }
    if queue.is_empty() {
        queues.remove(&key);
        cell.set_queued(false);
    }
}

/// One more node granted to the task in `slot`; it is ready once it has all.
#[inline]
fn wake(slots: &mut [Slot], slot: usize, ready: &mut Vec<TaskId>) {
    let task = &mut slots[slot];
    task.waiting -= 1;
    if task.waiting == 0 {
        task.state = SlotState::Running;
        // Slot numbers are below the capacity, which new() bounds to u32.
        ready.push(TaskId(slot as u32));
    }
}

/// One window slot and the request occupying it.
#[derive(Debug)]
struct Slot {
    seq: u64,
    state: SlotState,
    /// Nodes asked for and not yet granted.
    waiting: u32,
    /// The GLOBAL and table nodes the request holds or waits for, released
    /// at completion; an entry waiting in a queue also carries the link to
    /// the next waiter.
    entries: Vec<Entry>,
    /// The cells the request holds or waits for, by table position shifted
    /// left by one, the low bit set for a write: 4 bytes per key, released at
    /// completion without a lookup.
    cells: Vec<u32>,
    /// The cells that spilled out of the table's sets, by key and mode.
    spilled: Vec<(CellKey, Mode)>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            seq: 0,
            state: SlotState::Free,
            waiting: 0,
            entries: Vec::new(),
            cells: Vec::new(),
            spilled: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SlotState {
    Free,
    Waiting,
    Running,
}
