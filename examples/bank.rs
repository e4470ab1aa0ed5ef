//! A replicated bank: the README's main command.
//!
//! ```text
//! cargo run --release --example bank                       # 4 replicas + client, in this process
//! cargo run --release --bin cbase-keygen -- --dir deploy   # cluster file + keys
//! cargo run --release --example bank -- --config deploy/cluster.toml --id 0 --key deploy/replica-0.key
//! cargo run --release --example bank -- --config deploy/cluster.toml   # a client
//! ```
//!
//! The client opens accounts, then runs a mixed workload (transfers, batch
//! settlements, balance reads, audits) from many concurrent tasks, shows a
//! progress bar, and prints a summary: operations, throughput, views, whether
//! money was conserved and whether every replica's checkpoint digests agree.

#[path = "support/args.rs"]
mod args;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use args::Mode;
use cbase::prelude::*;
use serde::{Deserialize, Serialize};

// ANCHOR: types
/// One leg of a settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub amount: u64,
}

/// Why a bank operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    NoSuchAccount(u64),
    /// Only an account's owner (the client that opened it) may move money
    /// out of it.
    NotOwner {
        account: u64,
    },
    InsufficientFunds {
        account: u64,
        balance: u64,
        wanted: u64,
    },
}

/// What an audit reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub accounts: u64,
    pub total: u64,
    /// The agreed time of the audit, in nanoseconds since the Unix epoch.
    pub at: u64,
}
// ANCHOR_END: types

// ANCHOR: service
/// A bank whose independent operations run in parallel on every replica.
#[cbase::service]
pub trait Bank {
    /// Opens an account owned by the caller, or tops one up (anyone may
    /// pay in).
    #[writes(accounts[id], owners[id])]
    fn open(&self, id: u64, amount: u64, ctx: &Context);

    /// The balance of one account.
    #[reads(accounts[id])]
    fn balance(&self, id: u64) -> Option<u64>;

    /// Moves money between two accounts; only `from`'s owner may.
    #[reads(owners[from])]
    #[writes(accounts[from], accounts[to])]
    fn transfer(&self, from: u64, to: u64, amount: u64, ctx: &Context) -> Result<(), BankError>;

    /// Applies several moves at once: all or nothing, and only moves out of
    /// the caller's own accounts.
    #[reads(owners[m.from] for m in &moves)]
    #[writes(accounts[m.from] for m in &moves, accounts[m.to] for m in &moves)]
    fn settle(&self, moves: Vec<Move>, ctx: &Context) -> Result<(), BankError>;

    /// Who owns an account.
    #[reads(owners[id])]
    fn owner(&self, id: u64) -> Option<ClientId>;

    /// The sum of all balances.
    #[reads(accounts[*])]
    fn total(&self) -> u64;

    /// Whether an account exists.
    #[reads(id)]
    fn exists(&self, id: u64) -> bool;

    /// A full report. No rule: it conflicts with everything.
    fn audit(&self, ctx: &Context) -> Report;
}
// ANCHOR_END: service

// ANCHOR: state
/// The replicated state: balances, and who owns each account (tables named
/// after their fields).
#[derive(Default, cbase::State)]
pub struct MyBank {
    accounts: Table<u64, u64>,
    owners: Table<u64, ClientId>,
}
// ANCHOR_END: state

// ANCHOR: impl
impl MyBank {
    fn balance_of(&self, id: u64) -> Result<u64, BankError> {
        self.accounts.get(&id).ok_or(BankError::NoSuchAccount(id))
    }
}

impl Bank for MyBank {
    fn open(&self, id: u64, amount: u64, ctx: &Context) {
        // The caller is authenticated (it signed the request) and the same
        // on every replica: safe to decide by.
        if self.owners.get(&id).is_none() {
            self.owners.insert(id, ctx.client());
        }
        self.accounts.upsert(id, || 0, |balance| *balance += amount);
    }

    fn balance(&self, id: u64) -> Option<u64> {
        self.accounts.get(&id)
    }

    fn transfer(&self, from: u64, to: u64, amount: u64, ctx: &Context) -> Result<(), BankError> {
        self.settle(vec![Move { from, to, amount }], ctx)
    }

    fn settle(&self, moves: Vec<Move>, ctx: &Context) -> Result<(), BankError> {
        // Check everything first, so a refused settlement changes nothing.
        let mut balances = std::collections::BTreeMap::new();
        for m in &moves {
            if self.owners.get(&m.from) != Some(ctx.client()) {
                return Err(match self.owners.get(&m.from) {
                    None => BankError::NoSuchAccount(m.from),
                    Some(_) => BankError::NotOwner { account: m.from },
                });
            }
            for id in [m.from, m.to] {
                if let std::collections::btree_map::Entry::Vacant(slot) = balances.entry(id) {
                    slot.insert(self.balance_of(id)?);
                }
            }
            let from = balances[&m.from];
            if from < m.amount {
                return Err(BankError::InsufficientFunds {
                    account: m.from,
                    balance: from,
                    wanted: m.amount,
                });
            }
            *balances.get_mut(&m.from).expect("looked up above") -= m.amount;
            *balances.get_mut(&m.to).expect("looked up above") += m.amount;
        }
        for (id, balance) in balances {
            self.accounts.insert(id, balance);
        }
        Ok(())
    }

