//! The cell lock nodes and the table that holds them.
//!
//! Cells are the only nodes created and destroyed per request, so with large
//! access sets their table operations are most of the parallelizer's cost. The
//! table is built for exactly this use:
//!
//! * cell keys are already well-mixed 32-bit values ([`cell_key`]), so the
//!   table uses them as their own hash;
//! * it is set-associative: a key's home is one 64-byte set of eight
//!   buckets (eight 4-byte keys, then eight 4-byte lock states), so a lookup
//!   reads one cache line and, with SSE2 compares, tests all eight ways at
//!   once for the key and for a free bucket, with no probe sequence;
//! * buckets are 8 bytes, so that the table of a busy window stays in the L2
//!   cache: 15,000 cells in flight (150 requests of 100 keys) take 512 KiB.
//!   With 16-byte buckets (64-bit keys and states) the same window needed
//!   2 MiB, twice the L2 cache of the machine the figures in the book come
//!   from, and 100-key requests took 16% longer;
//! * a cell never moves while it lives (until the table grows), so the request
//!   that takes it records its [`CellPos`] and `complete` goes straight to it:
//!   releasing costs no lookup;
//! * a full set spills to a side map, counted per set so that a lookup only
//!   consults the map when its set has spilled; the table doubles once it
//!   is a quarter full, where about 0.1% of sets are full;
//! * lock queues are rare (only contended cells have one), so they live in a
//!   side map too and the state keeps one bit saying whether there is one.
//!
//! It replaced `std`'s SwissTable with an identity hasher (an entry per cell
//! holding key, state and queue), which reads a control-byte group and an
//! entry (two cache lines) per lookup and looks the cell up again to release
//! it. Measured side by side, this table cut the 10-key scheduling cost by
//! about 40% and the 100-key cost by about 10%.
//!
//! The common cases have their own tight loops, where every bound is checked
//! once per run rather than once per key: [`CellTable::insert_new_run`]
//! stores new cells until one may exist already or finds its set full, and
//! [`CellTable::release_run`] releases cells until one has waiters.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem;

use super::lock::Mode;

/// The key of a cell: a 32-bit mix of its table slot's salt and its value
/// ([`cell_key`]), never 0.
pub(super) type CellKey = u32;

/// `CellState::owner` when no request in flight is known to have taken the
/// cell. Slot numbers are below it: see [`MAX_CAPACITY`].
pub(super) const NO_OWNER: u16 = u16::MAX;

/// The holder bits of `CellState::state`: the number of readers, or `WRITER`.
const HOLDERS: u16 = (1 << 15) - 1;

/// The holders when a writer holds the cell. Readers never reach this count:
/// the window (and so the number of requests holding a cell) is below it.
const WRITER: u16 = HOLDERS;

/// The bit of `CellState::state` saying that the cell has a waiter queue (in
/// the parallelizer's side map).
const QUEUED: u16 = 1 << 15;

/// The largest window a [`Parallelizer`](super::Parallelizer) takes: a cell
/// counts its readers in 15 bits (all ones meaning a writer) and names its
/// owner's slot in 16 (all ones meaning none).
pub(super) const MAX_CAPACITY: usize = WRITER as usize - 1;

/// The key of the cell `value` in the table slot with `salt`: a 32-bit mix
/// of both, so that the table can use it as its own hash.
///
/// The salt keeps the same value in two tables apart. Values are mostly
/// uniform already (blake3 output), but callers may build them from small
/// integers: a folded 64×64→128 multiplication spreads every input bit over
/// the whole word, and the key is its low half (the table takes its set from
/// the key's low bits and stores the whole key). 0 marks a free bucket, so
/// the one input mixing to it shares cell 1.
///
/// Two cells whose keys coincide are merged, which only costs a false
/// conflict, never a missed one. With 32-bit keys that is about one key in
/// 2³² / (cells in flight): one in 290,000 keys with 15,000 cells in flight
/// (150 requests of 100 keys), one in 4 million with 1,000. In exchange a
/// bucket is half the size it was with 64-bit keys, which keeps a busy
/// window's table in the L2 cache (see the module documentation).
#[inline]
pub(super) fn cell_key(salt: u64, value: u64) -> CellKey {
    let product = u128::from(salt ^ value) * 0x9e37_79b9_7f4a_7c15;
    (((product >> 64) as u64 ^ product as u64) as u32).max(1)
}

