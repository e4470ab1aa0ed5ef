//! What keeping the checkpoint digest costs a write, by the size of the
//! container: a [`DigestTree`] of 10^3, 10^5 and 10^6 entries takes random
//! updates of entries it holds, as a table's commits report them (the old
//! entry's digest out, the new one's in, the bucket rehashed).
//!
//! `cargo bench -p cbase-core --bench digests` (add `-- --quick` for fewer
//! updates). Prints the median time per update over 5 rounds for each size,
//! the sizes alternating within each round, and each size against 10^3.

use std::hint::black_box;
use std::time::Instant;

use cbase_core::merkle::{DigestTree, Hash, entry_digest, key_hash};

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

struct Sized {
    entries: u64,
    tree: DigestTree,
    /// Each key's hash and current entry digest.
    current: Vec<(u64, Hash)>,
    round: u64,
}

impl Sized {
    fn new(entries: u64) -> Sized {
        let current: Vec<(u64, Hash)> = (0..entries)
            .map(|key| {
                let key = key.to_le_bytes();
                (key_hash(&key), entry_digest(&key, &[0u8; 100]))
            })
            .collect();
        let tree = DigestTree::from_entries(current.iter().copied());
        tree.root();
        Sized {
            entries,
            tree,
            current,
            round: 0,
        }
    }

    /// Nanoseconds per update over `updates` random ones; the new digests
    /// are computed before the clock starts.
    fn time(&mut self, updates: u64) -> f64 {
        self.round += 1;
        let planned: Vec<(usize, Hash)> = (0..updates)
            .map(|at| {
                let key = mix(at ^ (self.round << 40)) % self.entries;
                let mut value = [0u8; 100];
                value[..8].copy_from_slice(&self.round.to_le_bytes());
                value[8..16].copy_from_slice(&at.to_le_bytes());
                (key as usize, entry_digest(&key.to_le_bytes(), &value))
            })
            .collect();
        let start = Instant::now();
        for (key, new) in planned {
            let (hash, old) = self.current[key];
            self.tree
                .replace(hash, Some(old), Some(new))
                .expect("holds the entry");
            self.current[key].1 = new;
        }
        black_box(self.tree.root());
        start.elapsed().as_nanos() as f64 / updates as f64
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let updates = if quick { 20_000 } else { 200_000 };
    let mut sizes: Vec<Sized> = [1_000, 100_000, 1_000_000].map(Sized::new).into();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..5 {
        for (at, sized) in sizes.iter_mut().enumerate() {
            samples[at].push(sized.time(updates));
        }
    }
    println!("| entries | ns per update (median of 5) | against 10^3 |");
    println!("|---:|---:|---:|");
    let base = median(samples[0].clone());
    for (sized, samples) in sizes.iter().zip(samples) {
        let ns = median(samples);
        println!("| {} | {ns:.0} | {:.2} |", sized.entries, ns / base);
    }
}
