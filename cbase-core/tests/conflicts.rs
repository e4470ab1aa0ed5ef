//! `conflicts` is exactly the paper's dependence relation, wildcards included.
//!
//! Reference: over a finite universe of tables and values, expand every key to
//! the set of (table, value) cells it covers; two access sets conflict iff a
//! write set meets the other's read or write set.

use std::collections::BTreeSet;

use cbase_core::{AccessSet, Key, TableId, ValueHash, conflicts};
use proptest::prelude::*;

const TABLES: [&str; 3] = ["accounts", "owners", "log"];
const VALUES: [u64; 4] = [0, 1, 2, 3];

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        1 => Just(Key::All),
        2 => (0..TABLES.len()).prop_map(|t| Key::table(TABLES[t])),
        2 => (0..VALUES.len()).prop_map(|v| Key::value(&VALUES[v])),
        6 => (0..TABLES.len(), 0..VALUES.len()).prop_map(|(t, v)| Key::entry(TABLES[t], &VALUES[v])),
    ]
}

fn access_strategy() -> impl Strategy<Value = AccessSet> {
    (
        prop::collection::vec(key_strategy(), 0..4),
        prop::collection::vec(key_strategy(), 0..4),
    )
        .prop_map(|(reads, writes)| AccessSet::new(reads, writes))
}

fn cells(keys: &[Key]) -> BTreeSet<(TableId, ValueHash)> {
    let tables: Vec<TableId> = TABLES.iter().map(|t| TableId::of(t)).collect();
    let values: Vec<ValueHash> = VALUES.iter().map(ValueHash::of).collect();
    let mut out = BTreeSet::new();
    for key in keys {
        for &t in &tables {
            for &v in &values {
                let covered = match *key {
                    Key::All => true,
                    Key::Table(kt) => kt == t,
                    Key::Value(kv) => kv == v,
                    Key::Entry(kt, kv) => kt == t && kv == v,
                    // Tuple keys and prefixes: see the universe below.
                    Key::Prefix(..) | Key::TupleEntry(..) | Key::TupleValue(..) => false,
                };
                if covered {
                    out.insert((t, v));
                }
            }
        }
    }
    out
}

fn reference(a: &AccessSet, b: &AccessSet) -> bool {
    let (ra, wa) = (cells(a.reads()), cells(a.writes()));
    let (rb, wb) = (cells(b.reads()), cells(b.writes()));
    !wa.is_disjoint(&wb) || !wa.is_disjoint(&rb) || !ra.is_disjoint(&wb)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn conflicts_is_symmetric(a in access_strategy(), b in access_strategy()) {
        prop_assert_eq!(conflicts(&a, &b), conflicts(&b, &a));
    }

    #[test]
    fn conflicts_equals_cell_intersection(a in access_strategy(), b in access_strategy()) {
        prop_assert_eq!(conflicts(&a, &b), reference(&a, &b), "a = {:?}, b = {:?}", a, b);
    }

    #[test]
    fn permits_agrees_with_cells(a in access_strategy(), k in key_strategy()) {
        // A key is permitted for reading iff all its cells are in the read or
        // write cells; for writing iff they are all in the write cells. Over a
        // finite universe, a wildcard key is permitted only by a wildcard that
        // covers it syntactically, which may be stricter than the cell view:
        // the cell view is the upper bound.
        let wanted = cells(&[k]);
        let readable: BTreeSet<_> = cells(a.reads()).union(&cells(a.writes())).copied().collect();
        if a.permits_read(&k) {
            prop_assert!(wanted.is_subset(&readable));
        }
        if a.permits_write(&k) {
            prop_assert!(wanted.is_subset(&cells(a.writes())));
        }
        if let Key::Entry(..) = k {
            // For a single cell the two views agree exactly.
            prop_assert_eq!(a.permits_read(&k), wanted.is_subset(&readable));
            prop_assert_eq!(a.permits_write(&k), wanted.is_subset(&cells(a.writes())));
        }
    }
}

#[test]
fn exclusive_conflicts_with_any_non_empty_set() {
    let reader = AccessSet::none().read(Key::entry("accounts", &1u64));
    assert!(conflicts(&AccessSet::exclusive(), &reader));
    assert!(!conflicts(&AccessSet::exclusive(), &AccessSet::none()));
}

// ---------------------------------------------------------------------------
// Prefixes: the same reference over a universe of tuple keys.

/// A key as a rule names it, over tables with tuple keys: what the reference
/// expands to cells, and what `Key` turns into hashes.
#[derive(Clone, Debug)]
enum Spec {
    All,
    Table(usize),
    /// A bare value that is not a tuple.
    Value(u64),
    /// `table[v]` with a plain value.
    Entry(usize, u64),
    /// `table[(elements..)]`: a tuple key of 2 or 3 elements.
    TupleEntry(usize, Vec<u8>),
    /// A bare tuple value.
    TupleValue(Vec<u8>),
    /// `table[(elements.., *)]`: a prefix of 1 or 2 elements.
    Prefix(usize, Vec<u8>),
}

impl Spec {
    fn key(&self) -> Key {
        match self {
            Spec::All => Key::All,
            Spec::Table(t) => Key::table(TABLES[*t]),
            Spec::Value(v) => Key::value(v),
            Spec::Entry(t, v) => Key::entry(TABLES[*t], v),
            Spec::TupleEntry(t, e) => Key::entry(TABLES[*t], &tuple(e)),
            Spec::TupleValue(e) => Key::value(&tuple(e)),
            Spec::Prefix(t, e) => match e[..] {
                [a] => Key::prefix(TABLES[*t], &(a,)),
                [a, b] => Key::prefix(TABLES[*t], &(a, b)),
                _ => unreachable!("prefixes of one or two elements"),
            },
        }
    }
}