/// The lock state of one cell: 4 bytes. Cells are only taken in `R` and `W`,
/// so holders fit in one counter and no waiter counts are needed (see
/// `Parallelizer::acquire_cell`).
///
/// Aligned as one word, so that storing a new cell's state is one store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C, align(4))]
pub(super) struct CellState {
    /// The slot of the last request that took this cell, if that request
    /// has not released it yet: how a request skips a cell it reaches twice.
    /// A request that releases a cell it owns resets this to [`NO_OWNER`],
    /// so a later request in the same slot never mistakes the cell for its
    /// own.
    pub(super) owner: u16,
    /// `QUEUED`, or'ed with `WRITER` or the number of readers.
    state: u16,
}

impl CellState {
    const FREE: CellState = CellState {
        owner: NO_OWNER,
        state: 0,
    };

    /// A new cell, granted in `mode` to the request in slot `owner`.
    #[inline]
    pub(super) fn taken(owner: u16, mode: Mode) -> CellState {
        let state = if mode == Mode::Write { WRITER } else { 1 };
        CellState { owner, state }
    }

    /// Whether waiters are queued on this cell.
    #[inline]
    pub(super) fn is_queued(&self) -> bool {
        self.state & QUEUED != 0
    }

    #[inline]
    pub(super) fn set_queued(&mut self, queued: bool) {
        if queued {
            self.state |= QUEUED;
        } else {
            self.state &= !QUEUED;
        }
    }

    #[inline]
    fn holders(&self) -> u16 {
        self.state & HOLDERS
    }

    /// Whether `mode` (`R` or `W`) is compatible with the holders.
    #[inline]
    pub(super) fn can_grant(&self, mode: Mode) -> bool {
        if mode == Mode::Write {
            self.holders() == 0
        } else {
            self.holders() != WRITER
        }
    }

    #[inline]
    pub(super) fn grant(&mut self, mode: Mode) {
        if mode == Mode::Write {
            self.state |= WRITER;
        } else {
            self.state += 1;
        }
    }

    /// Releases `mode` for the request in slot `owner`, which took the
    /// cell: if it was the last to take it, the cell has no owner any more.
    #[inline]
    pub(super) fn release(&mut self, mode: Mode, owner: u16) {
        if mode == Mode::Write {
            self.state &= !HOLDERS;
        } else {
            self.state -= 1;
        }
        if self.owner == owner {
            self.owner = NO_OWNER;
        }
    }

    /// No holder and no waiter: the cell can be dropped.
    #[inline]
    pub(super) fn is_idle(&self) -> bool {
        self.state == 0
    }
}

/// Where a cell lives in the [`CellTable`]: a bucket index (below 2³¹, so
/// that a request can pack it with a mode bit), or [`SPILLED`]. Valid until
/// the table grows.
pub(super) type CellPos = u32;

/// The position of a cell kept in the spill map.
pub(super) const SPILLED: CellPos = u32::MAX;

/// What [`CellTable::find_or_insert`] did.
pub(super) enum Found {
    /// The cell exists, at this position.
    Existing(CellPos),
    /// The cell did not exist and was stored, granted as asked, here.
    Inserted(CellPos),
}

/// Buckets per set: eight 4-byte keys and eight 4-byte states fill a
/// 64-byte cache line.
pub(super) const WAYS: usize = 8;

/// Sets in a new table.
const INITIAL_SETS: usize = 16;

/// One cache line of buckets: the keys, then the lock states. A bucket is
/// free iff its key is 0, which [`cell_key`] never returns; the state of a
/// free bucket is stale.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Set {
    keys: [CellKey; WAYS],
    cells: [CellState; WAYS],
}

