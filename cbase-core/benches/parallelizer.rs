//! Cost per request of the lock-based `Parallelizer` against the pairwise
//! baseline (the published CBASE design), in steady state.
//!
//! Each measured iteration is one request through a window of 150 (the loop
//! and workload are in `support/pipeline.rs`, shared with the root `paper`
//! benchmark), with 2, 10 or 100 keys per request. The reported time is per
//! request (schedule + complete), with the request's access set in the cache
//! as in a replica, which builds it just before scheduling (see
//! `Pipeline::run`).
//!
//! Run with `cargo bench -p cbase-core --bench parallelizer`.

#[path = "support/pipeline.rs"]
mod pipeline;

use std::time::Duration;

use cbase_core::TableId;
use cbase_core::parallelizer::{PairwiseParallelizer, Parallelizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipeline::{Pipeline, TABLES, WINDOW, workload};

fn bench(c: &mut Criterion) {
    let tables = TABLES.map(TableId::of);
    for keys in [2, 10, 100] {
        let requests = workload(keys, 0x5eed + keys as u64);
        let mut group = c.benchmark_group(format!("parallelizer/{keys}_keys"));
        group.throughput(Throughput::Elements(1));
        // Built on first use (criterion calls the closure once per sample), so
        // benchmarks filtered out on the command line cost nothing.
        let mut locks = None;
        group.bench_function("locks", |b| {
            let pipeline = locks.get_or_insert_with(|| {
                Pipeline::new(Parallelizer::new(WINDOW, &tables), &requests)
            });
            b.iter_custom(|iterations| pipeline.run(iterations));
        });
        let mut pairwise = None;
        group.bench_function("pairwise", |b| {
            let pipeline = pairwise
                .get_or_insert_with(|| Pipeline::new(PairwiseParallelizer::new(WINDOW), &requests));
            b.iter_custom(|iterations| pipeline.run(iterations));
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
