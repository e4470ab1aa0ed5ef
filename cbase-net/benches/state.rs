//! How throughput, latency, checkpoints and memory scale with the size of
//! the replicated state.
//!
//! A key-value service with 100-byte values is preloaded with 10^3, 10^5 and
//! 10^6 keys on each of 4 replicas (n = 4, f = 1, all in this process), then
//! takes random single-key writes from 256 concurrent calls. For each size it
//! prints writes/s, latency percentiles, the longest time a checkpoint held
//! execution still, and resident memory per replica against the encoded
//! size of the state. Each row is measured in a process of its own (so its
//! memory is its own); the smallest size's memory, where the state is next
//! to nothing, is the fixed overhead the last column subtracts. Every row is
//! measured three times (`--runs N`; once with `--quick`), in rounds that
//! each measure every size, so that a burst of load from elsewhere on the
//! machine falls on one round rather than on one size; a table of every
//! run comes first, then the medians, and each ratio between sizes is
//! given as the medians' and as each round's own.
//!
//! Every size runs twice, in memory and durable (each replica in a
//! temporary data directory, syncing every prepared certificate before its
//! commit vote). A durable run first writes until every replica has stored
//! a stable checkpoint: a fresh directory's first one is the whole state,
//! written once, and the table shows the steady state after it.
//!
//! Then, for the largest size, state transfer: replica 3 is stopped, 1% of
//! the keys change while it is down (and the others move on past its log),
//! and it is restarted from its data directory; then the same again with its
//! directory emptied and an empty state, so it fetches everything. For both
//! it prints the bytes of state it received and the time from its restart
//! to its first stable checkpoint at the others' (durable, 16 workers).
//!
//! `cargo bench -p cbase-net --bench state` (add `-- --quick` for a short
//! run with 10^3 and 10^5 keys; `--sizes 1000,1000000` for other sizes,
//! `--storage memory` or `--storage durable` for one kind of run, and
//! `--no-transfer` to skip state transfer). Each row runs as
//! `--row KEYS:memory|durable:WRITES` in a process of its own, which is
//! also how to profile one (see `BENCH_PERF_CONTROL` below). Prints markdown tables, and draws writes/s
//! and p99 latency against the number of keys in
//! `target/state-plots/state.svg` (`-- --plots DIR` for another directory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase_core::{
    AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table, codec,
};
use cbase_net::{ClientConfig, DataDirs, LocalCluster};
use serde::{Deserialize, Serialize};

#[path = "../../cbase-core/benches/support/resident.rs"]
mod resident;
use resident::resident_bytes;

const VALUE_BYTES: usize = 100;
const CONCURRENT: u64 = 256;

#[derive(Serialize, Deserialize)]
struct Put {
    key: u64,
    value: Vec<u8>,
}

impl Request for Put {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("values", &self.key))
    }
    fn method(&self) -> &'static str {
        "put"
    }
}

struct Values {
    values: Table<u64, Vec<u8>>,
}

impl State for Values {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

struct Kv(Values);

impl Service for Kv {
    type Request = Put;
    type Response = ();
    fn execute(&self, put: Put, _: &Context) {
        self.0.values.insert(put.key, put.value);
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn value(key: u64, round: u64) -> Vec<u8> {
    let mut value = vec![0u8; VALUE_BYTES];
    value[..8].copy_from_slice(&key.to_le_bytes());
    value[8..16].copy_from_slice(&round.to_le_bytes());
    value
}

/// A state with `keys` entries, written before the replica starts; built
/// in bulk, as the book advises for a large initial state (and as a
/// replica's tables are when it restarts from its directory).
fn preloaded(keys: u64) -> Kv {
    Kv(Values {
        values: (0..keys).map(|key| (key, value(key, 0))).collect(),
    })
}

/// A small deterministic generator, so runs are repeatable.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    durable: bool,
    keys: u64,
    writes: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    barrier_max: Duration,
    checkpoints: u64,
    encoded: u64,
    resident: u64,
}

impl Row {
    /// The row as one line, for a measuring process to hand its parent.
    fn to_line(&self) -> String {
        format!(
            "ROW {} {} {} {} {} {} {} {} {} {} {}",
            u8::from(self.durable),
            self.keys,
            self.writes,
            self.per_second,
            self.p50.as_nanos(),
            self.p99.as_nanos(),
            self.max.as_nanos(),
            self.barrier_max.as_nanos(),
            self.checkpoints,
            self.encoded,
            self.resident
        )
    }