    fn total(&self) -> u64 {
        self.accounts.fold(0, |sum, _, balance| sum + balance)
    }

    fn owner(&self, id: u64) -> Option<ClientId> {
        self.owners.get(&id)
    }

    fn exists(&self, id: u64) -> bool {
        self.accounts.contains_key(&id)
    }

    fn audit(&self, ctx: &Context) -> Report {
        Report {
            accounts: self.accounts.len() as u64,
            total: self.total(),
            at: ctx.timestamp_nanos(),
        }
    }
}
// ANCHOR_END: impl

const ACCOUNTS: u64 = 1000;
const OPENING_BALANCE: u64 = 1_000;
const CONCURRENT_CALLS: u64 = 256;

/// A small deterministic generator, so runs are repeatable.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Runs the workload against `bank`; returns (operations, elapsed).
async fn workload<I>(
    bank: BankClient<I>,
    ops: u64,
) -> Result<(u64, Duration), Box<dyn std::error::Error>>
where
    I: cbase::Invoke<BankRequest, BankResponse> + Clone + 'static,
{
    for id in 0..ACCOUNTS {
        bank.open(id, OPENING_BALANCE).await?;
    }
    let progress = indicatif::ProgressBar::new(ops);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_CALLS {
        let (bank, next, progress) = (bank.clone(), Arc::clone(&next), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<(), cbase::ClientError>(());
                }
                let r = mix(i);
                let (a, b) = (r % ACCOUNTS, (r >> 20) % ACCOUNTS);
                match r % 100 {
                    0..70 => {
                        let _ = bank.transfer(a, b, r % 50).await?;
                    }
                    70..80 => {
                        let moves = (0..3)
                            .map(|k| Move {
                                from: mix(r + k) % ACCOUNTS,
                                to: mix(r + k + 7) % ACCOUNTS,
                                amount: 5,
                            })
                            .collect();
                        {
                            let _ = bank.settle(moves).await?;
                        };
                    }
                    80..95 => {
                        let _ = bank.balance(a).await?;
                    }
                    95..99 => {
                        let _ = bank.exists(b).await?;
                    }
                    _ => {
                        let _ = bank.audit().await?;
                    }
                }
                progress.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    progress.finish_and_clear();
    Ok((ops, start.elapsed()))
}

fn summary(ops: u64, elapsed: Duration, total: u64) {
    println!("operations:   {ops}");
    println!("time:         {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:   {:.0} operations/s",
        ops as f64 / elapsed.as_secs_f64()
    );
    let expected = ACCOUNTS * OPENING_BALANCE;
    println!(
        "money:        {total} (expected {expected}): {}",
        if total == expected {
            "conserved"
        } else {
            "NOT CONSERVED"
        }
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cbase::logging::init();
    args::report(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = args::parse_or_exit();
    let ops = cli.ops.unwrap_or(20_000);
    let workers = cli.workers.unwrap_or(16);
    match cli.mode {
        Mode::Local => {
            // ANCHOR: local
            let cluster = LocalCluster::builder()
                .replicas(4)
                .workers(workers)
                .start(|| BankService(MyBank::default()))
                .await?;
            let bank = BankClient::new(cluster.client()?);
            // ANCHOR_END: local
            println!(
                "4 replicas (f = 1), {workers} workers each, {CONCURRENT_CALLS} concurrent calls"
            );
            let (ops, elapsed) = workload(bank.clone(), ops).await?;
            let total = bank.total().await?;
            summary(ops, elapsed, total);
            let views: Vec<u64> = cluster
                .replicas()
                .map(|r| r.metrics().view.load(Ordering::Relaxed))
                .collect();
            println!("views:        {views:?}");
            let (checkpoints, agree) = args::digests_agree(&cluster);
            println!(
                "digests:      {checkpoints} checkpoints on every replica, {}",
                if agree { "all agree" } else { "DIFFER" }
            );
            cluster.shutdown().await;
            if !agree || total != ACCOUNTS * OPENING_BALANCE {
                return Err("the replicas disagree or money was not conserved".into());
            }
        }
        Mode::Replica { config, id, key } => {
            // ANCHOR: replica
            let options = cbase::net::deploy::ReplicaOptions {
                executor: ExecutorBuilder::new().workers(workers),
                data_dir: cli.data.clone(),
                metrics: cli.metrics.clone(),
                listen: cli.listen.clone(),
                ..Default::default()
            };
            let node = cbase::net::deploy::start_replica(
                &config,
                id,
                &key,
                options,
                BankService(MyBank::default()),
            )
            .await?;
            // ANCHOR_END: replica
            args::serve_until_interrupted(node).await;
        }
        Mode::Client { config } => {
            // ANCHOR: client
            let client = cbase::net::deploy::client_from_file(&config, Default::default())?;
            let bank = BankClient::new(client);
            // ANCHOR_END: client
            let (ops, elapsed) = workload(bank.clone(), ops).await?;
            summary(ops, elapsed, bank.total().await?);
        }
    }
    Ok(())
}
