//! The read-only fast path against ordered reads, side by side in one run:
//! a bank on 4 replicas (n = 4, f = 1) and its clients in this one process.
//!
//! `cargo bench -p cbase-net --bench reads` (add `-- --quick` for a
//! few-second smoke run). Prints two markdown tables, each from runs that
//! alternate between the fast path on and off (medians of 3 each):
//! - a balance query's latency at low load (one call at a time);
//! - the throughput of a read-heavy workload, 90% balance queries and 10%
//!   transfers, from 16 and from 256 concurrent calls, 16 workers per
//!   replica; with the ratio of the medians, each run's own ratio (its two
//!   paths ran back to back).
//!
//! `-- --profile fast` (or `ordered`) runs only that path's read-heavy mix
//! for 10 s, for a profiler to look at: at 256 concurrent calls, or as many
//! as a number after it says.

use std::time::{Duration, Instant};

use cbase_core::ExecutorBuilder;
use cbase_net::{ClientConfig, LocalCluster, NetClient};

#[path = "support/bank.rs"]
mod bank;

use bank::{ACCOUNTS, Bank, Op};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median latency of `calls` balance queries, one at a time.
async fn read_latency(client: &NetClient, calls: usize) -> Duration {
    let mut samples = Vec::with_capacity(calls);
    for at in 0..calls as u64 {
        let start = Instant::now();
        let _: u64 = client
            .call(&Op::Balance { id: at % ACCOUNTS })
            .await
            .expect("balance");
        samples.push(start.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let profile = args.iter().position(|a| a == "--profile").map(|at| {
        let path = args.get(at + 1).cloned().unwrap_or_default();
        let calls = args.get(at + 2).and_then(|n| n.parse().ok()).unwrap_or(256);
        (path, calls)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cluster = LocalCluster::builder()
            .replicas(4)
            .data(cbase_net::DataDirs::InMemory)
            .executor(ExecutorBuilder::new().workers(16))
            .start(Bank::new)
            .await
            .expect("cluster");
        let client = |fast: bool| {
            cluster
                .client_with(ClientConfig {
                    lanes: 1024,
                    max_batch: 1024,
                    read_fast_path: fast,
                    ..ClientConfig::default()
                })
                .expect("client")
        };
        let (fast, ordered) = (client(true), client(false));
        // Warm up connections and sessions.
        read_latency(&fast, 20).await;
        read_latency(&ordered, 20).await;
        if let Some((path, calls)) = profile {
            // One path alone, long enough for a profiler to see it.
            let (name, client) = if path == "fast" {
                ("read-only fast path", &fast)
            } else {
                ("ordered (fast path off)", &ordered)
            };
            let rate = bank::load(client, calls, 1, Duration::from_secs(10), 2_000_000).await;
            let slots = cluster.replica(0).expect("replica 0").metrics();
            println!(
                "{name}: {rate:.0} ops/s from {calls} concurrent calls, {} sequence numbers agreed",
                slots.delivered.load(std::sync::atomic::Ordering::Relaxed)
            );
            cluster.shutdown().await;
            return;
        }

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("n = 4 replicas, 16 workers each, clients in the same process, {cores} cores\n");
        let (runs, calls) = if quick { (1, 100) } else { (3, 1000) };
        let (mut fast_latency, mut ordered_latency) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            fast_latency.push(read_latency(&fast, calls).await.as_secs_f64() * 1e6);
            ordered_latency.push(read_latency(&ordered, calls).await.as_secs_f64() * 1e6);
        }
        let (fast_us, ordered_us) = (median(fast_latency), median(ordered_latency));
        println!(
            "### A balance query at low load ({calls} calls one at a time, median of {runs} runs)\n"
        );
        println!("| path | median latency |");
        println!("|---|---:|");
        println!("| ordered (fast path off) | {ordered_us:.0} µs |");
        println!("| read-only fast path | {fast_us:.0} µs |");
        println!(
            "\nfast / ordered: {:.2} (target ≤ 0.5)\n",
            fast_us / ordered_us
        );

        let (duration, limit) = if quick {
            (Duration::from_secs(1), 5_000)
        } else {
            (Duration::from_secs(5), 200_000)
        };
        println!("### 90% balances, 10% transfers (median of {runs} runs)\n");
        println!(
            "| concurrent calls | ordered (fast path off) | read-only fast path | fast / ordered | each run's own ratio |"
        );
        println!("|---:|---:|---:|---:|---|");
        for tasks in [16, 256] {
            let (mut fast_rate, mut ordered_rate) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                fast_rate.push(bank::load(&fast, tasks, 1, duration, limit).await);
                ordered_rate.push(bank::load(&ordered, tasks, 1, duration, limit).await);
            }
            // The machine's load moves between runs: each run's two paths
            // ran back to back, so their ratio is the fairest single view.
            let each: Vec<String> = fast_rate
                .iter()
                .zip(&ordered_rate)
                .map(|(fast, ordered)| format!("{:.2}", fast / ordered))
                .collect();
            let (fast_ops, ordered_ops) = (median(fast_rate), median(ordered_rate));
            println!(
                "| {tasks} | {ordered_ops:.0} ops/s | {fast_ops:.0} ops/s | {:.2} | {} |",
                fast_ops / ordered_ops,
                each.join(", ")
            );
        }
        println!("\n(target: fast / ordered ≥ 2 for the read-heavy mix)");
        println!("answered on the fast path: {} calls", fast.fast_reads());
        cluster.shutdown().await;
    });
}
