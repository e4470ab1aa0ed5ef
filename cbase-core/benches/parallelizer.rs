//! Cost per request of the lock-based `Parallelizer` against the pairwise
//! baseline (the published CBASE design), in steady state.
//!
//! Each measured iteration is one request through a window of 150: schedule
//! it and, with the window full, complete the oldest running request (feeding
//! the requests that wakes into the running FIFO). Requests carry 2, 10 or 100
//! `table[value]` keys, half read and half written, over one or two tables of
//! a 1,000,000-value keyspace, so some requests conflict and queue. The
//! reported time is per request (schedule + complete).
//!
//! Run with `cargo bench -p cbase-core --bench parallelizer`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cbase_core::parallelizer::{PairwiseParallelizer, Parallelizer, Scheduled, TaskId, WindowFull};
use cbase_core::{AccessSet, Key, TableId, ValueHash};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Requests in flight: the window of the CBASE paper's experiments.
const WINDOW: usize = 150;
/// Distinct pre-generated requests, replayed cyclically.
const REQUESTS: usize = 4096;
const KEYSPACE: u64 = 1_000_000;
const TABLES: [&str; 2] = ["accounts", "orders"];

fn workload(keys: usize, seed: u64) -> Vec<AccessSet> {
    let tables = TABLES.map(TableId::of);
    let mut rng = StdRng::seed_from_u64(seed);
    (0..REQUESTS)
        .map(|_| {
            let first = rng.gen_range(0..tables.len());
            let both = rng.gen_bool(0.5);
            let mut set = AccessSet::none();
            for _ in 0..keys {
                let table = if both {
                    tables[rng.gen_range(0..tables.len())]
                } else {
                    tables[first]
                };
                let key = Key::Entry(table, ValueHash::of(&rng.gen_range(0..KEYSPACE)));
                if rng.gen_bool(0.5) {
                    set.push_write(key);
                } else {
                    set.push_read(key);
                }
            }
            set
        })
        .collect()
}

/// The surface both parallelizers share.
trait Scheduler {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull>;
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>);
    fn in_flight(&self) -> usize;
}

impl Scheduler for Parallelizer {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        Parallelizer::schedule(self, access)
    }
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        Parallelizer::complete(self, task, ready);
    }
    fn in_flight(&self) -> usize {
        Parallelizer::in_flight(self)
    }
}

impl Scheduler for PairwiseParallelizer {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        PairwiseParallelizer::schedule(self, access)
    }
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        PairwiseParallelizer::complete(self, task, ready);
    }
    fn in_flight(&self) -> usize {
        PairwiseParallelizer::in_flight(self)
    }
}

/// A parallelizer kept full, as the executor would keep it.
struct Pipeline<'a, S> {
    scheduler: S,
    requests: &'a [AccessSet],
    next: usize,
    /// Running requests, oldest first: the one completed next.
    running: VecDeque<TaskId>,
    woken: Vec<TaskId>,
}

impl<'a, S: Scheduler> Pipeline<'a, S> {
    fn new(scheduler: S, requests: &'a [AccessSet]) -> Self {
        let mut pipeline = Pipeline {
            scheduler,
            requests,
            next: 0,
            running: VecDeque::with_capacity(WINDOW),
            woken: Vec::with_capacity(WINDOW),
        };
        // Reach steady state (full window) before measuring; criterion's own
        // warm-up does the rest.
        for _ in 0..4 * WINDOW {
            pipeline.step();
        }
        pipeline
    }

    /// One request in, and (window full) one out.
    #[inline]
    fn step(&mut self) {
        let request = &self.requests[self.next];
        self.next = (self.next + 1) % self.requests.len();
        let scheduled = self
            .scheduler
            .schedule(black_box(request))
            .expect("the window has room");
        if scheduled.ready {
            self.running.push_back(scheduled.task);
        }
        if self.scheduler.in_flight() == WINDOW {
            let oldest = self
                .running
                .pop_front()
                .expect("with the window full, the earliest request is running");
            self.woken.clear();
            self.scheduler.complete(oldest, &mut self.woken);
            self.running.extend(self.woken.iter().copied());
        }
    }

    fn run(&mut self, iterations: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iterations {
            self.step();
        }
        start.elapsed()
    }
}

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
