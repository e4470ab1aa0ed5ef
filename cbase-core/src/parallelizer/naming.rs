//! Naming what a request wants before anything is acquired: the modes on
//! GLOBAL, each table slot and each prefix node ([`Scratch`]), and the cells
//! of its keys, named in runs with their sets prefetched.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::cells::{CellKey, CellTable, PremixedHasher, cell_key};
use super::lock::Mode;
use crate::key::{Key, PrefixHash, TableId};

/// Tables are usually a handful: a linear scan beats a binary search up to
/// about this many.
const LINEAR_TABLE_LOOKUP: usize = 8;

/// What the request being scheduled needs, gathered over all its keys before
/// anything is acquired.
#[derive(Debug)]
pub(super) struct Scratch {
    /// The modes wanted on GLOBAL, as a mode set.
    pub(super) global: u8,
    /// The modes wanted per table slot (0 for none), cleared as they are
    /// acquired. A scan of every slot per request is cheaper than tracking
    /// which were touched: services have a handful of tables.
    pub(super) tables: Vec<u8>,
    /// The cells the request names (phase one), writes first; kept between
    /// requests so that naming allocates nothing.
    pub(super) cell_keys: Vec<CellKey>,
    /// The prefix nodes wanted, each once, with the modes wanted on it as a
    /// mode set, cleared as they are acquired.
    pub(super) prefixes: Vec<(u64, u8)>,
    /// Where each prefix node is in `prefixes`, once there are many.
    pub(super) prefix_index: HashMap<u64, usize, BuildHasherDefault<PremixedHasher>>,
}

impl Scratch {
    /// Records the intention an entry of `table` in `mode` wants on GLOBAL
    /// and on the table's slot; returns the slot.
    #[inline(always)]
    pub(super) fn want_entry_table(
        &mut self,
        tables: &TableIndex,
        table: TableId,
        mode: Mode,
    ) -> usize {
        let intention = mode.intention().bit();
        self.global |= intention;
        let slot = tables.slot(table);
        self.tables[slot] |= intention;
        slot
    }

    /// Records what a key other than an entry wants on GLOBAL, the table
    /// slots and the prefix nodes: `*` takes GLOBAL in `mode`, `t[*]` takes
    /// its slot in `mode`, a prefix takes itself in `mode` and the prefixes
    /// above it in the intention, and a bare value takes an intention on every
    /// slot and on every prefix it lies under in every slot (its cells are the
    /// caller's to take). An entry is recorded as by `want_entry_table`, a
    /// tuple entry as by `want_tuple_entry`.
    pub(super) fn want_wildcard(&mut self, tables: &TableIndex, key: Key, mode: Mode) {
        let intention = mode.intention().bit();
        match key {
            Key::All => self.global |= mode.bit(),
            Key::Table(table) => {
                self.global |= intention;
                self.tables[tables.slot(table)] |= mode.bit();
            }
            Key::Value(_) | Key::TupleValue(..) => {
                self.global |= intention;
                for wanted in &mut self.tables {
                    *wanted |= intention;
                }
                if let Key::TupleValue(_, path) = key {
                    for &salt in &tables.salts {
                        for &hash in path.hashes() {
                            self.want_prefix(prefix_node(salt, hash), intention);
                        }
                    }
                }
            }
            Key::Entry(table, _) => {
                self.want_entry_table(tables, table, mode);
            }
            Key::TupleEntry(..) => {
                self.want_tuple_entry(tables, key, mode);
            }
            Key::Prefix(table, path) => {
                let slot = self.want_entry_table(tables, table, mode);
                let salt = tables.salts[slot];
                if let Some((&own, above)) = path.hashes().split_last() {
                    for &hash in above {
                        self.want_prefix(prefix_node(salt, hash), intention);
                    }
                    self.want_prefix(prefix_node(salt, own), mode.bit());
                }
            }
        }
    }

    /// Records the intentions a tuple entry in `mode` wants on GLOBAL, its
    /// table's slot and the prefixes it lies under; returns the slot's salt,
    /// which names its cell.
    pub(super) fn want_tuple_entry(&mut self, tables: &TableIndex, key: Key, mode: Mode) -> u64 {
        let Key::TupleEntry(table, _, path) = key else {
            unreachable!("want_tuple_entry takes tuple entries");
        };
        let slot = self.want_entry_table(tables, table, mode);
        let salt = tables.salts[slot];
        let intention = mode.intention().bit();
        for &hash in path.hashes() {
            self.want_prefix(prefix_node(salt, hash), intention);
        }
        salt
    }

    /// Adds the modes `wanted` (a mode set) to the prefix node `node`, so that
    /// a request reaching one prefix through several keys takes it once.
    pub(super) fn want_prefix(&mut self, node: u64, wanted: u8) {
        // A request names few prefixes: a linear search beats a map until
        // it names many.
        const LINEAR: usize = 8;
        if self.prefixes.len() < LINEAR {
            match self.prefixes.iter_mut().find(|(key, _)| *key == node) {
                Some((_, modes)) => *modes |= wanted,
                None => self.prefixes.push((node, wanted)),
            }
            return;
        }
        if self.prefix_index.is_empty() {
            for (at, &(key, _)) in self.prefixes.iter().enumerate() {
                self.prefix_index.insert(key, at);
            }
        }
        let next = self.prefixes.len();
        let at = *self.prefix_index.entry(node).or_insert(next);
        if at == next {
            self.prefixes.push((node, wanted));
        } else {
            self.prefixes[at].1 |= wanted;
        }
    }
}