    fn from_line(line: &str) -> Option<Row> {
        let fields: Vec<&str> = line.strip_prefix("ROW ")?.split(' ').collect();
        let int = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let nanos = |i: usize| int(i).map(Duration::from_nanos);
        Some(Row {
            durable: int(0)? == 1,
            keys: int(1)?,
            writes: int(2)?,
            per_second: fields.get(3)?.parse().ok()?,
            p50: nanos(4)?,
            p99: nanos(5)?,
            max: nanos(6)?,
            barrier_max: nanos(7)?,
            checkpoints: int(8)?,
            encoded: int(9)?,
            resident: int(10)?,
        })
    }
}

/// The table's header; with a run column when every run is printed.
fn print_header(with_run: bool) {
    let run = if with_run { "| run " } else { "" };
    println!(
        "{run}| storage | keys | writes | writes/s | p50 | p99 | max | longest checkpoint barrier | checkpoints | state (encoded, per replica) | RSS per replica | (RSS − fixed) / state |"
    );
    let run = if with_run { "|---:" } else { "" };
    println!("{run}|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

/// One row of the table. `before` are the rows printed before it in the
/// same table or run: the smallest size among them (or this one) gives the
/// fixed overhead, a replica's memory where the state is next to nothing
/// (runtime, buffers, caches).
fn print_row(row: &Row, before: &[Row], run: Option<usize>) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let fixed = before
        .iter()
        .filter(|r| r.durable == row.durable)
        .chain(std::iter::once(row))
        .min_by_key(|r| r.keys)
        .map_or(0, |r| r.resident / 4);
    let above = (row.resident / 4).saturating_sub(fixed);
    println!(
        "{}| {} | {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {} | {:.1} MiB | {:.0} MiB | {:.1} |",
        run.map_or(String::new(), |r| format!("| {r} ")),
        if row.durable { "durable" } else { "in memory" },
        row.keys,
        row.writes,
        row.per_second,
        ms(row.p50),
        ms(row.p99),
        ms(row.max),
        ms(row.barrier_max),
        row.checkpoints,
        row.encoded as f64 / (1 << 20) as f64,
        row.resident as f64 / 4.0 / (1 << 20) as f64,
        above as f64 / row.encoded.max(1) as f64,
    );
}

/// The median of each measured column over runs of one row (of an even
/// number of runs, the mean of the middle two).
fn median_row<'a>(runs: impl Iterator<Item = &'a Row>) -> Row {
    let runs: Vec<&Row> = runs.collect();
    let median = |f: &dyn Fn(&Row) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(|r| f(r)).collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        (values[(n - 1) / 2] + values[n / 2]) / 2.0
    };
    let nanos = |f: &dyn Fn(&Row) -> Duration| {
        Duration::from_nanos(median(&|r| f(r).as_nanos() as f64) as u64)
    };
    Row {
        durable: runs[0].durable,
        keys: runs[0].keys,
        writes: runs[0].writes,
        per_second: median(&|r| r.per_second),
        p50: nanos(&|r| r.p50),
        p99: nanos(&|r| r.p99),
        max: nanos(&|r| r.max),
        barrier_max: nanos(&|r| r.barrier_max),
        checkpoints: median(&|r| r.checkpoints as f64) as u64,
        encoded: runs[0].encoded,
        resident: median(&|r| r.resident as f64) as u64,
    }
}

/// Resident memory per replica at the largest size against the encoded
/// state, above the fixed overhead: the smallest size's memory and, for a
/// durable replica, redb's page caches too, which are not yet full at the
/// smallest size and never grow past their bound.
fn print_memory(rows: &[Row]) {
    let caches = cbase_net::storage::PAGE_CACHE_BYTES as u64;
    for durable in [false, true] {
        let of_kind = || rows.iter().filter(|r| r.durable == durable);
        let (Some(small), Some(large)) = (
            of_kind().min_by_key(|r| r.keys),
            of_kind().max_by_key(|r| r.keys),
        ) else {
            continue;
        };
        if small.keys == large.keys {
            continue;
        }
        let above =
            |fixed: u64| (large.resident / 4).saturating_sub(fixed) as f64 / large.encoded as f64;
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let fixed = small.resident / 4;
        if durable {
            println!(
                "durable memory at {} keys: (RSS − fixed) / state = {:.2} with the fixed overhead {:.0} MiB (the {} keys row), {:.2} with {:.0} MiB (that and redb's page caches, at most {:.0} MiB)",
                large.keys,
                above(fixed),
                mib(fixed),
                small.keys,
                above(fixed + caches),
                mib(fixed + caches),
                mib(caches),
            );
        } else {
            println!(
                "in-memory memory at {} keys: (RSS − fixed) / state = {:.2} with the fixed overhead {:.0} MiB (the {} keys row)",
                large.keys,
                above(fixed),
                mib(fixed),
                small.keys,
            );
        }
    }
}

/// Measures one row in a process of its own, so that its resident memory
/// is its own and not what earlier rows left in the allocator.
fn run_in_child(keys: u64, writes: u64, durable: bool) -> Row {
    let storage = if durable { "durable" } else { "memory" };
    let output = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .args(["--bench", "--row", &format!("{keys}:{storage}:{writes}")])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run a measuring process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(Row::from_line)
        .unwrap_or_else(|| panic!("the measuring process gave no row ({})", output.status))
}

/// Four replicas (16 workers each) preloaded with `keys` keys, and a client
/// with `CONCURRENT` lanes.
async fn preloaded_cluster(keys: u64, data: DataDirs) -> (LocalCluster, cbase_net::NetClient) {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .data(data)
        .executor(ExecutorBuilder::new().workers(16))
        .start(move || preloaded(keys))
        .await
        .expect("cluster");
    let client = cluster
        .client_with(ClientConfig {
            lanes: CONCURRENT as usize,
            max_batch: 1024,
            ..ClientConfig::default()
        })
        .expect("client");
    (cluster, client)
}

async fn run(keys: u64, writes: u64, durable: bool) -> Row {
    let data = if durable {
        DataDirs::Temporary
    } else {
        DataDirs::InMemory
    };
    let (cluster, client) = preloaded_cluster(keys, data).await;
    if durable {
        // A fresh directory's first stable checkpoint is the whole state,
        // written once; measure the steady state after it.
        warm_up(&cluster, &client, keys).await;
    }
    let next = Arc::new(AtomicU64::new(0));
    profiler("enable");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return samples;
                }
                let key = mix(i) % keys;
                let begun = Instant::now();
                let () = client
                    .call(&Put {
                        key,
                        value: value(key, i + 1),
                    })
                    .await
                    .expect("write");
                samples.push(begun.elapsed());
            }
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("load task"));
    }
    let elapsed = started.elapsed();
    profiler("disable");
    samples.sort();
    let resident = resident_bytes();
    let (mut barrier_max, mut checkpoints) = (0, 0);
    for id in 0..4 {
        let metrics = cluster.replica(id).expect("replica runs").metrics();
        barrier_max = barrier_max.max(metrics.checkpoint_barrier_max_nanos.load(Ordering::Relaxed));
        checkpoints = checkpoints.max(metrics.checkpoints_taken.load(Ordering::Relaxed));
    }
    drop(client);
    cluster.shutdown().await;
    let entry = codec::encode(&0u64).unwrap().len() + codec::encode(&value(0, 0)).unwrap().len();
    Row {
        durable,
        keys,
        writes,
        per_second: writes as f64 / elapsed.as_secs_f64(),
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        max: *samples.last().expect("samples"),
        barrier_max: Duration::from_nanos(barrier_max),
        checkpoints,
        encoded: keys * entry as u64,
        resident,
    }
}