/// What [`Set::probe`] found: bit `w` of `hits` is set iff way `w` holds the
/// key, bit `w` of `free` iff way `w` is free.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Probe {
    hits: u32,
    free: u32,
}

impl Probe {
    /// The way holding the key, if any.
    #[inline(always)]
    fn hit(self) -> Option<usize> {
        (self.hits != 0).then(|| self.hits.trailing_zeros() as usize)
    }

    /// The first free way, if any.
    #[inline(always)]
    fn free_way(self) -> Option<usize> {
        (self.free != 0).then(|| self.free.trailing_zeros() as usize)
    }
}

impl Set {
    const FREE: Set = Set {
        keys: [0; WAYS],
        cells: [CellState::FREE; WAYS],
    };

    /// The key in `way`, or `None` if the bucket is free.
    #[inline(always)]
    fn key(&self, way: usize) -> Option<CellKey> {
        let key = self.keys[way];
        (key != 0).then_some(key)
    }

    #[inline(always)]
    fn store(&mut self, way: usize, key: CellKey, cell: CellState) {
        debug_assert_ne!(key, 0, "cell_key never returns the free key");
        self.keys[way] = key;
        self.cells[way] = cell;
    }

    #[inline(always)]
    fn free(&mut self, way: usize) {
        self.keys[way] = 0;
    }

