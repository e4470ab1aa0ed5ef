//! The paper's experiments (Kotla and Dahlin, "High Throughput Byzantine
//! Fault Tolerance", DSN 2004), end to end through a 4-replica
//! [`LocalCluster`] in this process, the sequential baseline (`W = 1`, the
//! paper's BASE) and the parallel executor (CBASE) side by side in one run:
//!
//! - (a) throughput against workers per replica, `W` in 1..128, for
//!   independent requests that block 10 ms (I/O-like) and for CPU-bound
//!   requests of about 100 µs (a busy loop calibrated at startup), with the
//!   agreement bound (trivial requests at the same client concurrency);
//! - (b) throughput against the fraction of conflicting requests (they all
//!   write one hot key), `W = 32`, 10 ms blocking requests;
//! - (c) overhead: every request writes the same key and does almost nothing,
//!   `W = 32` against `W = 1`;
//! - (d) the file store (`examples/fs.rs`) under its IOZone-like load,
//!   `--workers 1` against `--workers 16`, run as child processes;
//! - (e) the parallelizer alone: scheduling cost per request against the
//!   pairwise baseline (the loop of `cbase-core/benches/parallelizer.rs`).
//!
//! ```sh
//! cargo bench --bench paper                       # the full run (a few minutes)
//! cargo bench --bench paper -- --quick            # a smoke run (well under a minute)
//! cargo bench --bench paper -- --plots DIR        # where the SVG plots go (default target/paper-plots,
//!                                                 # relative to the package root, where cargo runs benches)
//! cargo bench --bench paper -- --only a,b         # some experiments only (a b c d e)
//! ```
//!
//! Prints a markdown table per experiment with the paper's targets beside
//! the figures; asserts nothing (the machine is shared and noisy).

#[path = "../cbase-core/benches/support/pipeline.rs"]
mod pipeline;

use std::error::Error;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase::core_crate::parallelizer::{PairwiseParallelizer, Parallelizer};
use cbase::prelude::*;
use cbase::{ClientConfig, TableId};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipeline::{Pipeline, Scheduler, TABLES, WINDOW, workload};

type BoxError = Box<dyn Error + Send + Sync>;

// ---------------------------------------------------------------------------
// The service under test
// ---------------------------------------------------------------------------

/// Requests that each write one entry of `items`, so two requests conflict
/// exactly when they name the same key.
#[cbase::service]
pub trait Work {
    /// Blocks the worker for `micros` µs (a disk or a remote call), then
    /// records it: I/O-like work.
    #[writes(items[key])]
    fn block(&self, key: u64, micros: u64);

    /// Runs the calibrated busy loop for `rounds` rounds: CPU-bound work.
    #[writes(items[key])]
    fn spin(&self, key: u64, rounds: u64);

    /// Increments one entry: almost nothing.
    #[writes(items[key])]
    fn touch(&self, key: u64);
}

/// The replicated state.
#[derive(Default, cbase::State)]
pub struct Items {
    items: Table<u64, u64>,
}

impl Work for Items {
    fn block(&self, key: u64, micros: u64) {
        std::thread::sleep(Duration::from_micros(micros));
        self.items.insert(key, micros);
    }

    fn spin(&self, key: u64, rounds: u64) {
        self.items.insert(key, busy(rounds));
    }

    fn touch(&self, key: u64) {
        self.items.upsert(key, || 0, |n| *n += 1);
    }
}

/// A small deterministic mixer (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The busy loop: `rounds` dependent mixes the optimizer cannot remove.
fn busy(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..rounds {
        x = mix(black_box(x));
    }
    x
}

/// Rounds of [`busy`] that take `target` on one otherwise idle core: the
/// fastest of several probes (the least disturbed by other work).
fn calibrate(target: Duration) -> (u64, Duration) {
    let probe = 200_000;
    let fastest = (0..9)
        .map(|_| {
            let start = Instant::now();
            black_box(busy(probe));
            start.elapsed()
        })
        .min()
        .expect("nine probes");
    let rounds = (target.as_secs_f64() / fastest.as_secs_f64() * probe as f64).round() as u64;
    let mut check: Vec<Duration> = (0..51)
        .map(|_| {
            let start = Instant::now();
            black_box(busy(rounds));
            start.elapsed()
        })
        .collect();
    check.sort();
    (rounds.max(1), check[check.len() / 2])
}

// ---------------------------------------------------------------------------
// One point: a fresh cluster, a bounded load, requests per second
// ---------------------------------------------------------------------------

/// The key every conflicting request writes.
const HOT: u64 = u64::MAX;
/// Keys used to warm connections up, apart from the measured ones.
const WARM_KEYS: u64 = 1 << 62;
/// The blocking time of an I/O-like request.
const BLOCK: Duration = Duration::from_millis(10);
/// The CPU time of a CPU-bound request.
const CPU: Duration = Duration::from_micros(100);
const REPLICAS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Load {
    Block,
    Spin { rounds: u64 },
    Touch,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    workers: usize,
    /// Concurrent calls (client lanes).
    lanes: usize,
    load: Load,
    /// Fraction of requests that write [`HOT`]; the others write their own key.
    conflicting: f64,
    /// Requests to complete.
    count: u64,
    /// No request is started after this much time: a bound on a slow machine.
    cap: Duration,
}

