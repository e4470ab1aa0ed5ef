//! Null-request throughput and latency of a 4-replica cluster (n = 4, f = 1),
//! replicas and clients in this one process, batching on.
//!
//! `cargo bench -p cbase-net --bench throughput` (add `-- --quick` for a
//! few-second smoke run, `-- --independent` or `-- --fairness` for one part,
//! `--flooders N` for how many clients flood in the fairness part, 8 by
//! default). Prints markdown tables: latency at low load, sustained
//! throughput from one client, from many independent clients, and one
//! client's latency while others flood (three rounds and the medians; one
//! round with `--quick`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase_core::{AccessSet, Container, Context, ExecutorBuilder, Request, Service, State};
use cbase_net::{ClientConfig, LocalCluster, NetClient};
use serde::{Deserialize, Serialize};

/// A request that touches nothing and does nothing.
#[derive(Serialize, Deserialize)]
struct Null;

impl Request for Null {
    fn access_set(&self) -> AccessSet {
        AccessSet::none()
    }
    fn method(&self) -> &'static str {
        "null"
    }
}

struct NoState;

impl State for NoState {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        Vec::new()
    }
}

struct NullService(NoState);

impl Service for NullService {
    type Request = Null;
    type Response = ();
    fn execute(&self, _: Null, _: &Context) {}
    fn state(&self) -> &dyn State {
        &self.0
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sequential calls from one task: latency at low load.
async fn latency(client: &NetClient, calls: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let () = client.call(&Null).await.expect("null call");
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

/// `tasks` tasks calling in a loop until `duration` passes or `limit` calls
/// complete: sustained throughput.
async fn throughput(
    client: &NetClient,
    tasks: usize,
    duration: Duration,
    limit: u64,
) -> (u64, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (client, done) = (client.clone(), Arc::clone(&done));
        handles.push(tokio::spawn(async move {
            while start.elapsed() < duration && done.load(Ordering::Relaxed) < limit {
                let () = client.call(&Null).await.expect("null call");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("load task");
    }
    (done.load(Ordering::Relaxed), start.elapsed())
}

/// The primary's (replica 0's) protocol counters now.
fn primary_stats(cluster: &LocalCluster) -> cbase_net::protocol::Stats {
    cluster
        .replica(0)
        .expect("primary runs")
        .metrics()
        .protocol
        .lock()
        .clone()
}

/// Requests per pre-prepare the primary proposed since `before`.
fn requests_per_proposal(cluster: &LocalCluster, before: &cbase_net::protocol::Stats) -> f64 {
    let after = primary_stats(cluster);
    (after.proposed_requests - before.proposed_requests) as f64
        / (after.proposals - before.proposals).max(1) as f64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--independent`: only the authentication comparisons (latency and
    // independent clients).
    let only_independent = std::env::args().any(|a| a == "--independent");
    // `--fairness`: only one client's latency while others flood.
    let only_fairness = std::env::args().any(|a| a == "--fairness");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cluster = LocalCluster::builder()
            .replicas(4)
            // The cost of agreement alone; the state benchmark measures disks.
            .data(cbase_net::DataDirs::InMemory)
            .executor(ExecutorBuilder::new().workers(2))
            .start(|| NullService(NoState))
            .await
            .expect("cluster");
        let client = cluster
            .client_with(ClientConfig {
                lanes: 1024,
                max_batch: 1024,
                ..ClientConfig::default()
            })
            .expect("client");
        // Warm up connections.
        latency(&client, 50).await;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("n = 4 replicas, clients in the same process, {cores} cores\n");
        let calls = if quick { 200 } else { 2000 };
        let rounds = if quick { 1 } else { 3 };
        if only_fairness {
            fairness(&cluster, calls / 2, rounds).await;
            cluster.shutdown().await;
            return;
        }
        authenticated_latency(&cluster, calls / 2, rounds).await;
        independent_clients(
            &cluster,
            if quick { &[64] } else { &[64, 256] },
            Duration::from_secs(if quick { 1 } else { 3 }),
            rounds,
        )
        .await;
        if only_independent {
            cluster.shutdown().await;
            return;
        }
        let samples = latency(&client, calls).await;
        println!("### Latency at low load (one call at a time, {calls} calls)\n");
        println!("| median | p90 | p99 |");
        println!("|---:|---:|---:|");
        println!(
            "| {:.0} µs | {:.0} µs | {:.0} µs |\n",
            percentile(&samples, 0.5).as_secs_f64() * 1e6,
            percentile(&samples, 0.9).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6,
        );

        println!("### Sustained null-request throughput\n");
        println!("| concurrent calls | requests | time | requests/s | requests per pre-prepare |");
        println!("|---:|---:|---:|---:|---:|");
        let duration = Duration::from_secs(if quick { 1 } else { 5 });
        let levels: &[usize] = if quick { &[64] } else { &[16, 64, 256, 1024] };
        for &tasks in levels {
            let before = primary_stats(&cluster);
            let (done, elapsed) = throughput(&client, tasks, duration, 2_000_000).await;
            let per_proposal = requests_per_proposal(&cluster, &before);
            println!(
                "| {tasks} | {done} | {:.2} s | {:.0} | {per_proposal:.1} |",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64()
            );
        }
        drop(client);

        fairness(&cluster, if quick { 100 } else { 1000 }, rounds).await;
        cluster.shutdown().await;
    });
}

/// How independent clients authenticate their batches.
#[derive(Clone, Copy)]
enum Auth {
    /// Unsigned to every replica, authenticated by each connection's MACs
    /// (the default); signed only on retransmission.
    Macs,
    /// Signed, to the primary alone (`sign_every_batch`).
    Signatures,
}

impl Auth {
    fn name(self) -> &'static str {
        match self {
            Auth::Macs => "MACs",
            Auth::Signatures => "signatures",
        }
    }

    fn config(self) -> ClientConfig {
        ClientConfig {
            sign_every_batch: matches!(self, Auth::Signatures),
            ..ClientConfig::default()
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Many clients with one call in flight each (each its own key, so no two
/// requests share a batch): what deployments with many small clients see,
/// next to one client multiplexing the same number of calls above. Batches
/// authenticated by MACs and by signatures, side by side: `rounds`
/// alternating runs of each, medians.
async fn independent_clients(
    cluster: &LocalCluster,
    levels: &[usize],
    duration: Duration,
    rounds: usize,
) {
    println!(
        "\n### Independent clients, one call in flight each (medians of {rounds} alternating runs)\n"
    );
    println!("| clients | requests/s, signatures | requests/s, MACs | MACs / signatures |");
    println!("|---:|---:|---:|---:|");
    for &count in levels {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (at, auth) in [Auth::Signatures, Auth::Macs].into_iter().enumerate() {
                rates[at].push(independent_run(cluster, count, duration, auth).await);
            }
        }
        let [signed, macs] = rates.map(median);
        println!(
            "| {count} | {signed:.0} | {macs:.0} | {:.2} |",
            macs / signed
        );
    }
}

/// One run of `count` independent clients: requests per second.
async fn independent_run(
    cluster: &LocalCluster,
    count: usize,
    duration: Duration,
    auth: Auth,
) -> f64 {
    let clients: Vec<NetClient> = (0..count)
        .map(|_| cluster.client_with(auth.config()).expect("client"))
        .collect();
    // Connected and warm before the clock starts.
    for client in &clients {
        let () = client.call(&Null).await.expect("null call");
    }
    let before = primary_stats(cluster);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < duration && done.load(Ordering::Relaxed) < 2_000_000 {
                let () = client.call(&Null).await.expect("null call");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let per_proposal = requests_per_proposal(cluster, &before);
    eprintln!(
        "{} clients, {}: {rate:.0} requests/s, {per_proposal:.1} requests per pre-prepare",
        count,
        auth.name()
    );
    rate
}

/// One client's latency at one call in flight, with each authentication,
/// `rounds` alternating runs of `calls` calls: medians of the runs' medians.
async fn authenticated_latency(cluster: &LocalCluster, calls: usize, rounds: usize) {
    println!(
        "\n### Latency at one call in flight, by authentication ({rounds} alternating runs of {calls} calls)\n"
    );
    println!("| batches | median | p99 |");
    println!("|---|---:|---:|");
    let mut results = Vec::new();
    for auth in [Auth::Signatures, Auth::Macs] {
        results.push((
            auth,
            cluster.client_with(auth.config()).expect("client"),
            Vec::new(),
            Vec::new(),
        ));
    }
    for (_, client, _, _) in &results {
        latency(client, 50).await;
    }
    for _ in 0..rounds {
        for (_, client, medians, p99s) in &mut results {
            let samples = latency(client, calls).await;
            medians.push(percentile(&samples, 0.5).as_secs_f64() * 1e6);
            p99s.push(percentile(&samples, 0.99).as_secs_f64() * 1e6);
        }
    }
    for (auth, _, medians, p99s) in results {
        println!(
            "| {} | {:.0} µs | {:.0} µs |",
            auth.name(),
            median(medians),
            median(p99s)
        );
    }
}

/// Where the flooding clients' own threads stand with the OS.
#[derive(Clone, Copy)]
enum FloodPriority {
    /// As the replicas' threads: on two cores, the flood's client side takes
    /// a share of the CPU the replicas and the polite client need.
    Same,
    /// The lowest (nice 19): they take what the replicas leave, as clients
    /// on machines of their own would.
    Lowest,
}

impl FloodPriority {
    fn name(self) -> &'static str {
        match self {
            FloodPriority::Same => "the replicas'",
            FloodPriority::Lowest => "lowest",
        }
    }
}

/// Lowers the calling thread's priority to the lowest (Linux only).
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// A well-behaved client's latency alone, then while [`flooders`] other
/// clients keep as many calls in flight as they can (each its own key, 256
/// calls at a time): the primary serves clients in turn, counted in
/// requests, so the polite client's requests do not queue behind the
/// flood's. The flooding clients run on a runtime of their own, as they
/// would in processes of their own: on one runtime the polite client's
/// task would wait behind thousands of theirs on the same two threads, and
/// the benchmark would measure that queue instead of the replicas'. Their
/// threads run once at the replicas' priority and once at the lowest: in a
/// deployment a flooding client's own work runs on its own machine, and
/// only what it asks of the replicas competes with the polite client.
///
/// `rounds` rounds, each measuring alone, then under each flood. Every
/// ratio is against the lowest unloaded p99 of all rounds: after a flood
/// the unloaded latency can stay higher for a while, and a ratio against
/// that would flatter the next round.
async fn fairness(cluster: &LocalCluster, calls: usize, rounds: usize) {
    let polite = Polite::new(cluster);
    polite.latency(20).await;
    let priorities = [FloodPriority::Same, FloodPriority::Lowest];
    // Per round: the unloaded samples, then (samples, flood rate) per priority.
    let mut measured = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            // The replicas drain what the last flood left queued before
            // the polite client is measured alone again.
            tokio::time::sleep(Duration::from_secs(1)).await;
            polite.latency(20).await;
        }
        let alone = polite.latency(calls).await;
        let mut flooded = Vec::new();
        for priority in priorities {
            flooded.push(under_flood(cluster, &polite, calls, priority).await);
        }
        measured.push((alone, flooded));
    }
    println!(
        "\n### Fairness: one client's latency alone and while {} ({calls} calls, {rounds} round{})\n",
        match flooders() {
            1 => "another client floods".to_owned(),
            n => format!("{n} other clients flood"),
        },
        if rounds == 1 { "" } else { "s" }
    );
    println!(
        "| round | polite client | median | p99 | p99 / lowest p99 alone | flood requests/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Per priority, each round's p99 ratio.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); priorities.len()];
    let p99_alone = measured
        .iter()
        .map(|(alone, _)| percentile(alone, 0.99))
        .min()
        .expect("at least one round");
    for (round, (alone, flooded)) in measured.iter().enumerate() {
        println!(
            "| {} | alone | {:.2} ms | {:.2} ms | {:.2} | - |",
            round + 1,
            ms(percentile(alone, 0.5)),
            ms(percentile(alone, 0.99)),
            percentile(alone, 0.99).as_secs_f64() / p99_alone.as_secs_f64()
        );
        for (at, (priority, (samples, flood_rate))) in priorities.iter().zip(flooded).enumerate() {
            let ratio = percentile(samples, 0.99).as_secs_f64() / p99_alone.as_secs_f64();
            ratios[at].push(ratio);
            println!(
                "| {} | under flood, flood's threads at {} priority | {:.2} ms | {:.2} ms | {ratio:.2} | {flood_rate:.0} |",
                round + 1,
                priority.name(),
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.99)),
            );
        }
    }
    println!();
    for (priority, of_rounds) in priorities.iter().zip(ratios) {
        let each = of_rounds
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "flood's threads at {} priority: p99 / lowest p99 alone ({:.2} ms), median {:.2} (each round: {each}; target ≤ 3)",
            priority.name(),
            ms(p99_alone),
            median(of_rounds)
        );
    }
}

/// The well-behaved client of [`fairness`], on a runtime of its own as it
/// would be in a process of its own: on the replicas' runtime its own tasks
/// (sending, reading replies) would wait behind the replicas' connection
/// tasks, which the flood keeps busy, and the benchmark would measure that
/// queue, which no deployment has. `--polite-shared` runs it on the
/// replicas' runtime instead, for comparison.
struct Polite {
    runtime: Option<tokio::runtime::Runtime>,
    client: NetClient,
}

impl Polite {
    fn new(cluster: &LocalCluster) -> Polite {
        if std::env::args().any(|a| a == "--polite-shared") {
            return Polite {
                runtime: None,
                client: cluster.client().expect("client"),
            };
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the polite client's runtime");
        // Its connection tasks start on its runtime.
        let client = {
            let _polite = runtime.enter();
            cluster.client().expect("client")
        };
        Polite {
            runtime: Some(runtime),
            client,
        }
    }

    /// `calls` calls one at a time, on the client's runtime: their latencies.
    async fn latency(&self, calls: usize) -> Vec<Duration> {
        let Some(runtime) = &self.runtime else {
            return latency(&self.client, calls).await;
        };
        let client = self.client.clone();
        runtime
            .spawn(async move { latency(&client, calls).await })
            .await
            .expect("the polite client's calls")
    }
}

impl Drop for Polite {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How many clients flood in [`fairness`]: 8, or `--flooders N`.
fn flooders() -> usize {
    std::env::args()
        .skip_while(|a| a != "--flooders")
        .nth(1)
        .map_or(8, |n| n.parse().expect("--flooders takes a number"))
}

/// The polite client's latencies while the flood runs, and the flood's rate.
async fn under_flood(
    cluster: &LocalCluster,
    polite: &Polite,
    calls: usize,
    priority: FloodPriority,
) -> (Vec<Duration>, f64) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    let flood_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || {
            if let FloodPriority::Lowest = priority {
                lowest_priority();
            }
        })
        .enable_all()
        .build()
        .expect("the flood's runtime");
    for _ in 0..flooders() {
        // Its connection tasks start on the flood's runtime.
        let client = {
            let _flood = flood_runtime.enter();
            cluster
                .client_with(ClientConfig {
                    lanes: 256,
                    max_batch: 256,
                    ..ClientConfig::default()
                })
                .expect("client")
        };
        for _ in 0..256 {
            let (client, stop, flooded) = (client.clone(), Arc::clone(&stop), Arc::clone(&flooded));
            flood.push(flood_runtime.spawn(async move {
                // Bounded: until the polite client is done, or a cap.
                while !stop.load(Ordering::Relaxed) && flooded.load(Ordering::Relaxed) < 5_000_000 {
                    let () = client.call(&Null).await.expect("null call");
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    // Let the flood build up before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let before = flooded.load(Ordering::Relaxed);
    let samples = polite.latency(calls).await;
    let flood_rate =
        (flooded.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.expect("flood task");
    }
    flood_runtime.shutdown_background();
    (samples, flood_rate)
}
