//! The replicated service: a small bank, and the sequential specification
//! its history is checked against.
//!
//! Besides transfers and reads it has two operations that exercise the rest
//! of the request path: `Stamp` reads the agreed clock (so replicas whose
//! agreed clocks differ answer differently and checkpoint different states),
//! and `Pad` carries a payload of any size (so requests can be made as large
//! as the transport's frame limit).

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
use serde::{Deserialize, Serialize};

pub const ACCOUNTS: u64 = 4;
pub const OPENING: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Transfer {
        from: u64,
        to: u64,
        amount: u64,
    },
    Balance {
        id: u64,
    },
    Total,
    /// Records the agreed time in the state and returns it.
    Stamp,
    /// Does nothing but travel; returns the payload's length.
    Pad(#[serde(with = "cbase_core::codec::bytes")] Vec<u8>),
}

impl Request for Op {
    fn access_set(&self) -> AccessSet {
        match self {
            Op::Transfer { from, to, .. } => AccessSet::none()
                .write(Key::entry("accounts", from))
                .write(Key::entry("accounts", to)),
            Op::Balance { id } => AccessSet::none().read(Key::entry("accounts", id)),
            Op::Total => AccessSet::none().read(Key::table("accounts")),
            Op::Stamp => AccessSet::none().write(Key::entry("clock", &0u64)),
            Op::Pad(_) => AccessSet::none(),
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Op::Transfer { .. } => "transfer",
            Op::Balance { .. } => "balance",
            Op::Total => "total",
            Op::Stamp => "stamp",
            Op::Pad(_) => "pad",
        }
    }
    /// As `#[cbase::service]` derives it: true for the methods whose rules
    /// all read (`Balance`, `Total`), which honest clients send on the
    /// read-only fast path.
    fn read_only(&self) -> bool {
        matches!(self, Op::Balance { .. } | Op::Total)
    }
}

pub struct Accounts {
    accounts: Table<u64, u64>,
    clock: Table<u64, u64>,
}

impl State for Accounts {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("accounts", &self.accounts), ("clock", &self.clock)]
    }
}

pub struct Bank(Accounts);

impl Bank {
    pub fn new() -> Bank {
        let state = Accounts {
            accounts: Table::new(),
            clock: Table::new(),
        };
        for id in 0..ACCOUNTS {
            state.accounts.insert(id, OPENING);
        }
        Bank(state)
    }
}

impl Service for Bank {
    type Request = Op;
    type Response = u64;
    fn execute(&self, op: Op, ctx: &Context) -> u64 {
        let accounts = &self.0.accounts;
        match op {
            Op::Transfer { from, to, amount } => {
                let balance = accounts.get(&from).unwrap_or(0);
                if from == to || balance < amount {
                    return 0;
                }
                accounts.insert(from, balance - amount);
                accounts.update(&to, |b| *b += amount);
                1
            }
            Op::Balance { id } => accounts.get(&id).unwrap_or(0),
            Op::Total => accounts.fold(0, |sum, _, b| sum + b),
            Op::Stamp => {
                let now = ctx.timestamp_nanos();
                self.0.clock.insert(0, now);
                now
            }
            Op::Pad(payload) => payload.len() as u64,
        }
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

/// The sequential specification: what `op` answers when executed after
/// everything before it in the agreed order, at agreed time `clock`.
pub fn model(balances: &mut [u64; ACCOUNTS as usize], op: &Op, clock: u64) -> u64 {
    match op {
        Op::Transfer { from, to, amount } => {
            let (f, t) = (*from as usize, *to as usize);
            if from == to || balances[f] < *amount {
                return 0;
            }
            balances[f] -= amount;
            balances[t] += amount;
            1
        }
        Op::Balance { id } => balances[*id as usize],
        Op::Total => balances.iter().sum(),
        Op::Stamp => clock,
        Op::Pad(payload) => payload.len() as u64,
    }
}