#[derive(Clone, Debug)]
struct Outcome {
    done: u64,
    elapsed: Duration,
    capped: bool,
    /// Requests per pre-prepare at the primary.
    per_proposal: f64,
    /// Views the replicas ended in (all 0 without a view change).
    views_changed: bool,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// Whether request `i` writes the hot key: exactly `fraction` of every run of
/// requests, evenly spread (every 10th for 10%, 1 in 4 for 25%).
fn is_conflicting(i: u64, fraction: f64) -> bool {
    ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

fn client_config(lanes: usize) -> ClientConfig {
    ClientConfig {
        lanes,
        max_batch: lanes,
        // A call of the sequential baseline waits behind up to `lanes` 10 ms
        // requests: retransmitting it after the default 500 ms would only add
        // traffic, since agreement has long ordered it.
        first_retransmit: Duration::from_secs(20),
        timeout: Duration::from_secs(300),
        ..ClientConfig::default()
    }
}

async fn run_point(point: Point, bar: &ProgressBar) -> Result<Outcome, BoxError> {
    let cluster = LocalCluster::builder()
        .replicas(REPLICAS)
        // The paper's replicas kept their state in memory; so do these.
        .data(cbase::net::DataDirs::InMemory)
        .executor(ExecutorBuilder::new().workers(point.workers).window(4096))
        .start(|| WorkService(Items::default()))
        .await?;
    let outcome = drive(&cluster, point, bar).await;
    cluster.shutdown().await;
    outcome
}

async fn drive(
    cluster: &LocalCluster,
    point: Point,
    bar: &ProgressBar,
) -> Result<Outcome, BoxError> {
    let work = WorkClient::new(cluster.client_with(client_config(point.lanes))?);
    // Warm up: connections made, keys exchanged, a few batches agreed.
    for round in 0..4 {
        let calls: Vec<_> = (0..16)
            .map(|k| {
                let work = work.clone();
                tokio::spawn(async move { work.touch(WARM_KEYS + round * 16 + k).await })
            })
            .collect();
        for call in calls {
            call.await??;
        }
    }
    let primary = || {
        cluster
            .replica(0)
            .map(|r| r.metrics().protocol.lock().clone())
    };
    let before = primary();

    bar.reset();
    bar.set_length(point.count);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(point.lanes);
    for _ in 0..point.lanes {
        let (work, next, done, bar) = (work.clone(), next.clone(), done.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= point.count || start.elapsed() > point.cap {
                    return Ok::<(), ClientError>(());
                }
                let key = if is_conflicting(i, point.conflicting) {
                    HOT
                } else {
                    i
                };
                match point.load {
                    Load::Block => work.block(key, BLOCK.as_micros() as u64).await?,
                    Load::Spin { rounds } => work.spin(key, rounds).await?,
                    Load::Touch => work.touch(key).await?,
                }
                done.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let done = done.load(Ordering::Relaxed);
    let after = primary();
    let per_proposal = match (before, after) {
        (Some(b), Some(a)) => {
            (a.proposed_requests - b.proposed_requests) as f64
                / (a.proposals - b.proposals).max(1) as f64
        }
        _ => f64::NAN,
    };
    let views_changed = cluster
        .replicas()
        .any(|r| r.metrics().view.load(Ordering::Relaxed) != 0);
    Ok(Outcome {
        done,
        elapsed,
        capped: done < point.count,
        per_proposal,
        views_changed,
    })
}

// ---------------------------------------------------------------------------
// The harness: options, progress, output
// ---------------------------------------------------------------------------

struct Options {
    quick: bool,
    plots: PathBuf,
    only: Vec<char>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            plots: PathBuf::from("target/paper-plots"),
            only: "abcde".chars().collect(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--plots" => match args.next() {
                    Some(dir) => options.plots = PathBuf::from(dir),
                    None => usage("--plots needs a directory"),
                },
                "--only" => match args.next() {
                    Some(list) => {
                        options.only = list.chars().filter(|c| "abcde".contains(*c)).collect()
                    }
                    None => usage("--only needs a list such as a,b"),
                },
                // What `cargo bench` passes to every benchmark binary.
                "--bench" => {}
                "--help" | "-h" => usage(""),
                other => usage(&format!("unknown argument `{other}`")),
            }
        }
        options
    }

    fn runs(&self, experiment: char) -> bool {
        self.only.contains(&experiment)
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: cargo bench --bench paper -- [--quick] [--plots DIR] [--only a,b,c,d,e]");
    std::process::exit(2);
}

/// Progress on stderr (hidden when it is not a terminal), tables on stdout.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    current: ProgressBar,
}

impl Progress {
    fn new(steps: u64) -> Progress {
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(steps));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} {bar:30} {pos}/{len} steps  {msg}")
                .expect("a valid template"),
        );
        let current = multi.add(ProgressBar::new(1));
        current.set_style(
            ProgressStyle::with_template("         {bar:30} {pos}/{len} requests  {per_sec}")
                .expect("a valid template"),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Progress {
            multi,
            overall,
            current,
        }
    }

    fn step(&self, what: impl Into<std::borrow::Cow<'static, str>>) {
        self.overall.set_message(what);
    }

    fn stepped(&self) {
        self.overall.inc(1);
    }

    fn print(&self, text: &str) {
        self.multi.suspend(|| {
            println!("{text}");
        });
    }

    fn finish(&self) {
        self.current.finish_and_clear();
        self.overall.finish_and_clear();
    }
}

/// `12345.6` as `12,346`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Notes a point's anomalies in its row.
fn flags(o: &Outcome) -> String {
    let mut notes = Vec::new();
    if o.capped {
        notes.push("time cap hit");
    }
    if o.views_changed {
        notes.push("view change");
    }
    notes.join(", ")
}

// ---------------------------------------------------------------------------
// (a) Throughput against workers
// ---------------------------------------------------------------------------

const WORKERS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Concurrent calls for every CPU-bound point: enough for W = 128, and the
/// same for every W, so that every point batches alike and pays the same
/// agreement CPU per request; only the workers change.
const CPU_LANES: usize = 512;

/// Lanes that keep `w` workers busy on every replica.
fn lanes_for(w: usize) -> usize {
    (4 * w).max(64)
}

struct Series {
    /// (W, outcome or the error that stopped the point).
    points: Vec<(usize, Result<Outcome, String>)>,
}

impl Series {
    fn rate(&self, w: usize) -> Option<f64> {
        self.points
            .iter()
            .find(|(x, _)| *x == w)
            .and_then(|(_, o)| o.as_ref().ok())
            .map(Outcome::rate)
    }

    fn measured(&self) -> Vec<(usize, f64)> {
        self.points
            .iter()
            .filter_map(|(w, o)| o.as_ref().ok().map(|o| (*w, o.rate())))
            .collect()
    }
}

struct Workers {
    io: Series,
    cpu: Series,
    /// Trivial independent requests, W = 32, at the lanes of the W = 128 point.
    agreement: Result<Outcome, String>,
    cpu_rounds: u64,
    cpu_measured: Duration,
    /// What `sleep(10 ms)` takes here (median).
    slept: Duration,
}

fn target_secs(quick: bool) -> f64 {
    if quick { 0.3 } else { 4.0 }
}

