//! A whole program in one line of `main`: named counters, run as a local
//! cluster, as one replica of a deployed cluster, or called from the shell.
//!
//! ```text
//! cargo run --release --example counter -- local                 # 4 replicas; writes cluster.toml
//! cargo run --release --example counter -- call add '{"name": "visits", "by": 1}' --config cluster.toml
//! cargo run --release --example counter -- call get '"visits"' --config cluster.toml
//! cargo run --release --example counter -- status --config cluster.toml
//! cargo run --release --example counter -- replica --config deploy/cluster.toml --id 0 --key deploy/replica-0.key
//! cargo run --release --example counter -- --help
//! ```

use cbase::prelude::*;

// ANCHOR: all
/// Named counters.
#[cbase::service]
pub trait Counter {
    /// Adds `by` to the counter `name`; returns the new count.
    #[writes(counts[name])]
    fn add(&self, name: String, by: u64) -> u64;

    /// The count of `name`, if it was ever added to.
    #[reads(counts[name])]
    fn get(&self, name: String) -> Option<u64>;

    /// Every counter's total.
    #[reads(counts[*])]
    fn total(&self) -> u64;
}

#[derive(Default, cbase::State)]
pub struct Counters {
    counts: Table<String, u64>,
}

impl Counter for Counters {
    fn add(&self, name: String, by: u64) -> u64 {
        self.counts.upsert(
            name,
            || 0,
            |count| {
                *count += by;
                *count
            },
        )
    }

    fn get(&self, name: String) -> Option<u64> {
        self.counts.get(&name)
    }

    fn total(&self) -> u64 {
        self.counts.fold(0, |sum, _, count| sum + count)
    }
}

fn main() {
    cbase::app::run(|| CounterService(Counters::default()))
}
// ANCHOR_END: all
