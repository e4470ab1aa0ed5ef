#![deny(warnings)]

use cbase::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub amount: u64,
}

#[cbase::service]
pub trait Bank {
    /// A bare argument: that value in every table.
    #[reads(id)]
    fn exists(&self, id: u64) -> bool;

    /// A bare field path.
    #[reads(m.from)]
    fn source_exists(&self, m: Move) -> bool;

    /// `table[argument]` and `table[field]`, several keys per attribute.
    #[writes(accounts[id], accounts[m.to])]
    fn pay(&self, id: u64, m: Move);

    /// `table[expr]` with an expression of arguments.
    #[reads(accounts[id + offset])]
    fn peek(&self, id: u64, offset: u64) -> Option<u64>;

    /// `table[*]`.
    #[reads(accounts[*])]
    fn total(&self) -> u64;

    /// `*`.
    #[writes(*)]
    fn reset(&self);

    /// A collection by reference.
    #[writes(accounts[m.from] for m in &moves, accounts[m.to] for m in &moves)]
    fn settle(&self, moves: Vec<Move>);

    /// A collection without `&`.
    #[writes(accounts[m.from] for m in moves)]
    fn settle_sources(&self, moves: Vec<Move>);

    /// A collection through `.iter()`.
    #[reads(accounts[*id] for id in ids.iter())]
    fn balances(&self, ids: Vec<u64>) -> Vec<Option<u64>>;

    /// A bare value per element.
    #[reads(x for x in &ids)]
    fn any_exists(&self, ids: Vec<u64>) -> bool;

    /// A pattern binding several names.
    #[writes(accounts[from] for (from, _) in &pairs)]
    fn drain(&self, pairs: Vec<(u64, u64)>);

    /// `#[reads]` and `#[writes]` together.
    #[reads(accounts[from])]
    #[writes(fees[*], accounts[to])]
    fn transfer(&self, from: u64, to: u64, amount: u64) -> u64;

    /// No rule: conflicts with every request.
    fn audit(&self) -> u64;
}

#[derive(Default, State)]
pub struct MyBank {
    accounts: Table<u64, u64>,
    fees: Cell<u64>,
}

impl Bank for MyBank {
    fn exists(&self, id: u64) -> bool {
        self.accounts.contains_key(&id)
    }
    fn source_exists(&self, m: Move) -> bool {
        self.accounts.contains_key(&m.from)
    }
    fn pay(&self, id: u64, m: Move) {
        self.accounts.insert(id, m.amount);
    }
    fn peek(&self, id: u64, offset: u64) -> Option<u64> {
        self.accounts.get(&(id + offset))
    }
    fn total(&self) -> u64 {
        self.accounts.fold(0, |sum, _, b| sum + b)
    }
    fn reset(&self) {
        self.accounts.clear();
        self.fees.set(0);
    }
    fn settle(&self, moves: Vec<Move>) {
        for m in moves {
            self.accounts.insert(m.to, m.amount);
        }
    }
    fn settle_sources(&self, moves: Vec<Move>) {
        for m in moves {
            self.accounts.remove(&m.from);
        }
    }
    fn balances(&self, ids: Vec<u64>) -> Vec<Option<u64>> {
        ids.iter().map(|id| self.accounts.get(id)).collect()
    }
    fn any_exists(&self, ids: Vec<u64>) -> bool {
        ids.iter().any(|id| self.accounts.contains_key(id))
    }
    fn drain(&self, pairs: Vec<(u64, u64)>) {
        for (from, _) in pairs {
            self.accounts.remove(&from);
        }
    }
    fn transfer(&self, from: u64, to: u64, amount: u64) -> u64 {
        let _ = self.accounts.get(&from);
        self.accounts.insert(to, amount);
        self.fees.update(|f| {
            *f += 1;
            *f
        })
    }
    fn audit(&self) -> u64 {
        self.accounts.len() as u64
    }
}

fn main() {
    let m = Move {
        from: 1,
        to: 2,
        amount: 3,
    };
    let requests = vec![
        BankRequest::Exists { id: 1 },
        BankRequest::SourceExists { m: m.clone() },
        BankRequest::Pay {
            id: 1,
            m: m.clone(),
        },
        BankRequest::Peek { id: 1, offset: 1 },
        BankRequest::Total {},
        BankRequest::Reset {},
        BankRequest::Settle {
            moves: vec![m.clone()],
        },
        BankRequest::SettleSources {
            moves: vec![m.clone()],
        },
        BankRequest::Balances { ids: vec![1, 2] },
        BankRequest::AnyExists { ids: vec![1, 2] },
        BankRequest::Drain {
            pairs: vec![(1, 2)],
        },
        BankRequest::Transfer {
            from: 1,
            to: 2,
            amount: 3,
        },
        BankRequest::Audit {},
    ];
    let service = BankService(MyBank::default());
    for request in requests {
        let _ = request.access_set();
        let _ = request.method();
        let _ = service.execute(request, &Context::new(0, [0; 32]));
    }
    let _ = BankRequest::declared_tables();
}
