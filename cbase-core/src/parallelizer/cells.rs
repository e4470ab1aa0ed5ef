//! The cell lock nodes and the map that holds them.
//!
//! Cells are the only nodes created and destroyed per request, so with large
//! access sets their map operations are most of the parallelizer's cost. Three
//! choices keep them cheap:
//!
//! * the node lives inline in the map (24 bytes, 32 with its key): one lookup
//!   finds it, no second access to a slab;
//! * cell keys are already well-mixed 64-bit values ([`cell_key`]), so the map
//!   hashes with the identity instead of SipHash;
//! * `complete` removes an idle cell through the map entry it found to release
//!   it, so removal costs no second lookup, and the map holds exactly the cells
//!   of the requests in flight (its capacity follows the most ever in flight,
//!   which the window bounds).
//!
//! A purpose-built open-addressing table (with prefetching of a request's
//! cells) was tried and measured slower than `std`'s SwissTable, whose SIMD
//! probing of control bytes keeps branches predictable.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

use super::Queue;
use super::lock::Mode;

/// `CellNode::owner` when no request in flight is known to have taken the cell.
pub(super) const NO_OWNER: u32 = u32::MAX;

/// `CellNode::holders` when a writer holds the cell.
const WRITER: u32 = u32::MAX;

/// The key of the cell `value` in the table slot with `salt`: a 64-bit mix of
/// both, so that the map can use it as its own hash.
///
/// The salt keeps the same value in two tables apart. Values are mostly
/// uniform already (blake3 output), but callers may build them from small
/// integers: a folded 64×64→128 multiplication spreads every input bit over
/// both ends of the word (the map takes its bucket index from the low bits and
/// a tag from the high ones). Two cells whose keys coincide (about 2⁻⁶⁴ per
/// pair) are merged, which only costs a false conflict.
#[inline]
pub(super) fn cell_key(salt: u64, value: u64) -> u64 {
    let product = u128::from(salt ^ value) * 0x9e37_79b9_7f4a_7c15;
    (product >> 64) as u64 ^ product as u64
}

/// The lock state of one cell. Cells are only taken in `R` and `W`, so holders
/// fit in one counter and no waiter counts are needed (see
/// `Parallelizer::acquire_cell`).
#[derive(Clone, Copy, Debug)]
pub(super) struct CellNode {
    /// The slot of the last request that took this cell, reset when that
    /// request completes: so `owner == s` means the request now in slot `s`
    /// took it, which is how a request skips a cell it reaches twice.
    pub(super) owner: u32,
    /// `WRITER`, or the number of readers.
    holders: u32,
    pub(super) queue: Queue,
}

impl CellNode {
    /// A new cell, granted in `mode` to the request in `slot`.
    #[inline]
    pub(super) fn taken(slot: u32, mode: Mode) -> CellNode {
        let holders = if mode == Mode::Write { WRITER } else { 1 };
        CellNode {
            owner: slot,
            holders,
            queue: Queue::EMPTY,
        }
    }

    /// Whether `mode` (`R` or `W`) is compatible with the holders.
    #[inline]
    pub(super) fn can_grant(&self, mode: Mode) -> bool {
        if mode == Mode::Write {
            self.holders == 0
        } else {
            self.holders != WRITER
        }
    }

    #[inline]
    pub(super) fn grant(&mut self, mode: Mode) {
        if mode == Mode::Write {
            self.holders = WRITER;
        } else {
            self.holders += 1;
        }
    }

    #[inline]
    pub(super) fn release(&mut self, mode: Mode) {
        if mode == Mode::Write {
            self.holders = 0;
        } else {
            self.holders -= 1;
        }
    }

    #[inline]
    pub(super) fn is_idle(&self) -> bool {
        self.holders == 0 && self.queue.is_empty()
    }
}

/// Every cell some request in flight holds or waits for, by [`cell_key`].
#[derive(Debug, Default)]
pub(super) struct CellTable {
    map: HashMap<u64, CellNode, BuildHasherDefault<PremixedHasher>>,
}

impl CellTable {
    /// The number of cells.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The node of `key` if there is one; otherwise stores `vacant` as its node
    /// and returns `None` (the common case: the caller then has nothing to read
    /// back from the freshly written entry).
    #[inline]
    pub(super) fn get_or_insert(&mut self, key: u64, vacant: CellNode) -> Option<&mut CellNode> {
        match self.map.entry(key) {
            Entry::Occupied(found) => Some(found.into_mut()),
            Entry::Vacant(entry) => {
                entry.insert(vacant);
                None
            }
        }
    }

    /// Runs `release` on the node of `key`, then drops the node if that left it
    /// idle.
    ///
    /// # Panics
    ///
    /// If there is no such cell: only a request holding the cell may release it.
    #[inline]
    pub(super) fn release_with(&mut self, key: u64, release: impl FnOnce(&mut CellNode)) {
        let Entry::Occupied(mut found) = self.map.entry(key) else {
            panic!("released cell {key:016x} is not in the table");
        };
        release(found.get_mut());
        if found.get().is_idle() {
            found.remove();
        }
    }
}

/// The map's hasher: the identity, because [`cell_key`] already mixed the key.
/// SipHash's flooding resistance would buy nothing (an adversary who grinds
/// colliding values only slows lookups, as with any fixed hash) and would cost
/// more than the rest of a lock operation.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u64` keys; kept a proper (FNV-1a) hash regardless.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
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

    #[test]
    fn cells_are_dropped_when_idle() {
        let mut table = CellTable::default();
        let key = cell_key(1, 2);
        assert!(
            table
                .get_or_insert(key, CellNode::taken(0, Mode::Read))
                .is_none()
        );
        let node = table
            .get_or_insert(key, CellNode::taken(1, Mode::Read))
            .expect("present");
        assert_eq!(node.owner, 0);
        node.grant(Mode::Read);
        table.release_with(key, |node| node.release(Mode::Read));
        assert_eq!(table.len(), 1, "one reader left");
        table.release_with(key, |node| node.release(Mode::Read));
        assert_eq!(table.len(), 0);
    }

    #[test]
    #[should_panic(expected = "not in the table")]
    fn releasing_an_unknown_cell_panics() {
        CellTable::default().release_with(7, |_| {});
    }

    #[test]
    fn cell_keys_spread_small_values_over_both_ends() {
        let mut low = HashMap::new();
        let mut high = HashMap::new();
        for v in 0..1024 {
            let key = cell_key(0, v);
            *low.entry(key & 1023).or_insert(0) += 1;
            *high.entry(key >> 54).or_insert(0) += 1;
        }
        // 1024 consecutive values over 1024 buckets: none gets crowded.
        assert!(low.values().all(|&n| n <= 8), "{low:?}");
        assert!(high.values().all(|&n| n <= 8), "{high:?}");
    }
}