fn experiment_a(
    runtime: &tokio::runtime::Runtime,
    progress: &Progress,
    options: &Options,
    cores: usize,
) -> Workers {
    let secs_per_point = target_secs(options.quick);
    let cap = Duration::from_secs_f64(secs_per_point * 3.0 + 2.0);
    progress.step("(a) calibrating the busy loop");
    let (cpu_rounds, cpu_measured) = calibrate(CPU);
    let mut sleeps: Vec<Duration> = (0..if options.quick { 5 } else { 21 })
        .map(|_| {
            let start = Instant::now();
            std::thread::sleep(BLOCK);
            start.elapsed()
        })
        .collect();
    sleeps.sort();
    let slept = sleeps[sleeps.len() / 2];

    let mut io = Series { points: Vec::new() };
    for w in WORKERS {
        progress.step(format!("(a) 10 ms blocking requests, W = {w}"));
        // Expected: W requests every 10 ms per replica, below the agreement bound.
        let expected = (w as f64 / BLOCK.as_secs_f64()).min(15_000.0);
        let point = Point {
            workers: w,
            lanes: lanes_for(w),
            load: Load::Block,
            conflicting: 0.0,
            count: ((expected * secs_per_point) as u64).max(30),
            cap,
        };
        let outcome = runtime.block_on(run_point(point, &progress.current));
        io.points.push((w, outcome.map_err(|e| e.to_string())));
        progress.stepped();
    }

    let mut cpu = Series { points: Vec::new() };
    // The whole machine's cores run every replica's copy of each request.
    let cpu_bound = cores as f64 / (REPLICAS as f64 * CPU.as_secs_f64());
    for w in WORKERS {
        progress.step(format!("(a) 100 µs CPU-bound requests, W = {w}"));
        let point = Point {
            workers: w,
            lanes: CPU_LANES,
            load: Load::Spin { rounds: cpu_rounds },
            conflicting: 0.0,
            count: ((0.8 * cpu_bound * secs_per_point) as u64).max(200),
            cap,
        };
        let outcome = runtime.block_on(run_point(point, &progress.current));
        cpu.points.push((w, outcome.map_err(|e| e.to_string())));
        progress.stepped();
    }

    progress.step("(a) agreement bound: trivial requests, 512 concurrent calls");
    let point = Point {
        workers: 32,
        lanes: lanes_for(128),
        load: Load::Touch,
        conflicting: 0.0,
        count: if options.quick { 10_000 } else { 200_000 },
        cap,
    };
    let agreement = runtime
        .block_on(run_point(point, &progress.current))
        .map_err(|e| e.to_string());
    progress.stepped();

    Workers {
        io,
        cpu,
        agreement,
        cpu_rounds,
        cpu_measured,
        slept,
    }
}

