//! The core demo: a small bank run by the sequential baseline (one worker, the
//! paper's BASE) and by a pool of 16 workers, on the same agreed order.
//!
//! `cargo run --release --example demo`
//!
//! Each transfer waits 1 ms, standing in for a disk write. Transfers between
//! disjoint accounts are independent, so the pool runs them concurrently; an
//! audit (`accounts[*]`) waits for every earlier transfer and holds back later
//! ones. Both runs must end in the same state: the demo compares their digests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase::prelude::*;

/// The replicated state: one table of balances.
struct Accounts {
    balances: Table<u64, u64>,
}

impl State for Accounts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("balances", &self.balances)]
    }
}

/// What clients may ask. Written by hand here; `#[cbase::service]` generates it.
enum BankRequest {
    Transfer { from: u64, to: u64, amount: u64 },
    Audit,
}

impl Request for BankRequest {
    fn access_set(&self) -> AccessSet {
        match self {
            BankRequest::Transfer { from, to, .. } => AccessSet::none()
                .write(Key::entry("balances", from))
                .write(Key::entry("balances", to)),
            BankRequest::Audit => AccessSet::none().read(Key::table("balances")),
        }
    }

    fn method(&self) -> &'static str {
        match self {
            BankRequest::Transfer { .. } => "transfer",
            BankRequest::Audit => "audit",
        }
    }

    fn declared_tables() -> Vec<(&'static str, &'static str)> {
        vec![("transfer", "balances"), ("audit", "balances")]
    }
}

struct Bank(Accounts);

impl Service for Bank {
    type Request = BankRequest;
    type Response = u64;

    fn execute(&self, request: BankRequest, _ctx: &Context) -> u64 {
        let balances = &self.0.balances;
        match request {
            BankRequest::Transfer { from, to, amount } => {
                std::thread::sleep(Duration::from_millis(1)); // the "disk write"
                let available = balances.get(&from).unwrap_or(0);
                let moved = available.min(amount);
                balances.insert(from, available - moved);
                balances.upsert(to, || 0, |b| *b += moved);
                moved
            }
            BankRequest::Audit => balances.fold(0, |sum, _, b| sum + b),
        }
    }

    fn state(&self) -> &dyn State {
        &self.0
    }
}

const ACCOUNTS: u64 = 1000;
const REQUESTS: u64 = 4000;

/// The agreed order: mostly transfers between pseudo-random accounts, with an
/// audit every 500 requests. Deterministic, so both runs see the same order.
fn agreed_order() -> impl Iterator<Item = BankRequest> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..REQUESTS).map(move |i| {
        if i % 500 == 499 {
            BankRequest::Audit
        } else {
            BankRequest::Transfer {
                from: next() % ACCOUNTS,
                to: next() % ACCOUNTS,
                amount: 5,
            }
        }
    })
}

fn run(workers: usize) -> Result<(Duration, Digest, u64), Box<dyn std::error::Error>> {
    // The initial state built in bulk: faster than inserting, and tighter.
    let state = Accounts {
        balances: (0..ACCOUNTS).map(|id| (id, 100)).collect(),
    };
    let last_audit = Arc::new(AtomicU64::new(0));
    let audits = Arc::clone(&last_audit);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .start(Bank(state), move |reply| {
            // Transfers return at most 5; an audit returns the total.
            if let Ok(total) = reply.result
                && total > 5
            {
                audits.store(total, Ordering::Relaxed);
            }
        })?;
    let start = Instant::now();
    for (tag, request) in agreed_order().enumerate() {
        executor.submit(tag as u64, Context::new(0, [0; 32]), request)?;
    }
    executor.wait_idle();
    let elapsed = start.elapsed();
    let digest = executor.service().0.digest();
    Ok((elapsed, digest, last_audit.load(Ordering::Relaxed)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    cbase::logging::init();
    println!(
        "{REQUESTS} requests (transfers that each wait 1 ms, and audits) over {ACCOUNTS} accounts\n"
    );
    println!("| executor | workers | time | requests/s | last audit | state digest |");
    println!("|---|---:|---:|---:|---:|---|");
    let mut results = Vec::new();
    for (name, workers) in [("sequential (BASE)", 1), ("parallel (CBASE)", 16)] {
        let (time, digest, audit) = run(workers)?;
        println!(
            "| {name} | {workers} | {:.2} s | {:.0} | {audit} | {} |",
            time.as_secs_f64(),
            REQUESTS as f64 / time.as_secs_f64(),
            &digest.to_string()[..16]
        );
        results.push((time, digest));
    }
    let (sequential, parallel) = (&results[0], &results[1]);
    println!(
        "\nspeedup: {:.1}x; digests {}",
        sequential.0.as_secs_f64() / parallel.0.as_secs_f64(),
        if sequential.1 == parallel.1 {
            "agree"
        } else {
            "DIFFER"
        }
    );
    if sequential.1 != parallel.1 {
        return Err("the two runs ended in different states".into());
    }
    Ok(())
}
