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