fn report_a(a: &Workers, cores: usize) -> String {
    let mut out = String::new();
    let agreement = a.agreement.as_ref().map(Outcome::rate).ok();
    let _ = writeln!(
        out,
        "### (a)(i) Independent requests that block 10 ms (I/O-like), against workers per replica\n"
    );
    let _ = writeln!(
        out,
        "Target (paper): speedup approaching W until agreement becomes the bound. `sleep(10 ms)` itself takes \
         {:.2} ms here (median), so the attainable ideal is W / {:.2} ms, {:.1}% below W / 10 ms.\n",
        a.slept.as_secs_f64() * 1e3,
        a.slept.as_secs_f64() * 1e3,
        100.0 * (1.0 - BLOCK.as_secs_f64() / a.slept.as_secs_f64())
    );
    let _ = writeln!(
        out,
        "| W | concurrent calls | requests | time | requests/s | ideal W / 10 ms | speedup vs W=1 | speedup / W | requests per pre-prepare | notes |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let base = a.io.rate(1);
    for (w, outcome) in &a.io.points {
        let ideal = *w as f64 / BLOCK.as_secs_f64();
        match outcome {
            Ok(o) => {
                let speedup = base.map_or(f64::NAN, |b| o.rate() / b);
                let _ = writeln!(
                    out,
                    "| {w} | {} | {} | {} | {} | {} | {speedup:.2}x | {:.2} | {:.1} | {} |",
                    lanes_for(*w),
                    o.done,
                    secs(o.elapsed),
                    thousands(o.rate()),
                    thousands(ideal),
                    speedup / *w as f64,
                    o.per_proposal,
                    flags(o)
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {w} | {} | failed: {e} ||||||||", lanes_for(*w));
            }
        }
    }
    match &a.agreement {
        Ok(o) => {
            let _ = writeln!(
                out,
                "\nAgreement bound at the same client concurrency: trivial independent requests (`touch`), \
                 {} concurrent calls, W = 32: **{} requests/s** ({} requests in {}, {:.1} per pre-prepare{}).",
                lanes_for(128),
                thousands(o.rate()),
                o.done,
                secs(o.elapsed),
                o.per_proposal,
                if flags(o).is_empty() {
                    String::new()
                } else {
                    format!("; {}", flags(o))
                }
            );
        }
        Err(e) => {
            let _ = writeln!(out, "\nAgreement bound: failed: {e}");
        }
    }
    if let (Some(top), Some(bound)) = (a.io.rate(128), agreement) {
        let _ = writeln!(
            out,
            "At W = 128 the blocking requests reach {:.0}% of the ideal 12,800 requests/s and {:.0}% of that agreement \
             bound: {}. At this agreement rate it would be from about W = {:.0} workers per replica \
             (bound × {:.2} ms).",
            100.0 * top / 12_800.0,
            100.0 * top / bound,
            if top < 0.7 * bound {
                "agreement is not yet the bound"
            } else {
                "agreement is close to being the bound"
            },
            bound * a.slept.as_secs_f64(),
            a.slept.as_secs_f64() * 1e3
        );
    }

    let cpu_bound = cores as f64 / (REPLICAS as f64 * CPU.as_secs_f64());
    let _ = writeln!(
        out,
        "\n### (a)(ii) Independent CPU-bound requests of about 100 µs, against workers per replica\n"
    );
    let _ = writeln!(
        out,
        "Busy loop calibrated at startup: {} rounds, median {:.0} µs alone on a core. Every replica runs every \
         request, so the {cores} cores of this machine can run at most {cores} / ({REPLICAS} × 100 µs) = \
         **{} requests/s** whatever W (agreement's own CPU not counted). Target (paper): speedup ≥ 0.9 × the cores \
         available to a replica; here that is {cores} / {REPLICAS} = {:.1} core per replica, which the sequential \
         baseline already fills (four replicas each running one request use all {cores} cores), so the attainable \
         speedup is {:.1}x. \"of CPU bound\" = requests/s ÷ {}. Every point has {CPU_LANES} concurrent calls, so \
         that batching, and with it agreement's CPU per request, is the same for every W.\n",
        a.cpu_rounds,
        a.cpu_measured.as_secs_f64() * 1e6,
        thousands(cpu_bound),
        cores as f64 / REPLICAS as f64,
        (cores as f64 / REPLICAS as f64).max(1.0),
        thousands(cpu_bound),
    );
    let _ = writeln!(
        out,
        "| W | concurrent calls | requests | time | requests/s | speedup vs W=1 | speedup / W | of CPU bound | requests per pre-prepare | notes |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let base = a.cpu.rate(1);
    for (w, outcome) in &a.cpu.points {
        match outcome {
            Ok(o) => {
                let speedup = base.map_or(f64::NAN, |b| o.rate() / b);
                let _ = writeln!(
                    out,
                    "| {w} | {} | {} | {} | {} | {speedup:.2}x | {:.3} | {:.0}% | {:.1} | {} |",
                    CPU_LANES,
                    o.done,
                    secs(o.elapsed),
                    thousands(o.rate()),
                    speedup / *w as f64,
                    100.0 * o.rate() / cpu_bound,
                    o.per_proposal,
                    flags(o)
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {w} | {} | failed: {e} ||||||||", CPU_LANES);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// (b) Throughput against the fraction of conflicting requests
// ---------------------------------------------------------------------------

const CONFLICTS: [f64; 6] = [0.0, 0.10, 0.25, 0.50, 0.75, 1.0];
const B_WORKERS: usize = 32;

/// What a perfect parallelizer allows: the hot key's requests run one after
/// another (`p` of them, 10 ms each), the rest `W` at a time.
fn conflict_model(p: f64) -> f64 {
    let t = BLOCK.as_secs_f64();
    let parallel = B_WORKERS as f64 / t;
    if p == 0.0 {
        parallel
    } else {
        parallel.min(1.0 / (p * t))
    }
}

fn experiment_b(
    runtime: &tokio::runtime::Runtime,
    progress: &Progress,
    options: &Options,
) -> Vec<(f64, Result<Outcome, String>)> {
    let secs_per_point = target_secs(options.quick);
    let mut points = Vec::new();
    for p in CONFLICTS {
        progress.step(format!(
            "(b) {:.0}% conflicting, W = {B_WORKERS}",
            p * 100.0
        ));
        let point = Point {
            workers: B_WORKERS,
            lanes: lanes_for(B_WORKERS),
            load: Load::Block,
            conflicting: p,
            count: ((conflict_model(p) * secs_per_point) as u64).max(30),
            cap: Duration::from_secs_f64(secs_per_point * 3.0 + 2.0),
        };
        let outcome = runtime.block_on(run_point(point, &progress.current));
        points.push((p, outcome.map_err(|e| e.to_string())));
        progress.stepped();
    }
    points
}

fn report_b(points: &[(f64, Result<Outcome, String>)], sequential: Option<f64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### (b) Requests that block 10 ms, W = {B_WORKERS}, against the fraction that conflict (write one hot key)\n"
    );
    let _ = writeln!(
        out,
        "Expected: a curve falling from the independent figure to the sequential one ({} requests/s at W = 1 in (a)). \
         \"model\" = min(W / 10 ms, 1 / (fraction × 10 ms)): the hot key's requests run one at a time, the rest W at a time.\n",
        sequential.map_or("100 (ideal)".to_owned(), thousands)
    );
    let _ = writeln!(
        out,
        "| conflicting | requests | time | requests/s | model | of model | vs 0% | vs W=1 (a) | notes |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let independent = points
        .first()
        .and_then(|(_, o)| o.as_ref().ok())
        .map(Outcome::rate);
    for (p, outcome) in points {
        match outcome {
            Ok(o) => {
                let _ = writeln!(
                    out,
                    "| {:.0}% | {} | {} | {} | {} | {:.0}% | {:.2} | {} | {} |",
                    p * 100.0,
                    o.done,
                    secs(o.elapsed),
                    thousands(o.rate()),
                    thousands(conflict_model(*p)),
                    100.0 * o.rate() / conflict_model(*p),
                    independent.map_or(f64::NAN, |i| o.rate() / i),
                    sequential.map_or("–".to_owned(), |s| format!("{:.1}x", o.rate() / s)),
                    flags(o)
                );
            }
            Err(e) => {
                let _ = writeln!(out, "| {:.0}% | failed: {e} |||||||", p * 100.0);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// (c) Overhead: everything conflicts, nothing to do
// ---------------------------------------------------------------------------

struct Overhead {
    /// Per round: (sequential, parallel) requests/s.
    rounds: Vec<(Result<Outcome, String>, Result<Outcome, String>)>,
    lanes: usize,
}

fn experiment_c(
    runtime: &tokio::runtime::Runtime,
    progress: &Progress,
    options: &Options,
) -> Overhead {
    let (rounds, count) = if options.quick {
        (1, 10_000)
    } else {
        (5, 120_000)
    };
    let lanes = 256;
    let mut results = Vec::new();
    for round in 0..rounds {
        // ABBA order (1, 32, then 32, 1, ...), so neither configuration always
        // runs right after the other's cluster was torn down.
        let order = if round % 2 == 0 { [1, 32] } else { [32, 1] };
        let (mut sequential, mut parallel) = (None, None);
        for workers in order {
            progress.step(format!(
                "(c) every request writes one key, W = {workers}, round {}/{rounds}",
                round + 1
            ));
            let point = Point {
                workers,
                lanes,
                load: Load::Touch,
                conflicting: 1.0,
                count,
                cap: Duration::from_secs(if options.quick { 5 } else { 30 }),
            };
            let outcome = runtime
                .block_on(run_point(point, &progress.current))
                .map_err(|e| e.to_string());
            if workers == 1 {
                sequential = Some(outcome);
            } else {
                parallel = Some(outcome);
            }
            progress.stepped();
        }
        let (sequential, parallel) = (
            sequential.expect("W = 1 ran"),
            parallel.expect("W = 32 ran"),
        );
        results.push((sequential, parallel));
    }
    Overhead {
        rounds: results,
        lanes,
    }
}

fn report_c(c: &Overhead) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### (c) Overhead: every request writes the same key and does almost nothing, W = 32 against W = 1\n"
    );
    let _ = writeln!(
        out,
        "{} concurrent calls; each round runs W = 1 and W = 32 on fresh clusters, in ABBA order. Target (paper): parallel ≥ 0.95 × sequential.\n",
        c.lanes
    );
    let _ = writeln!(
        out,
        "| round | W = 1 requests/s | W = 32 requests/s | W = 32 / W = 1 | notes |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---|");
    let (mut seq, mut par, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (s, p)) in c.rounds.iter().enumerate() {
        match (s, p) {
            (Ok(s), Ok(p)) => {
                seq.push(s.rate());
                par.push(p.rate());
                ratios.push(p.rate() / s.rate());
                let notes = [flags(s), flags(p)]
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {notes} |",
                    i + 1,
                    thousands(s.rate()),
                    thousands(p.rate()),
                    p.rate() / s.rate()
                );
            }
            (s, p) => {
                let error = s.as_ref().err().or(p.as_ref().err()).expect("one failed");
                let _ = writeln!(out, "| {} | failed: {error} ||||", i + 1);
            }
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "| median | {} | {} | **{:.3}** (target ≥ 0.95) | |",
            thousands(median(&mut seq)),
            thousands(median(&mut par)),
            median(&mut ratios)
        );
    }
    out
}

// ---------------------------------------------------------------------------
// (d) The file store, as child processes
// ---------------------------------------------------------------------------

struct FsRun {
    workers: usize,
    setup: String,
    /// (phase, operations, seconds).
    phases: Vec<(String, u64, f64)>,
    checks: Vec<String>,
}

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// Builds `examples/fs.rs` with the profile this benchmark was built with
/// (`bench`: release optimizations), so it reuses the compiled dependencies;
/// returns the executable and the build time.
fn build_fs() -> Result<(PathBuf, Duration), String> {
    let start = Instant::now();
    let output = cargo()
        .args(["build", "--profile", "bench", "--example", "fs"])
        .args(["--message-format", "json-render-diagnostics"])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --profile bench --example fs` failed: {}",
            tail(&output.stderr)
        ));
    }
    // The artifact message of the example names its executable.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter(|line| line.contains(r#""name":"fs""#))
        .find_map(|line| {
            let rest = &line[line.find(r#""executable":""#)? + r#""executable":""#.len()..];
            Some(PathBuf::from(&rest[..rest.find('"')?]))
        })
        .ok_or("cargo built examples/fs.rs but named no executable")?;
    Ok((executable, start.elapsed()))
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().rev().take(6).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

fn run_fs(executable: &Path, workers: usize, ops: u64, sync: bool) -> Result<FsRun, String> {
    let mut command = Command::new(executable);
    command.args(["--workers", &workers.to_string(), "--ops", &ops.to_string()]);
    if sync {
        command.arg("--sync");
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", executable.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the fs example (--workers {workers}) failed: {} {}",
            tail(&output.stdout),
            tail(&output.stderr)
        ));
    }
    parse_fs(workers, &stdout)
}

/// Reads the example's phase table: `name ops MiB time s ops/s MiB/s`, the
/// name possibly several words.
fn parse_fs(workers: usize, stdout: &str) -> Result<FsRun, String> {
    let mut run = FsRun {
        workers,
        setup: String::new(),
        phases: Vec::new(),
        checks: Vec::new(),
    };
    let mut in_table = false;
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("4 replicas") {
            run.setup = line.to_owned();
        } else if words.first() == Some(&"phase") {
            in_table = true;
        } else if ["data:", "digests:", "disks:"].contains(words.first().unwrap_or(&"")) {
            in_table = false;
            run.checks.push(words.join(" "));
        } else if in_table && words.len() >= 7 && words[words.len() - 3] == "s" {
            let n = words.len();
            let ops = words[n - 6].parse::<u64>();
            let time = words[n - 4].parse::<f64>();
            if let (Ok(ops), Ok(time)) = (ops, time) {
                run.phases.push((words[..n - 6].join(" "), ops, time));
            }
        }
    }
    if run.phases.is_empty() {
        return Err(format!(
            "no phase table in the fs example's output (has its format changed?): {}",
            tail(stdout.as_bytes())
        ));
    }
    Ok(run)
}

struct FileStore {
    build: Result<(PathBuf, Duration), String>,
    /// Whether every write was flushed to the disk (`--sync`).
    sync: bool,
    /// Per round: the `--workers 1` run and the `--workers 16` run.
    rounds: Vec<(Result<FsRun, String>, Result<FsRun, String>)>,
    ops: u64,
}

/// The example's default load: 2048 block operations per phase (8 files of
/// 1 MiB). Larger loads mostly measure its checkpoints, which snapshot every
/// file.
const FS_OPS: u64 = 2048;

/// Runs (d) twice: as the example runs by default (writes reach the page
/// cache, durability comes from replication) and with `--sync` (every write
/// flushed to the disk before it is answered, the regime of the paper's
/// CBASE-FS, whose gain came from overlapping disk waits).
fn experiment_d(progress: &Progress, options: &Options) -> Vec<FileStore> {
    progress.step("(d) building examples/fs.rs (bench profile)");
    let build = build_fs();
    progress.stepped();
    [false, true]
        .into_iter()
        .map(|sync| file_store(progress, options, build.clone(), sync))
        .collect()
}

fn file_store(
    progress: &Progress,
    options: &Options,
    build: Result<(PathBuf, Duration), String>,
    sync: bool,
) -> FileStore {
    let (rounds, ops) = if options.quick { (1, 512) } else { (3, FS_OPS) };
    let flag = if sync { " --sync" } else { "" };
    let mut results = Vec::new();
    for round in 0..rounds {
        let mut pair = Vec::new();
        for workers in [1, 16] {
            progress.step(format!(
                "(d) file store, --workers {workers} --ops {ops}{flag}, round {}/{rounds}",
                round + 1
            ));
            pair.push(match &build {
                Ok((executable, _)) => run_fs(executable, workers, ops, sync),
                Err(e) => Err(e.clone()),
            });
            progress.stepped();
        }
        let parallel = pair.pop().expect("two runs");
        let sequential = pair.pop().expect("two runs");
        results.push((sequential, parallel));
    }
    FileStore {
        build,
        sync,
        rounds: results,
        ops,
    }
}

/// Operations per second of one phase of a run, or of all block I/O phases
/// together (`None`).
fn fs_rate(run: &FsRun, phase: Option<&str>) -> Option<f64> {
    let (ops, time) = run
        .phases
        .iter()
        .filter(|(name, _, _)| match phase {
            Some(phase) => name == phase,
            None => name != "create",
        })
        .fold((0, 0.0), |(o, t), (_, ops, time)| (o + ops, t + time));
    (ops > 0 && time > 0.0).then(|| ops as f64 / time)
}

fn report_d(d: &FileStore) -> String {
    let mut out = String::new();
    let flag = if d.sync { " --sync" } else { "" };
    let _ = writeln!(
        out,
        "### (d) The file store (examples/fs.rs{flag}) under its IOZone-like load, --workers 1 against --workers 16\n"
    );
    let _ = writeln!(
        out,
        "{} Built with `cargo build --profile bench --example fs` (release optimizations, as this benchmark, whose \
         compiled dependencies it reuses){}, then run as child processes, `fs --workers W --ops {}{flag}`, {} \
         round(s) alternating W = 1 and W = 16; medians. Target (paper, CBASE-FS): ≥ 2x.\n",
        if d.sync {
            "Every write is flushed to the disk (`sync_data`) before it is answered: the regime of the paper's \
             CBASE-FS, whose gain came from overlapping disk waits. All four replicas share this machine's one disk."
        } else {
            "Writes reach the page cache (durability comes from replication), so no request waits for the disk."
        },
        match &d.build {
            Ok((_, t)) => format!(" in {}", secs(*t)),
            Err(_) => String::new(),
        },
        d.ops,
        d.rounds.len()
    );
    let pairs: Vec<(&FsRun, &FsRun)> = d
        .rounds
        .iter()
        .filter_map(|(s, p)| Some((s.as_ref().ok()?, p.as_ref().ok()?)))
        .collect();
    for (s, p) in &d.rounds {
        if let Some(error) = s.as_ref().err().or(p.as_ref().err()) {
            let _ = writeln!(out, "Not measured (a round failed): {error}\n");
        }
    }
    let Some((first, _)) = pairs.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "Setup: {}\n",
        first.setup.replace(", 1 workers each", "")
    );
    let _ = writeln!(
        out,
        "| phase | operations | W = 1 ops/s | W = 16 ops/s | W = 16 / W = 1 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let mut rows: Vec<(String, u64, Option<&str>)> = first
        .phases
        .iter()
        .map(|(name, ops, _)| (name.clone(), *ops, Some(name.as_str())))
        .collect();
    let io_ops = first
        .phases
        .iter()
        .filter(|(name, _, _)| name != "create")
        .map(|(_, ops, _)| ops)
        .sum();
    rows.push(("**all block I/O phases**".into(), io_ops, None));
    for (name, ops, phase) in rows {
        let mut seq: Vec<f64> = pairs
            .iter()
            .filter_map(|(s, _)| fs_rate(s, phase))
            .collect();
        let mut par: Vec<f64> = pairs
            .iter()
            .filter_map(|(_, p)| fs_rate(p, phase))
            .collect();
        if seq.is_empty() || par.is_empty() {
            continue;
        }
        let (s, p) = (median(&mut seq), median(&mut par));
        let ratio = if phase.is_none() {
            format!("**{:.2}x** (target ≥ 2x)", p / s)
        } else {
            format!("{:.2}x", p / s)
        };
        let _ = writeln!(
            out,
            "| {name} | {ops} | {} | {} | {ratio} |",
            thousands(s),
            thousands(p)
        );
    }
    let per_round: Vec<String> = pairs
        .iter()
        .filter_map(|(s, p)| {
            let (s, p) = (fs_rate(s, None)?, fs_rate(p, None)?);
            Some(format!(
                "{} → {} ({:.2}x)",
                thousands(s),
                thousands(p),
                p / s
            ))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nAll block I/O phases per round, W = 1 → W = 16 ops/s: {}.",
        per_round.join("; ")
    );
    if let Some((s, p)) = pairs.last() {
        for run in [s, p] {
            let _ = writeln!(
                out,
                "\nChecks (last round), W = {}: {}",
                run.workers,
                run.checks.join("; ")
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// (e) The parallelizer alone
// ---------------------------------------------------------------------------

/// Median nanoseconds per step over `samples` samples of about `each`.
fn measure<S: Scheduler>(pipeline: &mut Pipeline<'_, S>, samples: usize, each: Duration) -> f64 {
    // Warm up and size a sample.
    let mut iterations = 64u64;
    loop {
        let took = pipeline.run(iterations);
        if took >= each / 4 {
            let per = took.as_secs_f64() / iterations as f64;
            iterations = ((each.as_secs_f64() / per) as u64).max(1);
            break;
        }
        iterations *= 2;
    }
    let mut times: Vec<f64> = (0..samples)
        .map(|_| pipeline.run(iterations).as_secs_f64() * 1e9 / iterations as f64)
        .collect();
    median(&mut times)
}
/// (keys, locks ns/request, pairwise ns/request).
fn experiment_e(progress: &Progress, options: &Options) -> Vec<(usize, f64, f64)> {
    let (samples, each) = if options.quick {
        (5, Duration::from_millis(10))
    } else {
        (15, Duration::from_millis(100))
    };
    let tables = TABLES.map(TableId::of);
    let mut rows = Vec::new();
    for keys in [2, 10, 100] {
        progress.step(format!("(e) parallelizer, {keys} keys per request"));
        let requests = workload(keys, 0x5eed + keys as u64);
        let locks = measure(
            &mut Pipeline::new(Parallelizer::new(WINDOW, &tables), &requests),
            samples,
            each,
        );
        progress.stepped();
        let pairwise = measure(
            &mut Pipeline::new(PairwiseParallelizer::new(WINDOW), &requests),
            samples,
            each,
        );
        progress.stepped();
        rows.push((keys, locks, pairwise));
    }
    rows
}

fn report_e(rows: &[(usize, f64, f64)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### (e) The parallelizer alone: scheduling cost per request (schedule + complete), window of {WINDOW}\n"
    );
    let _ = writeln!(
        out,
        "Requests of 2, 10 or 100 `table[value]` keys, half read and half written, over one or two tables of a \
         1,000,000-value keyspace, replayed through a window kept full (the loop of \
         `cbase-core/benches/parallelizer.rs`), each request's access set read into the cache \
         first and not timed, as a replica has it just built; medians of several samples, one \
         thread.\n"
    );
    let _ = writeln!(
        out,
        "| keys per request | cbase (per-key lock queues) | pairwise baseline (the paper's design) | pairwise / cbase |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    for (keys, locks, pairwise) in rows {
        let _ = writeln!(
            out,
            "| {keys} | {} ns | {} ns | {:.1}x |",
            thousands(*locks),
            thousands(*pairwise),
            pairwise / locks
        );
    }
    out
}

// ---------------------------------------------------------------------------
// Plots
// ---------------------------------------------------------------------------

mod plots {
    use std::path::Path;

    use plotters::coord::ranged1d::ValueFormatter;
    pub use plotters::prelude::SeriesLabelPosition;
    use plotters::prelude::*;

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// A line with markers, one per measured point.
    pub struct Line {
        pub label: String,
        pub points: Vec<(f64, f64)>,
        pub color: RGBColor,
        /// Dashed lines are models and bounds, not measurements.
        pub dashed: bool,
    }

    pub const BLUE_: RGBColor = RGBColor(31, 119, 180);
    pub const ORANGE_: RGBColor = RGBColor(255, 127, 14);
    pub const GREEN_: RGBColor = RGBColor(44, 160, 44);
    pub const RED_: RGBColor = RGBColor(214, 39, 40);
    pub const GREY_: RGBColor = RGBColor(110, 110, 110);

    pub struct Axes<'a> {
        pub title: &'a str,
        pub x_desc: &'a str,
        pub y_desc: &'a str,
        /// A log2 scale (workers), or a linear one.
        pub x_log: bool,
        pub y_log: bool,
        /// Where the legend goes, away from the lines.
        pub legend: SeriesLabelPosition,
    }

    /// 1, 2, 5, 10, 20, 50, ... within `lo..hi`: the ticks of a log axis.
    fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(lo.max(1e-9).log10().floor());
        while decade <= hi {
            for step in [1.0, 2.0, 5.0] {
                let tick = decade * step;
                if (lo..=hi).contains(&tick) {
                    ticks.push(tick);
                }
            }
            decade *= 10.0;
        }
        ticks
    }

    fn bounds(lines: &[Line], pick: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
        let values = lines.iter().flat_map(|l| l.points.iter().map(&pick));
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    }

    pub fn draw(path: &Path, axes: &Axes, lines: &[Line]) -> Result<()> {
        // A log2 x axis is drawn as a linear axis over log2(x), labelled 2^x:
        // every power of two gets its tick.
        let lines: Vec<Line> = lines
            .iter()
            .map(|l| Line {
                label: l.label.clone(),
                points: l
                    .points
                    .iter()
                    .map(|&(x, y)| (if axes.x_log { x.log2() } else { x }, y))
                    .collect(),
                color: l.color,
                dashed: l.dashed,
            })
            .collect();
        let root = SVGBackend::new(path, (820, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1) = bounds(&lines, |p| p.0);
        let (x0, x1) = if axes.x_log {
            (x0 - 0.3, x1 + 0.3)
        } else {
            (x0 - 0.03 * (x1 - x0), x1 + 0.03 * (x1 - x0))
        };
        let (y0, y1) = bounds(&lines, |p| p.1);
        let (y0, y1) = if axes.y_log {
            (y0.max(1e-9) / 1.6, y1 * 1.6)
        } else {
            (y0.min(0.0), y1 * 1.1)
        };
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(axes.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(76);
        if axes.y_log {
            let chart = builder.build_cartesian_2d(
                x0..x1,
                (y0..y1).log_scale().with_key_points(one_two_five(y0, y1)),
            )?;
            finish(chart, axes, &lines)?;
        } else {
            let chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
            finish(chart, axes, &lines)?;
        }
        root.present()?;
        Ok(())
    }

    fn finish<'a, X, Y>(
        mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
        axes: &Axes,
        lines: &[Line],
    ) -> Result<()>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let x_log = axes.x_log;
        let x_format = move |x: &f64| {
            if x_log {
                format!("{}", 2f64.powf(*x).round())
            } else {
                format!("{x}")
            }
        };
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .x_label_formatter(&x_format)
            .x_labels(if x_log { 8 } else { 11 })
            .y_label_formatter(&|y| super_thousands(*y))
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for line in lines {
            let color = line.color;
            let style = ShapeStyle::from(&color).stroke_width(2);
            if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(line.points.clone(), 8, 5, style))?
                    .label(&line.label)
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 24, y)],
                            ShapeStyle::from(&color).stroke_width(2),
                        )
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(line.points.clone(), style))?
                    .label(&line.label)
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 24, y)],
                            ShapeStyle::from(&color).stroke_width(2),
                        )
                    });
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 4, ShapeStyle::from(&color).filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(axes.legend.clone())
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    }

    fn super_thousands(y: f64) -> String {
        if y >= 1.0 || y == 0.0 {
            super::thousands(y)
        } else {
            format!("{y:.2}")
        }
    }
}

fn plot_a(dir: &Path, a: &Workers, cores: usize) -> Vec<Result<PathBuf, String>> {
    use plots::*;
    let as_f = |s: &Series| -> Vec<(f64, f64)> {
        s.measured()
            .into_iter()
            .map(|(w, r)| (w as f64, r))
            .collect()
    };
    let span = |y: f64| vec![(1.0, y), (128.0, y)];
    let mut throughput = vec![
        Line {
            label: "10 ms blocking requests (measured)".into(),
            points: as_f(&a.io),
            color: BLUE_,
            dashed: false,
        },
        Line {
            label: "ideal for 10 ms requests: W / 10 ms".into(),
            points: WORKERS
                .iter()
                .map(|&w| (w as f64, w as f64 * 100.0))
                .collect(),
            color: BLUE_,
            dashed: true,
        },
        Line {
            label: "100 µs CPU-bound requests (measured)".into(),
            points: as_f(&a.cpu),
            color: ORANGE_,
            dashed: false,
        },
        Line {
            label: format!("CPU bound: {cores} cores / (4 replicas × 100 µs)"),
            points: span(cores as f64 / (REPLICAS as f64 * CPU.as_secs_f64())),
            color: ORANGE_,
            dashed: true,
        },
    ];
    if let Ok(o) = &a.agreement {
        throughput.push(Line {
            label: "agreement bound: trivial requests, 512 calls".into(),
            points: span(o.rate()),
            color: GREY_,
            dashed: true,
        });
    }
    let speedup = |s: &Series| -> Vec<(f64, f64)> {
        let base = s.rate(1);
        s.measured()
            .into_iter()
            .filter_map(|(w, r)| base.map(|b| (w as f64, r / b)))
            .collect()
    };
    let speedups = vec![
        Line {
            label: "10 ms blocking requests".into(),
            points: speedup(&a.io),
            color: BLUE_,
            dashed: false,
        },
        Line {
            label: "100 µs CPU-bound requests".into(),
            points: speedup(&a.cpu),
            color: ORANGE_,
            dashed: false,
        },
        Line {
            label: "ideal: speedup = W".into(),
            points: WORKERS.iter().map(|&w| (w as f64, w as f64)).collect(),
            color: GREY_,
            dashed: true,
        },
    ];
    let mut written = Vec::new();
    for (name, axes, lines) in [
        (
            "a-throughput.svg",
            Axes {
                title: "(a) Throughput against workers per replica (4 replicas)",
                x_desc: "workers per replica, W",
                y_desc: "requests/s",
                x_log: true,
                y_log: true,
                legend: SeriesLabelPosition::UpperLeft,
            },
            throughput,
        ),
        (
            "a-speedup.svg",
            Axes {
                title: "(a) Speedup over the sequential baseline (W = 1)",
                x_desc: "workers per replica, W",
                y_desc: "speedup vs W = 1",
                x_log: true,
                y_log: true,
                legend: SeriesLabelPosition::UpperLeft,
            },
            speedups,
        ),
    ] {
        let path = dir.join(name);
        written.push(
            draw(&path, &axes, &lines)
                .map(|()| path.clone())
                .map_err(|e| format!("{}: {e}", path.display())),
        );
    }
    written
}

fn plot_b(
    dir: &Path,
    points: &[(f64, Result<Outcome, String>)],
    sequential: Option<f64>,
) -> Result<PathBuf, String> {
    use plots::*;
    let measured: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|(p, o)| o.as_ref().ok().map(|o| (p * 100.0, o.rate())))
        .collect();
    let fine: Vec<(f64, f64)> = (0..=100)
        .map(|i| (i as f64, conflict_model(i as f64 / 100.0)))
        .collect();
    let mut lines = vec![
        Line {
            label: format!("W = {B_WORKERS} (measured)"),
            points: measured,
            color: BLUE_,
            dashed: false,
        },
        Line {
            label: "model: min(W / 10 ms, 1 / (fraction × 10 ms))".into(),
            points: fine,
            color: GREEN_,
            dashed: true,
        },
    ];
    if let Some(s) = sequential {
        lines.push(Line {
            label: "sequential baseline, W = 1 (measured in (a))".into(),
            points: vec![(0.0, s), (100.0, s)],
            color: RED_,
            dashed: true,
        });
    }
    let path = dir.join("b-conflicts.svg");
    draw(
        &path,
        &Axes {
            title: "(b) 10 ms requests, W = 32: throughput against conflicts",
            x_desc: "requests that write the one hot key (%)",
            y_desc: "requests/s",
            x_log: false,
            y_log: true,
            legend: SeriesLabelPosition::UpperRight,
        },
        &lines,
    )
    .map(|()| path.clone())
    .map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------

fn main() {
    let options = Options::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let steps = [
        ('a', 2 * WORKERS.len() + 1),
        ('b', CONFLICTS.len()),
        ('c', if options.quick { 2 } else { 10 }),
        ('d', if options.quick { 5 } else { 13 }),
        ('e', 6),
    ]
    .iter()
    .filter(|(e, _)| options.runs(*e))
    .map(|(_, n)| *n as u64)
    .sum();
    let started = Instant::now();
    println!(
        "# cbase: the paper's experiments{}\n",
        if options.quick { " (--quick)" } else { "" }
    );
    println!(
        "machine: {cores} cores (available parallelism), shared by the {REPLICAS} replicas (n = 4, f = 1), \
         their worker pools and the client, all in this process over loopback TCP.\n"
    );
    println!("load average before: {}\n", load_average());
    let progress = Progress::new(steps);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut plots_written = Vec::new();
    if let Err(e) = std::fs::create_dir_all(&options.plots) {
        progress.print(&format!(
            "cannot create the plots directory {}: {e}\n",
            options.plots.display()
        ));
    }
    let mut sequential = None;
    if options.runs('a') {
        let began = Instant::now();
        let a = experiment_a(&runtime, &progress, &options, cores);
        sequential = a.io.rate(1);
        progress.print(&report_a(&a, cores));
        progress.print(&format!(
            "(this experiment took {})\n",
            secs(began.elapsed())
        ));
        plots_written.extend(plot_a(&options.plots, &a, cores));
    }
    if options.runs('b') {
        let began = Instant::now();
        let b = experiment_b(&runtime, &progress, &options);
        progress.print(&report_b(&b, sequential));
        progress.print(&format!(
            "(this experiment took {})\n",
            secs(began.elapsed())
        ));
        plots_written.push(plot_b(&options.plots, &b, sequential));
    }
    if options.runs('c') {
        let began = Instant::now();
        let c = experiment_c(&runtime, &progress, &options);
        progress.print(&report_c(&c));
        progress.print(&format!(
            "(this experiment took {})\n",
            secs(began.elapsed())
        ));
    }
    if options.runs('d') {
        let began = Instant::now();
        for d in experiment_d(&progress, &options) {
            progress.print(&report_d(&d));
        }
        progress.print(&format!(
            "(this experiment took {})\n",
            secs(began.elapsed())
        ));
    }
    if options.runs('e') {
        let began = Instant::now();
        let e = experiment_e(&progress, &options);
        progress.print(&report_e(&e));
        progress.print(&format!(
            "(this experiment took {})\n",
            secs(began.elapsed())
        ));
    }
    progress.finish();
    drop(runtime);

    if !plots_written.is_empty() {
        println!("### Plots\n");
        for plot in &plots_written {
            match plot {
                Ok(path) => println!("- {}", path.display()),
                Err(e) => println!("- not written: {e}"),
            }
        }
        println!();
    }
    println!("load average after: {}", load_average());
    println!("total time: {}", secs(started.elapsed()));
}

/// The machine's 1, 5 and 15 minute load averages: others' work shows here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
