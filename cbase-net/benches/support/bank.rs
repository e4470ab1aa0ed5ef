//! A bank on cbase's core types, for the benchmarks: accounts in one
//! table, balance queries (read-only) and transfers between two accounts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
use cbase_net::NetClient;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub const ACCOUNTS: u64 = 10_000;

#[derive(Serialize, Deserialize)]
pub enum Op {
    Balance { id: u64 },
    Transfer { from: u64, to: u64, amount: u64 },
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Balance { id } => AccessSet::none().read(Key::entry("accounts", id)),
            Op::Transfer { from, to, .. } => AccessSet::none()
                .write(Key::entry("accounts", from))
                .write(Key::entry("accounts", to)),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Balance { .. } => "balance",
            Op::Transfer { .. } => "transfer",
        }
    }
    fn read_only(&self) -> bool {
        matches!(self, Op::Balance { .. })
    }
}

pub struct Accounts {
    pub accounts: Table<u64, u64>,
}

impl State for Accounts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("accounts", &self.accounts)]
    }
}

pub struct Bank(pub Accounts);

impl Service for Bank {
    type Request = Op;
    type Response = u64;
    fn execute(&self, op: Op, _: &Context) -> u64 {
        let accounts = &self.0.accounts;
        match op {
            Op::Balance { id } => accounts.get(&id).unwrap_or(1_000),
            Op::Transfer { from, to, amount } => {
                let have = accounts.get(&from).unwrap_or(1_000);
                if have < amount || from == to {
                    return 0;
                }
                accounts.insert(from, have - amount);
                let theirs = accounts.get(&to).unwrap_or(1_000);
                accounts.insert(to, theirs + amount);
                amount
            }
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

impl Bank {
    /// A bank whose accounts all start at 1,000.
    pub fn new() -> Bank {
        Bank(Accounts {
            accounts: Table::new(),
        })
    }
}

/// Operations per second from `tasks` concurrent calls, `transfers_in_ten`
/// of every ten a transfer of 1 between random accounts and the rest
/// balance queries, until `duration` passes or `limit` operations complete.
pub async fn load(
    client: &NetClient,
    tasks: usize,
    transfers_in_ten: u32,
    duration: Duration,
    limit: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks as u64 {
        let (client, done) = (client.clone(), Arc::clone(&done));
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task);
            while start.elapsed() < duration && done.load(Ordering::Relaxed) < limit {
                let op = if rng.gen_range(0..10) < transfers_in_ten {
                    Op::Transfer {
                        from: rng.gen_range(0..ACCOUNTS),
                        to: rng.gen_range(0..ACCOUNTS),
                        amount: 1,
                    }
                } else {
                    Op::Balance {
                        id: rng.gen_range(0..ACCOUNTS),
                    }
                };
                let _: u64 = client.call(&op).await.expect("bank call");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await.expect("load task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
