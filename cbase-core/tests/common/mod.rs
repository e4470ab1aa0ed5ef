//! A bank-like service written by hand against the core API (what
//! `#[cbase::service]` generates), shared by the integration tests.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use cbase_core::{
    AccessSet, Cell, Container, Context, Digest, ExecError, ExecutorBuilder, Key, Request, Service,
    State, Table,
};

pub struct BankState {
    pub accounts: Table<u64, u64>,
    pub fees: Cell<u64>,
}

impl State for BankState {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("accounts", &self.accounts), ("fees", &self.fees)]
    }
}

#[derive(Clone, Debug)]
pub enum BankRequest {
    Open {
        id: u64,
        amount: u64,
    },
    Transfer {
        from: u64,
        to: u64,
        amount: u64,
    },
    Settle {
        moves: Vec<(u64, u64, u64)>,
    },
    Charge {
        id: u64,
    },
    Balance {
        id: u64,
    },
    Exists {
        id: u64,
    },
    Total,
    /// No rule: exclusive. Pays the collected fees to a random account.
    Lottery,
    /// Declares `accounts[id]` but also touches `accounts[id + 1]`.
    Sneaky {
        id: u64,
    },
    /// Panics after debiting: the panic is deterministic.
    Explode {
        id: u64,
    },
}

impl Request for BankRequest {
    fn access_set(&self) -> AccessSet {
        use BankRequest::*;
        let entry = |id: &u64| Key::entry("accounts", id);
        match self {
            Open { id, .. } | Sneaky { id } | Explode { id } => AccessSet::none().write(entry(id)),
            Transfer { from, to, .. } => AccessSet::none().write(entry(from)).write(entry(to)),
            Settle { moves } => {
                let mut set = AccessSet::none();
                for (from, to, _) in moves {
                    set.push_write(entry(from));
                    set.push_write(entry(to));
                }
                set
            }
            Charge { id } => AccessSet::none().write(entry(id)).write(Key::table("fees")),
            Balance { id } => AccessSet::none().read(entry(id)),
            Exists { id } => AccessSet::none().read(Key::value(id)),
            Total => AccessSet::none()
                .read(Key::table("accounts"))
                .read(Key::table("fees")),
            Lottery => AccessSet::exclusive(),
        }
    }

    fn method(&self) -> &'static str {
        use BankRequest::*;
        match self {
            Open { .. } => "open",
            Transfer { .. } => "transfer",
            Settle { .. } => "settle",
            Charge { .. } => "charge",
            Balance { .. } => "balance",
            Exists { .. } => "exists",
            Total => "total",
            Lottery => "lottery",
            Sneaky { .. } => "sneaky",
            Explode { .. } => "explode",
        }
    }

    fn declared_tables() -> Vec<(&'static str, &'static str)> {
        vec![
            ("open", "accounts"),
            ("charge", "fees"),
            ("total", "accounts"),
            ("total", "fees"),
        ]
    }
}

pub struct Bank(pub BankState);

impl Bank {
    pub fn new() -> Bank {
        Bank(BankState {
            accounts: Table::new(),
            fees: Cell::new(0),
        })
    }

    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<u64, String> {
        let accounts = &self.0.accounts;
        if from == to {
            return Err("same account".into());
        }
        let balance = accounts.get(&from).ok_or("no such source")?;
        if !accounts.contains_key(&to) {
            return Err("no such destination".into());
        }
        if balance < amount {
            return Err(format!("insufficient funds: {balance} < {amount}"));
        }
        accounts.insert(from, balance - amount);
        accounts.update(&to, |b| *b += amount);
        Ok(balance - amount)
    }
}

impl Service for Bank {
    type Request = BankRequest;
    type Response = Result<u64, String>;

    fn execute(&self, request: BankRequest, ctx: &Context) -> Result<u64, String> {
        use BankRequest::*;
        let accounts = &self.0.accounts;
        match request {
            Open { id, amount } => {
                accounts.upsert(id, || 0, |b| *b += amount);
                Ok(amount)
            }
            Transfer { from, to, amount } => self.transfer(from, to, amount),
            Settle { moves } => {
                let mut done = 0;
                for (from, to, amount) in moves {
                    if self.transfer(from, to, amount).is_ok() {
                        done += 1;
                    }
                }
                Ok(done)
            }
            Charge { id } => {
                let charged = accounts.update(&id, |b| {
                    let fee = (*b).min(1);
                    *b -= fee;
                    fee
                });
                let fee = charged.ok_or("no such account")?;
                Ok(self.0.fees.update(|f| {
                    *f += fee;
                    *f
                }))
            }
            Balance { id } => accounts.get(&id).ok_or_else(|| "no such account".into()),
            Exists { id } => Ok(u64::from(accounts.contains_key(&id))),
            Total => Ok(accounts.fold(0, |sum, _, b| sum + b) + self.0.fees.get()),
            Lottery => {
                let ids = accounts.keys();
                if ids.is_empty() {
                    return Ok(0);
                }
                let winner = ids[ctx.rng().gen_range(0..ids.len() as u64) as usize];
                let prize = self.0.fees.set(0);
                accounts.update(&winner, |b| *b += prize);
                Ok(winner)
            }
            Sneaky { id } => {
                accounts.upsert(id, || 0, |b| *b += 1);
                Ok(accounts.get(&(id + 1)).unwrap_or(0))
            }
            Explode { id } => {
                accounts.update(&id, |b| *b = b.saturating_sub(1));
                panic!("explode on account {id}");
            }
        }
    }

    fn state(&self) -> &dyn State {
        &self.0
    }
}

pub type Outcome = Result<Result<u64, String>, ExecError>;

/// Runs `requests` in order with `workers` workers; returns the replies in
/// tag order and the final digest.
pub fn run_bank(workers: usize, requests: Vec<BankRequest>) -> (Vec<Outcome>, Digest) {
    let replies: Arc<Mutex<Vec<(u64, Outcome)>>> = Arc::default();
    let sink = Arc::clone(&replies);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .window(256)
        .start(Bank::new(), move |reply| {
            sink.lock().unwrap().push((reply.tag, reply.result));
        })
        .expect("the bank's rules name its tables");
    let count = requests.len();
    for (tag, request) in requests.into_iter().enumerate() {
        let tag = tag as u64;
        executor
            .submit(tag, Context::new(tag, [tag as u8; 32]), request)
            .unwrap();
    }
    executor.wait_idle();
    let digest = executor.service().0.digest();
    // The digest maintained as requests commit is the one computed from
    // scratch over the whole state.
    assert_eq!(
        digest,
        executor.service().0.snapshot().unwrap().digest(),
        "incremental and full digests differ"
    );
    executor.shutdown();
    let mut replies = std::mem::take(&mut *replies.lock().unwrap());
    assert_eq!(replies.len(), count, "one reply per request");
    replies.sort_by_key(|(tag, _)| *tag);
    (
        replies.into_iter().map(|(_, outcome)| outcome).collect(),
        digest,
    )
}
