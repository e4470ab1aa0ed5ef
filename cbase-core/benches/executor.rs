//! Executor throughput, sequential baseline and worker pool side by side.
//!
//! Run with `cargo bench -p cbase-core --bench executor`. Prints markdown
//! tables of medians over several runs, measured in one process:
//!
//! 1. 10,000 independent requests that each block 1 ms (I/O-like), W = 1 vs
//!    W = 2, 8, 32: the parallel speedup.
//! 2. A fully conflicting workload of tiny requests (every request writes the
//!    same key): the overhead of the parallel machinery, W = 1 vs W = 2, 8, 32.
//!
//! `--quick` runs a smaller version (for smoke tests); `--only blocking` or
//! `--only tiny` runs one of the two. Runs of different W are interleaved
//! (W = 1, 2, 8, 32, then again), so drift in the machine's speed affects every
//! column alike.

use std::time::{Duration, Instant};

use cbase_core::{
    AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table,
};

enum Op {
    /// Blocks for the given time, touching only its own key.
    Block { id: u64, duration: Duration },
    /// Increments the one shared counter.
    Bump,
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Block { id, .. } => AccessSet::none().write(Key::entry("items", id)),
            Op::Bump => AccessSet::none().write(Key::entry("items", &u64::MAX)),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Block { .. } => "block",
            Op::Bump => "bump",
        }
    }
}

struct Items {
    items: Table<u64, u64>,
}

impl State for Items {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("items", &self.items)]
    }
}

struct Bench(Items);

impl Service for Bench {
    type Request = Op;
    type Response = ();
    fn execute(&self, op: Op, _: &Context) {
        match op {
            Op::Block { id, duration } => {
                std::thread::sleep(duration);
                self.0.items.insert(id, 1);
            }
            Op::Bump => {
                self.0.items.upsert(u64::MAX, || 0, |n| *n += 1);
            }
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn run(workers: usize, ops: impl Iterator<Item = Op>) -> Duration {
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .window(4096)
        .start(
            Bench(Items {
                items: Table::new(),
            }),
            |_| {},
        )
        .expect("bench service is well formed");
    let start = Instant::now();
    for (tag, op) in ops.enumerate() {
        executor
            .submit(tag as u64, Context::new(0, [0; 32]), op)
            .expect("executor is open");
    }
    executor.wait_idle();
    let elapsed = start.elapsed();
    executor.shutdown();
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let wanted = |part: &str| only.is_none_or(|o| o == part);
    let (blocking, tiny, runs) = if quick {
        (500, 20_000, 1)
    } else {
        (10_000, 1_000_000, 3)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; medians of interleaved runs\n");

    if wanted("blocking") {
        blocking_table(blocking, runs);
    }
    if wanted("tiny") {
        tiny_table(tiny, runs + 2);
    }
}

const WORKERS: [usize; 4] = [1, 2, 8, 32];

/// Runs `run_once(W)` for every W in `WORKERS`, `runs` rounds interleaved;
/// returns the median time per W.
fn interleaved(runs: usize, mut run_once: impl FnMut(usize) -> Duration) -> Vec<Duration> {
    let mut samples = vec![Vec::new(); WORKERS.len()];
    for _ in 0..runs {
        for (i, &workers) in WORKERS.iter().enumerate() {
            samples[i].push(run_once(workers));
        }
    }
    samples.into_iter().map(median).collect()
}

fn blocking_table(blocking: usize, runs: usize) {
    println!("### {blocking} independent requests that each block 1 ms\n");
    println!("| workers | time | requests/s | speedup vs W=1 | speedup / W |");
    println!("|---:|---:|---:|---:|---:|");
    let block = |n: usize| {
        (0..n as u64).map(|id| Op::Block {
            id,
            duration: Duration::from_millis(1),
        })
    };
    let times = interleaved(runs, |workers| run(workers, block(blocking)));
    let base = times[0];
    for (&workers, &time) in WORKERS.iter().zip(&times) {
        let speedup = base.as_secs_f64() / time.as_secs_f64();
        println!(
            "| {workers} | {:.3} s | {:.0} | {speedup:.2}x | {:.2} |",
            time.as_secs_f64(),
            blocking as f64 / time.as_secs_f64(),
            speedup / workers as f64
        );
    }
}

fn tiny_table(tiny: usize, runs: usize) {
    println!("\n### {tiny} tiny requests that all conflict (every one writes the same key)\n");
    println!("| workers | time | requests/s | relative to W=1 |");
    println!("|---:|---:|---:|---:|");
    let times = interleaved(runs, |workers| run(workers, (0..tiny).map(|_| Op::Bump)));
    let base = times[0];
    for (&workers, &time) in WORKERS.iter().zip(&times) {
        println!(
            "| {workers} | {:.3} s | {:.0} | {:.3} |",
            time.as_secs_f64(),
            tiny as f64 / time.as_secs_f64(),
            base.as_secs_f64() / time.as_secs_f64()
        );
    }
}
