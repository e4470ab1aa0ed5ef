//! A bank on cbase's core types, for the benchmarks: accounts in one
//! table, balance queries (read-only) and transfers between two accounts.

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
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
