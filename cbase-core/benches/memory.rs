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
//! - a `Table<u64, Vec<u8>>` built in bulk, by `collect()`, as a replica's
//!   tables are when it restarts from its directory or receives a whole
//!   state: full B-tree nodes and buckets of the digest tree of their exact
//!   size,
//!
//! and prints each one's growth in resident memory per entry, next to the
//! entry's encoded size (what a checkpoint holds). Resident memory is read
//! from `/proc/self/status`, so the figures are Linux's. Each structure is
//! built in a process of its own (`--row I`): what one leaves in the
//! allocator's heap, freed but not handed back, changes what the next costs
//! by 10% or more.

use std::collections::BTreeMap;

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

/// What each row holds, and how to build it for `n` entries.
const ROWS: [&str; 6] = [
    "`Vec<Vec<u8>>`: the values alone",
    "`BTreeMap<u64, Vec<u8>>`, keys in order",
    "`BTreeMap<u64, Vec<u8>>`, keys scattered",
    "`Table<u64, Vec<u8>>`, keys in order",
    "`Table<u64, Vec<u8>>`, keys scattered",
    "`Table<u64, Vec<u8>>`, collected",
];

/// Measures row `row` of [`ROWS`] in this process.
fn measure(row: usize, n: u64) -> f64 {
    match row {
        0 => per_entry(n, |n| (0..n).map(value).collect::<Vec<_>>()),
        1 => per_entry(n, |n| {
            let mut map = BTreeMap::new();
            for k in 0..n {
                map.insert(k, value(k));
            }
            map
        }),
        2 => per_entry(n, |n| {
            let mut map = BTreeMap::new();
            for k in scattered(n) {
                map.insert(k, value(k));
            }
            map
        }),
        3 | 4 => per_entry(n, |n| {
            let state = OneTable {
                values: Table::new(),
            };
            let keys: Box<dyn Iterator<Item = u64>> = if row == 3 {
                Box::new(0..n)
            } else {
                Box::new(scattered(n))
            };
            for k in keys {
                state.values.insert(k, value(k));
            }
            // The digest is folded, as at a checkpoint.
            let _ = state.digest();
            state
        }),
        5 => per_entry(n, |n| {
            let state = OneTable {
                values: (0..n).map(|k| (k, value(k))).collect(),
            };
            let _ = state.digest();
            state
        }),
        _ => unreachable!("no row {row}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    // `--row I`: measure one row here and hand it to the parent.
    if let Some(at) = args.iter().position(|a| a == "--row") {
        let row: usize = args[at + 1].parse().expect("--row takes a number");
        println!("ROW {}", measure(row, n));
        return;
    }
    let encoded = (codec::encode(&0u64).expect("encodes").len()
        + codec::encode(&value(0)).expect("encodes").len()) as f64;
    println!(
        "{n} entries, u64 keys, {VALUE_BYTES}-byte Vec<u8> values; encoded, an entry is {encoded:.0} bytes\n"
    );
    println!("| held as | resident bytes per entry | against the encoded entry |");
    println!("|---|---:|---:|");
    for (row, what) in ROWS.iter().enumerate() {
        // Each in a process of its own: what one structure leaves in the
        // allocator's heap would change what the next one costs.
        let mut command = std::process::Command::new(std::env::current_exe().expect("this bench"));
        command.args(["--bench", "--row", &row.to_string()]);
        if quick {
            command.arg("--quick");
        }
        let output = command.output().expect("runs a row");
        let bytes: f64 = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("ROW ")?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "row {row} printed no figure: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        println!("| {what} | {bytes:.0} | {:.2} |", bytes / encoded);
    }
}