    /// Tests every way for `key` and for being free, without a branch:
    /// which way holds a key, or is free, varies at random from lookup to
    /// lookup, so a loop that stops early mispredicts about once per key (a
    /// packed variant that stopped at the first free bucket ran 60% slower
    /// for fewer instructions).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    #[allow(unsafe_code)]
    fn probe(&self, key: CellKey) -> Probe {
        // SAFETY: `probe_sse2` needs SSE2, which every x86_64 processor has.
        unsafe { probe_sse2(self, key) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn probe(&self, key: CellKey) -> Probe {
        self.probe_portable(key)
    }

    /// [`probe`](Self::probe) one way at a time: the version for other
    /// processors, and the reference the SSE2 one is tested against.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    #[inline(always)]
    fn probe_portable(&self, key: CellKey) -> Probe {
        let mut probe = Probe { hits: 0, free: 0 };
        for way in 0..WAYS {
            probe.hits |= u32::from(self.keys[way] == key) << way;
            probe.free |= u32::from(self.keys[way] == 0) << way;
        }
        probe
    }
}

/// [`Set::probe`] with SSE2: the eight keys are two vectors of four, each
/// compared with the key and with 0 and turned into a bit mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
#[allow(unsafe_code)]
fn probe_sse2(set: &Set, key: CellKey) -> Probe {
    use std::arch::x86_64::{
        __m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_load_si128, _mm_movemask_ps,
        _mm_set1_epi32, _mm_setzero_si128,
    };
    // SAFETY: `keys` is 32 bytes at offset 0 of a 64-byte aligned `Set`:
    // both loads read 16 aligned bytes inside `set`.
    let (low, high) = unsafe {
        let keys: *const __m128i = set.keys.as_ptr().cast();
        (_mm_load_si128(keys), _mm_load_si128(keys.add(1)))
    };
    let mask = |lanes| _mm_movemask_ps(_mm_castsi128_ps(lanes)) as u32;
    let wanted = _mm_set1_epi32(key as i32);
    let zero = _mm_setzero_si128();
    Probe {
        hits: mask(_mm_cmpeq_epi32(low, wanted)) | mask(_mm_cmpeq_epi32(high, wanted)) << 4,
        free: mask(_mm_cmpeq_epi32(low, zero)) | mask(_mm_cmpeq_epi32(high, zero)) << 4,
    }
}

/// Every cell some request in flight holds or waits for, by [`cell_key`]; see
/// the module documentation for the layout.
#[derive(Debug)]
pub(super) struct CellTable {
    /// A power of two many sets.
    sets: Vec<Set>,
    /// `sets.len() - 1`.
    set_mask: usize,
    /// Per set, how many of its cells live in `spill`.
    spilled: Vec<u32>,
    /// Cells whose set was full when they were created.
    spill: HashMap<CellKey, CellState, BuildHasherDefault<PremixedHasher>>,
    len: usize,
}

impl Default for CellTable {
    fn default() -> CellTable {
        CellTable::with_sets(INITIAL_SETS)
    }
}

impl CellTable {
    fn with_sets(sets: usize) -> CellTable {
        debug_assert!(sets.is_power_of_two());
        assert!(
            sets.checked_mul(WAYS).is_some_and(|b| b <= 1 << 31),
            "cell table of {sets} sets is too large"
        );
        CellTable {
            sets: vec![Set::FREE; sets],
            set_mask: sets - 1,
            spilled: vec![0; sets],
            spill: HashMap::default(),
            len: 0,
        }
    }

    /// The number of cells.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The set of `key`. Keys are mixed over all 64 bits, so the low ones are
    /// as good as any.
    #[inline(always)]
    fn set_of(&self, key: CellKey) -> usize {
        key as usize & self.set_mask
    }

    /// Where `key` lives, if anywhere.
    pub(super) fn locate(&self, key: CellKey) -> Option<CellPos> {
        let set = self.set_of(key);
        if let Some(way) = self.sets[set].probe(key).hit() {
            return Some((set * WAYS + way) as CellPos);
        }
        (self.spilled[set] > 0 && self.spill.contains_key(&key)).then_some(SPILLED)
    }

    /// Starts loading the set of `key` into the cache, so that a later
    /// lookup finds it there.
    #[inline(always)]
    pub(super) fn prefetch(&self, key: CellKey) {
        let sets = &self.sets[..];
        prefetch_set(&sets[key as usize & (sets.len() - 1)]);
    }

    /// Stores the new cells `keys`, one after another, each in a free way
    /// of its set and granted as `fresh`, writing each one's position packed
    /// with `mode_bit` (`pos << 1 | mode_bit`) to `out`: the common case,
    /// kept in one tight loop. Stops before the first key that is not
    /// certainly new (a way holds it, or its set has spilled) or has no free
    /// way; the caller takes that key the general way. Returns how many keys
    /// were stored: fewer than `keys` if it stopped early.
    ///
    /// `out` must be at least as long as `keys`.
    #[inline(always)]
    pub(super) fn insert_new_run(
        &mut self,
        keys: &[CellKey],
        out: &mut [u32],
        fresh: CellState,
        mode_bit: u32,
    ) -> usize {
        // With the lengths checked here, the compiler drops the bounds checks
        // in the loop: a set index is masked below both.
        let sets = &mut self.sets[..];
        let spilled = &self.spilled[..sets.len()];
        let mask = sets.len() - 1;
        assert!(out.len() >= keys.len(), "no room for the positions");
        let mut stored = 0;
        for (&key, out) in keys.iter().zip(out.iter_mut()) {
            let set = key as usize & mask;
            let bucket = &mut sets[set];
            let probe = bucket.probe(key);
            if (probe.hits != 0) | (probe.free == 0) | (spilled[set] > 0) {
                break;
            }
            let way = probe.free.trailing_zeros() as usize & (WAYS - 1);
            bucket.store(way, key, fresh);
            *out = ((set * WAYS + way) as CellPos) << 1 | mode_bit;
            stored += 1;
        }
        self.len += stored;
        stored
    }

    /// Releases the cells at the packed positions `packed` (as
    /// [`insert_new_run`](Self::insert_new_run) wrote them: position and
    /// mode bit), one after another, dropping those left idle: the common
    /// case, kept in one tight loop. Stops before the first cell that has
    /// waiters or was not taken in `WRITE` mode; the caller releases a cell
    /// with waiters the general way. Returns how many were released: fewer
    /// than `packed` if it stopped early.
    ///
    /// A request lists its written cells before its read ones, so its list
    /// is mostly two runs, and the mode is a constant in each. `owner` is
    /// the releasing request's slot (see [`CellState::release`]).
    #[inline(always)]
    pub(super) fn release_run<const WRITE: bool>(&mut self, packed: &[u32], owner: u16) -> usize {
        let sets = &mut self.sets[..];
        // Positions are in bounds: the mask only lets the compiler see it.
        let mask = sets.len() - 1;
        let mut released = 0;
        let mut dropped = 0;
        for &cell in packed {
            let pos = (cell >> 1) as usize;
            let (set, way) = ((pos / WAYS) & mask, pos % WAYS);
            let bucket = &mut sets[set];
            let state = bucket.cells[way].state;
            if (state & QUEUED != 0) | ((cell & 1 == 1) != WRITE) {
                break;
            }
            // Without a queue, the state is the holders: a writer leaves
            // none, a reader one fewer. A cell left idle is dropped, so
            // only a reader leaving others behind resets the owner.
            let left = if WRITE { 0 } else { state - 1 };
            if left == 0 {
                bucket.free(way);
                dropped += 1;
            } else {
                bucket.cells[way].release(Mode::Read, owner);
            }
            released += 1;
        }
        self.len -= dropped;
        released
    }

    /// Finds the cell `key`, or stores `fresh` as its state.
    #[inline(always)]
    pub(super) fn find_or_insert(&mut self, key: CellKey, fresh: CellState) -> Found {
        let set = self.set_of(key);
        let bucket = &mut self.sets[set];
        let probe = bucket.probe(key);
        if let Some(way) = probe.hit() {
            return Found::Existing((set * WAYS + way) as CellPos);
        }
        if self.spilled[set] > 0 && self.spill.contains_key(&key) {
            return Found::Existing(SPILLED);
        }
        self.len += 1;
        if let Some(way) = probe.free_way() {
            bucket.store(way, key, fresh);
            Found::Inserted((set * WAYS + way) as CellPos)
        } else {
            self.spill.insert(key, fresh);
            self.spilled[set] += 1;
            Found::Inserted(SPILLED)
        }
    }

    /// The state of the cell `key` at `pos`.
    ///
    /// # Panics
    ///
    /// If the cell is not there: positions come from this table and are
    /// refreshed when it grows, so that is a bug.
    #[inline(always)]
    pub(super) fn get_mut(&mut self, key: CellKey, pos: CellPos) -> &mut CellState {
        if pos == SPILLED {
            return self
                .spill
                .get_mut(&key)
                .unwrap_or_else(|| panic!("cell {key:016x} is not in the table"));
        }
        let (set, way) = (pos as usize / WAYS, pos as usize % WAYS);
        let bucket = &mut self.sets[set];
        assert_eq!(
            bucket.key(way),
            Some(key),
            "cell {key:016x} is not at {pos}"
        );
        &mut bucket.cells[way]
    }

    /// Runs `release` on the cell at array position `pos` (given its key and
    /// state), then drops the cell if that left it idle.
    #[inline(always)]
    pub(super) fn release_at(
        &mut self,
        pos: CellPos,
        release: impl FnOnce(CellKey, &mut CellState),
    ) {
        let (set, way) = (pos as usize / WAYS, pos as usize % WAYS);
        let bucket = &mut self.sets[set];
        let key = bucket
            .key(way)
            .unwrap_or_else(|| panic!("released a free bucket at {pos}"));
        let cell = &mut bucket.cells[way];
        release(key, cell);
        if cell.is_idle() {
            bucket.free(way);
            self.len -= 1;
        }
    }

    /// `release_at` for a cell known by key, wherever it is.
    ///
    /// # Panics
    ///
    /// If there is no such cell: only a request holding a cell releases it.
    pub(super) fn release_key(
        &mut self,
        key: CellKey,
        release: impl FnOnce(CellKey, &mut CellState),
    ) {
        match self.locate(key) {
            Some(SPILLED) => {
                let cell = self.get_mut(key, SPILLED);
                release(key, cell);
                if cell.is_idle() {
                    self.remove(key, SPILLED);
                }
            }
            Some(pos) => self.release_at(pos, release),
            None => panic!("released cell {key:016x} is not in the table"),
        }
    }

    /// Drops the cell `key` at `pos`.
    #[inline(always)]
    pub(super) fn remove(&mut self, key: CellKey, pos: CellPos) {
        self.len -= 1;
        if pos == SPILLED {
            self.spill.remove(&key);
            let set = self.set_of(key);
            self.spilled[set] -= 1;
        } else {
            let (set, way) = (pos as usize / WAYS, pos as usize % WAYS);
            self.sets[set].free(way);
        }
    }

    /// Whether the table should grow before more cells are added: it holds
    /// more cells than twice its sets (a quarter of its buckets), where
    /// about 0.1% of sets are full (a Poisson tail: two cells per set on
    /// average, eight ways).
    ///
    /// Each spill costs a map insert and a lookup at release; each doubling
    /// costs cache misses. Measured on 100-key requests: growing at half
    /// full (4% of sets full) ran 50% slower, at an eighth full 7% slower.
    #[inline]
    pub(super) fn should_grow(&self) -> bool {
        self.len > 2 * self.sets.len()
    }

    /// Doubles the sets (the table never shrinks: its size follows the most
    /// cells ever in flight, which the window bounds) and returns the old
    /// table, whose [`key_at`](Self::key_at) tells what each position handed
    /// out before named; all of those positions are invalid now.
    #[cold]
    pub(super) fn grow(&mut self) -> CellTable {
        let old = mem::replace(self, CellTable::with_sets(2 * self.sets.len()));
        let in_sets = old
            .sets
            .iter()
            .flat_map(|set| (0..WAYS).filter_map(|way| Some((set.key(way)?, set.cells[way]))));
        for (key, cell) in in_sets.chain(old.spill.iter().map(|(&k, &c)| (k, c))) {
            let fresh = matches!(self.find_or_insert(key, cell), Found::Inserted(_));
            debug_assert!(fresh, "cell {key:016x} was stored twice");
        }
        debug_assert_eq!(self.len, old.len);
        old
    }

    /// The key of the cell at array position `pos`.
    ///
    /// # Panics
    ///
    /// If no cell is there.
    pub(super) fn key_at(&self, pos: CellPos) -> CellKey {
        self.sets[pos as usize / WAYS]
            .key(pos as usize % WAYS)
            .unwrap_or_else(|| panic!("no cell at {pos}"))
    }
}

/// Asks the processor to bring `set` into the cache, without waiting for it.
///
/// Phase one of `schedule` does this for every key of a request, so that the
/// cache misses of all its keys overlap. A prefetch, unlike a load, does not
/// hold up the instructions after it until the line arrives, so many more
/// misses are in flight at once: measured side by side, 100-key requests ran
/// about 11% faster than with a load of the set's first word.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_set(set: &Set) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: a prefetch is a hint: it never faults and changes no memory,
    // and the pointer comes from a live reference anyway. SSE, which
    // `prefetcht0` belongs to, is part of the x86_64 baseline.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((set as *const Set).cast()) }
}

/// Elsewhere, a load of the set's first word, kept by `black_box`, starts
/// the miss (and waits for it, unlike a prefetch).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_set(set: &Set) {
    std::hint::black_box(set.high[0]);
}

