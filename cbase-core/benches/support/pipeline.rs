//! The parallelizer workload and steady-state loop, shared by
//! `cbase-core/benches/parallelizer.rs` (criterion) and the root
//! `benches/paper.rs` (experiment e), so both measure the same thing.
//!
//! Each step is one request through a window of 150: schedule it and, with the
//! window full, complete the oldest running request (feeding the requests that
//! wakes into the running FIFO). Requests carry `table[value]` keys, half read
//! and half written, over one or two tables of a 1,000,000-value keyspace, so
//! some requests conflict and queue.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cbase_core::parallelizer::{PairwiseParallelizer, Parallelizer, Scheduled, TaskId, WindowFull};
use cbase_core::{AccessSet, Key, TableId, ValueHash};

/// Requests in flight: the window of the CBASE paper's experiments.
pub const WINDOW: usize = 150;
/// Distinct pre-generated requests, replayed cyclically.
pub const REQUESTS: usize = 4096;
/// Values keys are drawn from.
pub const KEYSPACE: u64 = 1_000_000;
/// The tables keys name.
pub const TABLES: [&str; 2] = ["accounts", "orders"];

/// `REQUESTS` access sets of `keys` keys each, from `seed` (xorshift: the same
/// requests on every run, without a dependency on a random-number crate).
pub fn workload(keys: usize, seed: u64) -> Vec<AccessSet> {
    let tables = TABLES.map(TableId::of);
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..REQUESTS)
        .map(|_| {
            let first = (next() % 2) as usize;
            let both = next() % 2 == 0;
            let mut set = AccessSet::none();
            for _ in 0..keys {
                let table = if both {
                    tables[(next() % 2) as usize]
                } else {
                    tables[first]
                };
                let key = Key::Entry(table, ValueHash::of(&(next() % KEYSPACE)));
                if next() % 2 == 0 {
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
pub trait Scheduler {
    /// Takes the next request.
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull>;
    /// Finishes a running request.
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>);
    /// Requests in flight.
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

/// A parallelizer kept full, as the executor keeps it.
pub struct Pipeline<'a, S> {
    scheduler: S,
    requests: &'a [AccessSet],
    next: usize,
    /// Running requests, oldest first: the one completed next.
    running: VecDeque<TaskId>,
    woken: Vec<TaskId>,
}

impl<'a, S: Scheduler> Pipeline<'a, S> {
    /// A pipeline already in steady state (full window).
    pub fn new(scheduler: S, requests: &'a [AccessSet]) -> Self {
        let mut pipeline = Pipeline {
            scheduler,
            requests,
            next: 0,
            running: VecDeque::with_capacity(WINDOW),
            woken: Vec::with_capacity(WINDOW),
        };
        for _ in 0..4 * WINDOW {
            pipeline.step();
        }
        pipeline
    }

    /// One request in, and (window full) one out.
    #[inline]
    pub fn step(&mut self) {
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

    /// Runs `iterations` steps; returns how long they took, not counting
    /// the reads that bring each request's access set into the cache.
    ///
    /// In a replica the access set is built from the decoded request just
    /// before it is scheduled, so it is in the cache when the parallelizer
    /// reads it. Here the `REQUESTS` pre-built sets are replayed; at 100 keys
    /// they are 10 MB, and reading each one cold from memory cost more than
    /// scheduling it (about 450 of 1,700 ns per request). So the requests
    /// are read ahead in batches of `READ_AHEAD`, outside the timed part.
    pub fn run(&mut self, iterations: u64) -> Duration {
        let mut took = Duration::ZERO;
        let mut left = iterations;
        while left > 0 {
            let batch = left.min(READ_AHEAD);
            self.read_ahead(batch);
            let start = Instant::now();
            for _ in 0..batch {
                self.step();
            }
            took += start.elapsed();
            left -= batch;
        }
        took
    }

    /// Reads every key of the next `count` requests.
    fn read_ahead(&self, count: u64) {
        let mut sum = 0;
        for i in 0..count as usize {
            let request = &self.requests[(self.next + i) % self.requests.len()];
            for key in request.writes().iter().chain(request.reads()) {
                sum ^= match *key {
                    Key::All => 0,
                    Key::Table(table) => table.0,
                    Key::Value(value) => value.0,
                    Key::Entry(table, value) => table.0 ^ value.0,
                    Key::Prefix(table, path) => table.0 ^ path.last().map_or(0, |p| p.0),
                    Key::TupleEntry(table, value, _) => table.0 ^ value.0,
                    Key::TupleValue(value, _) => value.0,
                };
            }
        }
        black_box(sum);
    }
}

/// Steps timed together: enough that the two clock reads around them cost
/// under 2 ns per step, few enough that their requests (75 KB at 100 keys)
/// stay in the L2 cache.
const READ_AHEAD: u64 = 32;