/// The tuple of 2 or 3 elements, as one `Serialize` type for both lengths.
fn tuple(elements: &[u8]) -> TupleOf {
    match elements[..] {
        [a, b] => TupleOf::Two((a, b)),
        [a, b, c] => TupleOf::Three((a, b, c)),
        _ => unreachable!("tuple keys of two or three elements"),
    }
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum TupleOf {
    Two((u8, u8)),
    Three((u8, u8, u8)),
}

/// One cell of the universe: a table and a plain or tuple key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Cell {
    Plain(usize, u64),
    Tuple(usize, Vec<u8>),
}

fn universe() -> Vec<Cell> {
    let mut cells = Vec::new();
    for t in 0..TABLES.len() {
        cells.extend(VALUES.iter().map(|&v| Cell::Plain(t, v)));
        for a in 0..2 {
            for b in 0..2 {
                cells.push(Cell::Tuple(t, vec![a, b]));
                for c in 0..2 {
                    cells.push(Cell::Tuple(t, vec![a, b, c]));
                }
            }
        }
    }
    cells
}

/// Whether `spec` names `cell`: a prefix names the tuple keys of its table
/// that start with its elements and are longer; nothing but a tuple key
/// (bare or in a table), a prefix, a table or `*` names a tuple key.
fn names(spec: &Spec, cell: &Cell) -> bool {
    match (spec, cell) {
        (Spec::All, _) => true,
        (Spec::Table(t), Cell::Plain(c, _) | Cell::Tuple(c, _)) => t == c,
        (Spec::Value(v), Cell::Plain(_, w)) => v == w,
        (Spec::Entry(t, v), Cell::Plain(c, w)) => t == c && v == w,
        (Spec::TupleEntry(t, e), Cell::Tuple(c, k)) => t == c && e == k,
        (Spec::TupleValue(e), Cell::Tuple(_, k)) => e == k,
        (Spec::Prefix(t, p), Cell::Tuple(c, k)) => t == c && k.len() > p.len() && k.starts_with(p),
        _ => false,
    }
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let table = || 0..TABLES.len();
    let value = || prop::sample::select(VALUES.to_vec());
    let elements = |n| prop::collection::vec(0u8..2, n);
    prop_oneof![
        1 => Just(Spec::All),
        2 => table().prop_map(Spec::Table),
        1 => value().prop_map(Spec::Value),
        2 => (table(), value()).prop_map(|(t, v)| Spec::Entry(t, v)),
        5 => (table(), elements(2..=3)).prop_map(|(t, e)| Spec::TupleEntry(t, e)),
        1 => elements(2..=3).prop_map(Spec::TupleValue),
        5 => (table(), elements(1..=2)).prop_map(|(t, e)| Spec::Prefix(t, e)),
    ]
}

fn spec_set_strategy() -> impl Strategy<Value = (Vec<Spec>, Vec<Spec>)> {
    (
        prop::collection::vec(spec_strategy(), 0..4),
        prop::collection::vec(spec_strategy(), 0..4),
    )
}

fn access(specs: &(Vec<Spec>, Vec<Spec>)) -> AccessSet {
    let keys = |specs: &[Spec]| specs.iter().map(Spec::key).collect();
    AccessSet::new(keys(&specs.0), keys(&specs.1))
}

fn named_cells(specs: &[Spec]) -> BTreeSet<Cell> {
    universe()
        .into_iter()
        .filter(|cell| specs.iter().any(|s| names(s, cell)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// With prefixes, tuple keys, plain keys and wildcards mixed, `conflicts`
    /// is still exactly the intersection of the cells written and touched,
    /// which the parallelizer's own property tests then check it respects.
    #[test]
    fn conflicts_equals_cell_intersection_with_prefixes(
        a in spec_set_strategy(),
        b in spec_set_strategy(),
    ) {
        let (ra, wa) = (named_cells(&a.0), named_cells(&a.1));
        let (rb, wb) = (named_cells(&b.0), named_cells(&b.1));
        let expected = !wa.is_disjoint(&wb) || !wa.is_disjoint(&rb) || !ra.is_disjoint(&wb);
        prop_assert_eq!(conflicts(&access(&a), &access(&b)), expected, "a = {:?}, b = {:?}", a, b);
    }

    /// A declared set permits a single tuple key, or a prefix, only if it
    /// names all of its cells; for a single key, exactly then.
    #[test]
    fn permits_agrees_with_cells_with_prefixes(a in spec_set_strategy(), k in spec_strategy()) {
        let set = access(&a);
        let key = k.key();
        let wanted = named_cells(std::slice::from_ref(&k));
        let written = named_cells(&a.1);
        let readable: BTreeSet<_> = named_cells(&a.0).union(&written).cloned().collect();
        if set.permits_read(&key) {
            prop_assert!(wanted.is_subset(&readable), "{:?} read by {:?}", k, a);
        }
        if set.permits_write(&key) {
            prop_assert!(wanted.is_subset(&written), "{:?} written by {:?}", k, a);
        }
        if matches!(k, Spec::TupleEntry(..) | Spec::Entry(..)) {
            prop_assert_eq!(set.permits_read(&key), wanted.is_subset(&readable), "{:?} {:?}", k, a);
            prop_assert_eq!(set.permits_write(&key), wanted.is_subset(&written), "{:?} {:?}", k, a);
        }
    }
}