/// Writes until every replica has stored a stable checkpoint (at most
/// 60 s or 200,000 writes).
async fn warm_up(cluster: &LocalCluster, client: &cbase_net::NetClient, keys: u64) {
    let stored = || {
        (0..4).all(|id| {
            cluster
                .replica(id)
                .is_some_and(|r| r.metrics().checkpoints_stored.load(Ordering::Relaxed) > 0)
        })
    };
    let started = Instant::now();
    let mut i = u64::MAX / 2;
    while !stored() && started.elapsed() < Duration::from_secs(60) && i < u64::MAX / 2 + 200_000 {
        let mut calls = Vec::new();
        for _ in 0..CONCURRENT {
            let client = client.clone();
            let key = mix(i) % keys;
            i += 1;
            calls.push(tokio::spawn(async move {
                let () = client
                    .call(&Put {
                        key,
                        value: value(key, 0),
                    })
                    .await
                    .expect("write");
            }));
        }
        for call in calls {
            call.await.expect("warm-up write");
        }
    }
}

/// What one rejoin cost: bytes of state received and time to catch up.
struct Rejoin {
    bytes: u64,
    time: Duration,
    installed: u64,
    /// When it first asked a peer for state, and when it had all of it.
    asked: Option<Duration>,
    fetched: Option<Duration>,
}

