//! What one entry of a `Table` costs in memory, against the same data held
//! by plain Rust collections: the figures behind the sizing advice in the
//! book's durability chapter.
//!
//! `cargo bench -p cbase-core --bench memory` (add `-- --quick` for 10^5
//! entries instead of 10^6). For `u64` keys and 100-byte `Vec<u8>` values
//! it fills, one after the other in this process:
//! - a `Vec` of the values alone (what the values themselves take),
//! - a `BTreeMap<u64, Vec<u8>>` filled in key order and one filled in a
//!   scattered order (a B-tree's nodes end up fuller when keys arrive out of
//!   order),
//! - a `Table<u64, Vec<u8>>` filled in key order and one in scattered
//!   order: the map plus the table's digest tree, which keeps 32 bytes per
//!   entry for the checkpoint digest,
//!
//! and prints each one's growth in resident memory per entry, next to the
//! entry's encoded size (what a checkpoint holds). Resident memory is read
//! from `/proc/self/status`, so the figures are Linux's; each structure is
//! dropped and the allocator's free pages returned before the next.

use cbase_core::{Container, State, Table, codec};

#[path = "support/resident.rs"]
mod resident;
use resident::resident_bytes;

const VALUE_BYTES: usize = 100;

struct OneTable {
    values: Table<u64, Vec<u8>>,
}

impl State for OneTable {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

/// Hands the allocator's free pages back, so the next measurement starts
/// from what is live.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it touches no live
    // allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn value(key: u64) -> Vec<u8> {
    let mut value = vec![0u8; VALUE_BYTES];
    value[..8].copy_from_slice(&key.to_le_bytes());
    value
}

/// The `at`-th key of a scattered order over `0..n`: a multiplication by
/// an odd constant modulo a power of two at least `n`, skipping what falls
/// outside, visits every key once.
fn scattered(n: u64) -> impl Iterator<Item = u64> {
    let size = n.next_power_of_two();
    (0..size)
        .map(move |at| at.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (size - 1))
        .filter(move |key| *key < n)
}

/// Resident bytes per entry that building `build(n)` added, the structure
/// still alive when measured.
fn per_entry<T>(n: u64, build: impl FnOnce(u64) -> T) -> f64 {
    give_back();
    let before = resident_bytes();
    let built = build(n);
    let grown = resident_bytes().saturating_sub(before);
    drop(built);
    grown as f64 / n as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let encoded = (codec::encode(&0u64).expect("encodes").len()
        + codec::encode(&value(0)).expect("encodes").len()) as f64;
    let rows: [(&str, f64); 5] = [
        (
            "`Vec<Vec<u8>>`: the values alone",
            per_entry(n, |n| (0..n).map(value).collect::<Vec<_>>()),
        ),
        (
            "`BTreeMap<u64, Vec<u8>>`, keys in order",
            per_entry(n, |n| {
                (0..n).map(|k| (k, value(k))).fold(
                    std::collections::BTreeMap::new(),
                    |mut map, (k, v)| {
                        map.insert(k, v);
                        map
                    },
                )
            }),
        ),
        (
            "`BTreeMap<u64, Vec<u8>>`, keys scattered",
            per_entry(n, |n| {
                scattered(n).fold(std::collections::BTreeMap::new(), |mut map, k| {
                    map.insert(k, value(k));
                    map
                })
            }),
        ),
        (
            "`Table<u64, Vec<u8>>`, keys in order",
            per_entry(n, |n| {
                let state = OneTable {
                    values: Table::new(),
                };
                for k in 0..n {
                    state.values.insert(k, value(k));
                }
                // The digest is folded, as at a checkpoint.
                let _ = state.digest();
                state
            }),
        ),
        (
            "`Table<u64, Vec<u8>>`, keys scattered",
            per_entry(n, |n| {
                let state = OneTable {
                    values: Table::new(),
                };
                for k in scattered(n) {
                    state.values.insert(k, value(k));
                }
                let _ = state.digest();
                state
            }),
        ),
    ];
    println!(
        "{n} entries, u64 keys, {VALUE_BYTES}-byte Vec<u8> values; encoded, an entry is {encoded:.0} bytes\n"
    );
    println!("| held as | resident bytes per entry | against the encoded entry |");
    println!("|---|---:|---:|");
    for (what, bytes) in rows {
        println!("| {what} | {bytes:.0} | {:.2} |", bytes / encoded);
    }
}
