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

    /// Runs `iterations` steps; returns how long they took.
    pub fn run(&mut self, iterations: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iterations {
            self.step();
        }
        start.elapsed()
    }
}