/// The spill map's hasher: the identity, because [`cell_key`] already mixed
/// the key. SipHash's flooding resistance would buy nothing (an adversary who
/// grinds colliding values only slows lookups, as with any fixed hash).
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `CellKey`s; kept a proper (FNV-1a) hash regardless.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Cell keys are mixed already, but the map takes its buckets from the
    /// low bits of the hash and its tags from the top 7: a multiplication
    /// by an odd constant carries the key's bits up into the top.
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 ^= u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of pseudo-random words from a non-zero `seed`.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    fn release_and_drop(table: &mut CellTable, key: CellKey, pos: CellPos, mode: Mode) {
        if pos == SPILLED {
            table.release_key(key, |_, state| state.release(mode, NO_OWNER));
        } else {
            table.release_at(pos, |found, state| {
                assert_eq!(found, key);
                state.release(mode, NO_OWNER);
            });
        }
    }

    #[test]
    fn cells_are_dropped_when_idle() {
        let mut table = CellTable::default();
        let key = cell_key(1, 2);
        let Found::Inserted(pos) = table.find_or_insert(key, CellState::taken(0, Mode::Read))
        else {
            panic!("a new cell");
        };
        let Found::Existing(again) = table.find_or_insert(key, CellState::taken(1, Mode::Read))
        else {
            panic!("the same cell");
        };
        assert_eq!(again, pos);
        let state = table.get_mut(key, pos);
        assert_eq!(state.owner, 0);
        state.grant(Mode::Read);
        release_and_drop(&mut table, key, pos, Mode::Read);
        assert_eq!(table.len(), 1, "one reader left");
        release_and_drop(&mut table, key, pos, Mode::Read);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn state_bits() {
        let mut state = CellState::taken(3, Mode::Write);
        assert!(!state.can_grant(Mode::Read) && !state.can_grant(Mode::Write));
        state.set_queued(true);
        assert!(state.is_queued() && !state.is_idle());
        state.release(Mode::Write, 3);
        assert!(state.is_queued(), "releasing keeps the queue bit");
        assert_eq!(state.owner, NO_OWNER, "the owner released it");
        assert!(state.can_grant(Mode::Write));
        state.grant(Mode::Read);
        state.owner = 4;
        state.grant(Mode::Read);
        state.owner = 5;
        assert!(state.can_grant(Mode::Read) && !state.can_grant(Mode::Write));
        state.release(Mode::Read, 4);
        assert_eq!(state.owner, 5, "only the last taker's release resets it");
        state.release(Mode::Read, 5);
        assert_eq!(state.owner, NO_OWNER);
        state.set_queued(false);
        assert!(state.is_idle());
    }

    /// The largest window: its readers still count below `WRITER`, and its
    /// slots below `NO_OWNER`.
    #[test]
    fn the_largest_window_fits_a_cell() {
        let mut state = CellState::taken(0, Mode::Read);
        for slot in 1..MAX_CAPACITY {
            assert!(state.can_grant(Mode::Read), "reader {slot}");
            state.grant(Mode::Read);
        }
        assert!(!state.can_grant(Mode::Write) && !state.is_queued());
        assert!(u16::try_from(MAX_CAPACITY - 1).is_ok_and(|slot| slot < NO_OWNER));
    }

    /// Random inserts and removals, many sharing a set on purpose (keys whose
    /// low bits agree), checked against a model: full sets spill, lookups find
    /// spilled cells, positions stay valid until the table grows and are
    /// refreshed by the function `grow` returns.
    #[test]
    fn table_matches_a_model_under_churn() {
        let mut table = CellTable::default();
        let mut model: Vec<(CellKey, CellPos)> = Vec::new();
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let mut spilled_seen = 0;
        for step in 0..20_000u32 {
            if table.should_grow() {
                let old = table.grow();
                for (key, pos) in &mut model {
                    if *pos != SPILLED {
                        assert_eq!(old.key_at(*pos), *key);
                    }
                    *pos = table.locate(*key).expect("kept while growing");
                }
            }
            let insert = model.is_empty() || next() % 100 < if step < 10_000 { 60 } else { 40 };
            if insert {
                // Few distinct low bits, so sets fill and spill; a small
                // pool, so existing (and spilled) cells are looked up again.
                let key = (((next() % 512) << 8) | (next() % 7) | 1 << 31) as CellKey;
                match table.find_or_insert(key, CellState::taken(step as u16, Mode::Write)) {
                    Found::Inserted(pos) => {
                        assert!(model.iter().all(|&(k, _)| k != key), "step {step}");
                        spilled_seen += usize::from(pos == SPILLED);
                        model.push((key, pos));
                    }
                    Found::Existing(pos) => {
                        assert!(model.contains(&(key, pos)), "step {step}");
                    }
                }
            } else {
                let at = (next() % model.len() as u64) as usize;
                let (key, pos) = model.swap_remove(at);
                release_and_drop(&mut table, key, pos, Mode::Write);
            }
            assert_eq!(table.len(), model.len());
            if step % 97 == 0 {
                for &(key, pos) in &model {
                    assert_eq!(table.locate(key), Some(pos), "cell {key:x} at step {step}");
                }
            }
        }
        assert!(
            spilled_seen > 10,
            "the workload must exercise the spill map"
        );
    }

    #[test]
    fn cell_keys_are_never_the_free_marker() {
        // The product's halves cancel for input 0.
        assert_ne!(cell_key(0, 0), 0);
        assert_ne!(cell_key(5, 5), 0);
        for salt in [0, 1, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            for value in (0..4096).chain((0..4096).map(|v| v << 32)) {
                assert_ne!(cell_key(salt, value), 0, "salt {salt} value {value}");
            }
        }
    }

    /// The vector probe agrees with the one-way-at-a-time one, and both with
    /// the definition, on sets mixing free buckets (with stale states) and
    /// keys, with the probed key in none, one or (never for a real table,
    /// but the masks must say so) several ways, in both halves of the set.
    #[test]
    fn probe_finds_exactly_the_key_and_the_free_ways() {
        let mut next = xorshift(0x0123_4567_89ab_cdef);
        let mut seen = [0; 4];
        for _ in 0..20_000 {
            // Few distinct keys, so hits are common; 0 is a free bucket.
            let mut key = || (next() % 4) as CellKey;
            let mut set = Set::FREE;
            for way in 0..WAYS {
                set.keys[way] = key();
                set.cells[way] = CellState::taken(way as u16, Mode::Write);
            }
            let wanted = key().max(1);
            let probe = set.probe(wanted);
            assert_eq!(probe, set.probe_portable(wanted), "{set:?} {wanted}");
            for way in 0..WAYS {
                let bit = 1 << way;
                assert_eq!(probe.hits & bit != 0, set.key(way) == Some(wanted));
                assert_eq!(probe.free & bit != 0, set.key(way).is_none());
            }
            assert!(probe.hits | probe.free < 1 << WAYS);
            seen[0] += usize::from(probe.hits & 0x0f != 0);
            seen[1] += usize::from(probe.hits & 0xf0 != 0);
            seen[2] += usize::from(probe.free != 0);
            seen[3] += usize::from(probe.hits == 0);
        }
        assert!(seen.iter().all(|&n| n > 1000), "cases covered: {seen:?}");
    }

    #[test]
    #[should_panic(expected = "not in the table")]
    fn an_unknown_spilled_cell_panics() {
        CellTable::default().get_mut(7, SPILLED);
    }

    #[test]
    #[should_panic(expected = "is not at")]
    fn a_stale_position_panics() {
        let mut table = CellTable::default();
        let key = cell_key(1, 2);
        let Found::Inserted(pos) = table.find_or_insert(key, CellState::taken(0, Mode::Read))
        else {
            panic!("a new cell");
        };
        table.remove(key, pos);
        table.get_mut(key, pos);
    }

    #[test]
    fn cell_keys_spread_small_values_over_both_ends() {
        let mut low = HashMap::new();
        let mut high = HashMap::new();
        for v in 0..1024 {
            let key = cell_key(0, v);
            *low.entry(key & 1023).or_insert(0) += 1;
            *high.entry(key >> 22).or_insert(0) += 1;
        }
        // 1024 consecutive values over 1024 buckets: none gets crowded.
        assert!(low.values().all(|&n| n <= 8), "{low:?}");
        assert!(high.values().all(|&n| n <= 8), "{high:?}");
    }
}