/// The known tables and their slots; every other table maps to CATCHALL, the
/// last slot.
#[derive(Debug)]
pub(super) struct TableIndex {
    /// Known tables; slot `s` is `ids[s]`.
    pub(super) ids: Vec<TableId>,
    /// Per slot (CATCHALL last), what a value is xored with to name its cell,
    /// so the same value in two tables names two cells.
    pub(super) salts: Vec<u64>,
    /// `(table, slot)` sorted by table, for services with many tables.
    pub(super) sorted: Vec<(TableId, usize)>,
}

impl TableIndex {
    pub(super) fn new(tables: &[TableId]) -> TableIndex {
        let mut ids: Vec<TableId> = Vec::with_capacity(tables.len());
        for &t in tables {
            if !ids.contains(&t) {
                ids.push(t);
            }
        }
        assert!(ids.len() < (u32::MAX / 2) as usize, "too many tables");
        // Any constant works for CATCHALL: it only has to differ from the known
        // tables' salts, and a coincidence would only cost false conflicts.
        const CATCHALL_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
        let salts = ids
            .iter()
            .map(|t| fmix64(t.0))
            .chain([CATCHALL_SALT])
            .collect();
        let mut sorted: Vec<(TableId, usize)> = Vec::new();
        if ids.len() > LINEAR_TABLE_LOOKUP {
            sorted = ids.iter().enumerate().map(|(s, &t)| (t, s)).collect();
            sorted.sort_unstable();
        }
        TableIndex { ids, salts, sorted }
    }

    /// Known tables plus CATCHALL.
    #[inline]
    pub(super) fn slot_count(&self) -> usize {
        self.ids.len() + 1
    }

    #[inline]
    pub(super) fn slot(&self, table: TableId) -> usize {
        let catchall = self.ids.len();
        if self.ids.len() <= LINEAR_TABLE_LOOKUP {
            self.ids
                .iter()
                .position(|&t| t == table)
                .unwrap_or(catchall)
        } else {
            match self.sorted.binary_search_by_key(&table, |&(t, _)| t) {
                Ok(found) => self.sorted[found].1,
                Err(_) => catchall,
            }
        }
    }
}

/// Writes the cells of the leading run of entries of the two `tables`
/// (table and salt) in `keys` (at least one) to `out`, which has room for all
/// of `keys`, prefetching each one's set so that its cache miss starts now;
/// returns the length of the run.
#[inline(always)]
pub(super) fn name_entry_run(
    keys: &[Key],
    tables: [(TableId, u64); 2],
    cells: &CellTable,
    out: &mut [CellKey],
) -> usize {
    // A request's keys mostly name one table: then the loop needs neither
    // the second comparison nor the choice of salt.
    if tables[0].0 == tables[1].0 {
        name_entry_run_in::<false>(keys, tables, cells, out)
    } else {
        name_entry_run_in::<true>(keys, tables, cells, out)
    }
}

/// `name_entry_run`, for one table or (`PAIR`) two different ones.
#[inline(always)]
fn name_entry_run_in<const PAIR: bool>(
    keys: &[Key],
    tables: [(TableId, u64); 2],
    cells: &CellTable,
    out: &mut [CellKey],
) -> usize {
    // A short `out` would end the run early and stall the caller.
    assert!(out.len() >= keys.len(), "no room for the cells named");
    let [(first, first_salt), (second, second_salt)] = tables;
    let mut run = 0;
    for (&key, out) in keys.iter().zip(out) {
        let Key::Entry(table, value) = key else {
            break;
        };
        let salt = if PAIR {
            // Keys alternating between two tables at random would
            // mispredict a branch on which table it is (measured: 27 per
            // 100-key request), so neither test branches on it: the key is
            // in the pair iff one of the xors is zero (LLVM splits
            // `a != x & a != y` into two branches, not a `min`), and a
            // conditional move picks the salt.
            if (table.0 ^ first.0).min(table.0 ^ second.0) != 0 {
                break;
            }
            if table == first {
                first_salt
            } else {
                second_salt
            }
        } else {
            if table != first {
                break;
            }
            first_salt
        };
        let cell = cell_key(salt, value.0);
        cells.prefetch(cell);
        *out = cell;
        run += 1;
    }
    run
}

/// MurmurHash3's 64-bit finaliser: spreads FNV table ids into salts.
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The key of the node of prefix `hash` in the table slot whose salt is
/// `salt`: the same prefix in two tables is two nodes.
#[inline]
pub(super) fn prefix_node(salt: u64, hash: PrefixHash) -> u64 {
    fmix64(salt ^ fmix64(hash.0))
}