/// The newest stable checkpoint of each running replica.
fn stable_seqs(cluster: &LocalCluster) -> Vec<u64> {
    cluster
        .replicas()
        .map(|r| r.metrics().stable.lock().back().map_or(0, |s| s.0))
        .collect()
}

/// Writes `keys` (each its own call, `CONCURRENT` at a time).
async fn write_keys(client: &cbase_net::NetClient, keys: &[u64], round: u64) {
    for chunk in keys.chunks(CONCURRENT as usize) {
        let mut calls = Vec::new();
        for &key in chunk {
            let client = client.clone();
            calls.push(tokio::spawn(async move {
                let () = client
                    .call(&Put {
                        key,
                        value: value(key, round),
                    })
                    .await
                    .expect("write");
            }));
        }
        for call in calls {
            call.await.expect("write task");
        }
    }
}

/// Stops replica 3, changes `changed` of the keys while it is down (until
/// the others are two windows past it, so its log is gone from every
/// peer), restarts it (from its directory, or from nothing) and waits until
/// it has the others' stable checkpoint.
async fn miss_and_rejoin(
    cluster: &mut LocalCluster,
    client: &cbase_net::NetClient,
    keys: u64,
    changed: u64,
    round: u64,
    from_nothing: bool,
) -> Rejoin {
    if std::env::var("BENCH_DEBUG").is_ok() {
        let metrics = cluster.replica(3).expect("running").metrics();
        let taken: Vec<u64> = metrics.checkpoints.lock().iter().map(|c| c.0).collect();
        eprintln!(
            "stopping: checkpoints {taken:?}, stored {}",
            metrics.checkpoints_stored.load(Ordering::Relaxed)
        );
    }
    cluster.stop_replica(3).await;
    let before = stable_seqs(cluster).into_iter().max().unwrap_or(0);
    if from_nothing && let Some(dir) = cluster.data_dir(3) {
        std::fs::remove_dir_all(&dir).expect("remove the data directory");
    }
    let missed: Vec<u64> = (0..changed).map(|i| mix(round * keys + i) % keys).collect();
    write_keys(client, &missed, round).await;
    // The same keys again (new values each pass, so what the replica may
    // still replay from its peers' logs is outdated), until the others'
    // logs no longer reach back to where it stopped.
    let started = Instant::now();
    let mut again = 1;
    while stable_seqs(cluster).into_iter().min().unwrap_or(0) <= before + 1024
        && started.elapsed() < Duration::from_secs(120)
    {
        write_keys(client, &missed, round * 1_000_000 + again).await;
        again += 1;
    }
    // Either way the process starts with the service's empty state, as a
    // real replica does: one with a directory loads its state from there.
    let service = Kv(Values {
        values: Table::new(),
    });
    let started = Instant::now();
    cluster
        .restart_replica(3, service)
        .await
        .expect("replica 3 restarts");
    let target = stable_seqs(cluster).into_iter().max().unwrap_or(0);
    if std::env::var("BENCH_DEBUG").is_ok() {
        let metrics = cluster.replica(3).expect("running").metrics();
        let taken: Vec<u64> = metrics.checkpoints.lock().iter().map(|c| c.0).collect();
        let stable: Vec<u64> = metrics.stable.lock().iter().map(|c| c.0).collect();
        eprintln!(
            "restarted: checkpoints {taken:?}, stable {stable:?}, others' stable {:?}",
            stable_seqs(cluster)
        );
    }
    let (mut asked, mut fetched) = (None, None);
    loop {
        let metrics = cluster.replica(3).expect("running").metrics();
        if asked.is_none() && metrics.protocol.lock().state_requests > 0 {
            asked = Some(started.elapsed());
        }
        let installed = metrics.states_installed.load(Ordering::Relaxed);
        if fetched.is_none() && installed > 0 {
            fetched = Some(started.elapsed());
        }
        let caught_up = metrics.stable.lock().back().is_some_and(|s| s.0 >= target);
        if caught_up || started.elapsed() > Duration::from_secs(600) {
            let bytes = metrics.protocol.lock().state_bytes;
            if std::env::var("BENCH_DEBUG").is_ok() {
                let stable = metrics.stable.lock().back().map(|s| s.0);
                let stats = metrics.protocol.lock().clone();
                eprintln!("rejoin: before {before}, target {target}, stable {stable:?}, {stats:?}");
            }
            return Rejoin {
                bytes,
                time: started.elapsed(),
                installed,
                asked,
                fetched,
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// State transfer at `keys` keys: a rejoin after 1% changed, from the
/// replica's directory and from nothing.
async fn transfer(keys: u64) -> (Rejoin, Rejoin) {
    let (mut cluster, client) = preloaded_cluster(keys, DataDirs::Temporary).await;
    warm_up(&cluster, &client, keys).await;
    let changed = keys / 100;
    let diff = miss_and_rejoin(&mut cluster, &client, keys, changed, 1, false).await;
    let full = miss_and_rejoin(&mut cluster, &client, keys, changed, 2, true).await;
    drop(client);
    cluster.shutdown().await;
    (diff, full)
}

/// Writes/s and p99 latency against the number of keys, in memory and
/// durable, side by side in one SVG.
fn plot(
    dir: &std::path::Path,
    rows: &[Row],
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("state.svg");
    let target = path.clone();
    let root = SVGBackend::new(&target, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let series = |durable: bool, y: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.durable == durable)
            .map(|r| ((r.keys as f64).log10(), y(r)))
            .collect()
    };
    type Measure<'a> = &'a dyn Fn(&Row) -> f64;
    let charts: [(
        &DrawingArea<SVGBackend, plotters::coord::Shift>,
        &str,
        Measure,
    ); 2] = [
        (&left, "writes/s", &|r: &Row| r.per_second),
        (&right, "p99 latency (ms)", &|r: &Row| {
            r.p99.as_secs_f64() * 1e3
        }),
    ];
    for (area, name, y) in charts {
        let top = rows.iter().map(y).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{name} against keys in the state"),
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(2.7f64..6.3f64, 0f64..top.max(1.0))?;
        chart
            .configure_mesh()
            .x_desc("keys (log10)")
            .y_desc(name)
            .x_label_formatter(&|x| format!("10^{x:.0}"))
            .draw()?;
        for (durable, color, label) in [(false, BLUE, "in memory"), (true, RED, "durable")] {
            let points = series(durable, y);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    drop(root);
    Ok(path)
}

/// Profiles only the measured writes: with `BENCH_PERF_CONTROL` naming the
/// control FIFO of `perf record --control fifo:FIFO -D -1`, turns the
/// profiler on and off around them.
fn profiler(command: &str) {
    if let Ok(fifo) = std::env::var("BENCH_PERF_CONTROL") {
        std::fs::write(fifo, format!("{command}\n")).expect("write to the profiler's control FIFO");
    }
}

/// The value after `name` on the command line.
fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    if std::env::var_os("BENCH_LOG").is_some() {
        // The replicas' own account of a run (restarts, transfers, installs).
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (default_sizes, writes): (&[u64], u64) = if quick {
        (&[1_000, 100_000], 4_000)
    } else {
        (&[1_000, 100_000, 1_000_000], 20_000)
    };
    let sizes: Vec<u64> = match flag("--sizes") {
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("--sizes takes numbers of keys, comma-separated")
            })
            .collect(),
        None => default_sizes.to_vec(),
    };
    let storages: &[bool] = match flag("--storage").as_deref() {
        None => &[false, true],
        Some("memory") => &[false],
        Some("durable") => &[true],
        Some(other) => panic!("--storage takes memory or durable, not {other}"),
    };
    println!(
        "4 replicas and the client in one process, {cores} cores, 16 workers, \
         {VALUE_BYTES}-byte values, {CONCURRENT} concurrent calls; durable: every \
         batch and prepared certificate synced to disk before it is acted on\n"
    );
    // Rounds alternate the sizes (each round measures every row once), so a
    // burst of load from elsewhere on the machine falls on one round's rows
    // rather than on every run of one size; the medians and the ratios
    // below come from them.
    let runs: usize = flag("--runs").map_or(if quick { 1 } else { 3 }, |n| {
        n.parse().expect("--runs takes a number")
    });
    assert!(runs > 0, "--runs takes a number above 0");
    print_header(runs > 1 && flag("--row").is_none());
    if let Some(row) = flag("--row") {
        let mut fields = row.split(':');
        let mut next = || {
            fields
                .next()
                .expect("--row takes KEYS:memory|durable:WRITES")
        };
        let keys: u64 = next().parse().expect("a number of keys");
        let durable = next() == "durable";
        let writes: u64 = next().parse().expect("a number of writes");
        println!("{}", runtime.block_on(run(keys, writes, durable)).to_line());
        return;
    }
    if let Ok(keys) = std::env::var("BENCH_TRANSFER_ONLY") {
        let keys: u64 = keys.parse().expect("a number of keys");
        let (diff, full) = runtime.block_on(transfer(keys));
        for rejoin in [diff, full] {
            println!(
                "{} bytes, {:?} {:?} {:?}",
                rejoin.bytes, rejoin.asked, rejoin.fetched, rejoin.time
            );
        }
        return;
    }
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for round in 1..=runs {
        let mut measured = Vec::new();
        for &keys in &sizes {
            for &durable in storages {
                let row = run_in_child(keys, writes, durable);
                if runs > 1 {
                    print_row(&row, &measured, Some(round));
                }
                measured.push(row);
            }
        }
        rounds.push(measured);
    }
    if runs > 1 {
        println!(
            "
medians of {runs} runs:
"
        );
        print_header(false);
    }
    let rows: Vec<Row> = (0..rounds[0].len())
        .map(|at| median_row(rounds.iter().map(|round| &round[at])))
        .collect();
    for (at, row) in rows.iter().enumerate() {
        print_row(row, &rows[..at], None);
    }
    println!();
    for durable in [false, true] {
        let small = rows
            .iter()
            .filter(|r| r.durable == durable)
            .min_by_key(|r| r.keys);
        let large = rows
            .iter()
            .filter(|r| r.durable == durable)
            .max_by_key(|r| r.keys);
        let (Some(small), Some(large)) = (small, large) else {
            continue;
        };
        // Each run's own ratio, large against small measured in that run.
        let of_run = |round: &Vec<Row>, f: &dyn Fn(&Row) -> f64| {
            let find = |keys| {
                round
                    .iter()
                    .find(|r| r.keys == keys && r.durable == durable)
            };
            match (find(small.keys), find(large.keys)) {
                (Some(s), Some(l)) => f(l) / f(s),
                _ => f64::NAN,
            }
        };
        let list = |f: &dyn Fn(&Row) -> f64| {
            rounds
                .iter()
                .map(|round| format!("{:.2}", of_run(round, f)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{}: at {} keys against {} keys, writes/s × {:.2} (each run: {}), p99 × {:.2} (each run: {})",
            if durable { "durable" } else { "in memory" },
            large.keys,
            small.keys,
            large.per_second / small.per_second,
            list(&|r| r.per_second),
            large.p99.as_secs_f64() / small.p99.as_secs_f64(),
            list(&|r| r.p99.as_secs_f64()),
        );
    }
    print_memory(&rows);
    let plots = flag("--plots").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/state-plots"),
        Into::into,
    );
    match plot(&plots, &rows) {
        Ok(path) => println!("plot: {}", path.display()),
        Err(error) => eprintln!("no plot: {error}"),
    }
    for &keys in &sizes {
        let memory = rows.iter().find(|r| r.keys == keys && !r.durable);
        let durable = rows.iter().find(|r| r.keys == keys && r.durable);
        if let (Some(memory), Some(durable)) = (memory, durable) {
            println!(
                "at {keys} keys: durable writes/s = {:.2} × in memory",
                durable.per_second / memory.per_second
            );
        }
    }

    if std::env::args().any(|a| a == "--no-transfer") {
        return;
    }
    let keys = *sizes.last().expect("sizes");
    let encoded = rows
        .iter()
        .find(|r| r.keys == keys)
        .map_or(0, |r| r.encoded);
    let (diff, full) = runtime.block_on(transfer(keys));
    println!(
        "\nstate transfer at {keys} keys ({:.1} MiB encoded), replica 3 down while 1% of the keys changed:\n",
        encoded as f64 / (1 << 20) as f64
    );
    println!(
        "| rejoin | state bytes received | share of the state | transfers installed | first state request | all fetched | the others' stable checkpoint |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let secs =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    for (name, rejoin) in [("from its data directory", &diff), ("from nothing", &full)] {
        println!(
            "| {name} | {:.2} MiB | {:.1}% | {} | {} | {} | {:.2} s |",
            rejoin.bytes as f64 / (1 << 20) as f64,
            rejoin.bytes as f64 * 100.0 / encoded.max(1) as f64,
            rejoin.installed,
            secs(rejoin.asked),
            secs(rejoin.fetched),
            rejoin.time.as_secs_f64()
        );
    }
    println!(
        "\nfrom its directory: {:.1}% of the state's bytes, in {:.2} × the time of fetching everything",
        diff.bytes as f64 * 100.0 / encoded.max(1) as f64,
        diff.time.as_secs_f64() / full.time.as_secs_f64()
    );
}
