//! What durability costs: a bank on 4 replicas (n = 4, f = 1), 16 workers
//! each, with its client in this one process, in memory and durable (every
//! batch and prepared certificate synced to disk before it is acted on),
//! side by side in one run.
//!
//! `cargo bench -p cbase-net --bench durability` (add `-- --quick` for a
//! few-second smoke run). Two clusters, one of each, run the same
//! transfers from 256 concurrent calls in alternating runs (3 of each,
//! medians), and the table gives durable / in memory.

use std::time::Duration;

use cbase_core::ExecutorBuilder;
use cbase_net::{ClientConfig, DataDirs, LocalCluster, NetClient};

#[path = "support/bank.rs"]
mod bank;

use bank::{ACCOUNTS, Bank};

const CONCURRENT_CALLS: u64 = 256;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Transfers per second from `CONCURRENT_CALLS` concurrent calls, until
/// `duration` passes or `limit` complete.
async fn transfers(client: &NetClient, duration: Duration, limit: u64) -> f64 {
    bank::load(client, CONCURRENT_CALLS as usize, 10, duration, limit).await
}

async fn cluster(data: DataDirs) -> (LocalCluster, NetClient) {
    let cluster = LocalCluster::builder()
        .replicas(4)
        .data(data)
        .executor(ExecutorBuilder::new().workers(16))
        .start(Bank::new)
        .await
        .expect("cluster");
    let client = cluster
        .client_with(ClientConfig {
            lanes: 1024,
            max_batch: 1024,
            ..ClientConfig::default()
        })
        .expect("client");
    (cluster, client)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (memory, in_memory) = cluster(DataDirs::InMemory).await;
        let (disk, durable) = cluster(DataDirs::Temporary).await;
        let (runs, duration, limit) = if quick {
            (1, Duration::from_secs(1), 5_000)
        } else {
            (3, Duration::from_secs(4), 500_000)
        };
        // Warm up: connections, sessions, and the first stable checkpoint
        // of the fresh directories (the whole state, written once).
        transfers(&in_memory, Duration::from_secs(1), 5_000).await;
        transfers(&durable, Duration::from_secs(1), 5_000).await;

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "n = 4 replicas, 16 workers each, {ACCOUNTS} accounts, {CONCURRENT_CALLS} concurrent \
             transfers, the client in the same process, {cores} cores\n"
        );
        println!("### The bank in memory and durable (medians of {runs} alternating runs)\n");
        println!("| in memory | durable | durable / in memory |");
        println!("|---:|---:|---:|");
        let (mut memory_rates, mut durable_rates) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            memory_rates.push(transfers(&in_memory, duration, limit).await);
            durable_rates.push(transfers(&durable, duration, limit).await);
        }
        let (memory_rate, durable_rate) = (median(memory_rates), median(durable_rates));
        println!(
            "| {memory_rate:.0} transfers/s | {durable_rate:.0} transfers/s | {:.2} |",
            durable_rate / memory_rate
        );
        println!("\n(target: durable / in memory ≥ 0.6)");
        drop((in_memory, durable));
        memory.shutdown().await;
        disk.shutdown().await;
    });
}
