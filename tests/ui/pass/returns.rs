#![deny(warnings)]

use cbase::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BankError {
    NoSuchAccount(u64),
    Insufficient { balance: u64, wanted: u64 },
}

#[cbase::service]
pub trait Bank {
    /// Unit, written out.
    #[writes(accounts[id])]
    fn open(&self, id: u64) -> ();

    /// Unit, implicit.
    #[writes(accounts[id])]
    fn close(&self, id: u64);

    #[writes(accounts[from], accounts[to])]
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError>;

    #[reads(accounts[id])]
    fn balance(&self, id: u64) -> Result<u64, BankError>;

    #[reads(accounts[id])]
    fn maybe(&self, id: u64) -> Option<(u64, String)>;

    #[reads(accounts[*])]
    fn all(&self) -> std::collections::BTreeMap<u64, u64>;
}

#[derive(Default, State)]
pub struct MyBank {
    accounts: Table<u64, u64>,
}

impl Bank for MyBank {
    fn open(&self, id: u64) {
        self.accounts.insert(id, 0);
    }
    fn close(&self, id: u64) {
        self.accounts.remove(&id);
    }
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError> {
        let balance = self.balance(from)?;
        if balance < amount {
            return Err(BankError::Insufficient {
                balance,
                wanted: amount,
            });
        }
        self.balance(to)?;
        self.accounts.insert(from, balance - amount);
        self.accounts.update(&to, |b| *b += amount);
        Ok(())
    }
    fn balance(&self, id: u64) -> Result<u64, BankError> {
        self.accounts.get(&id).ok_or(BankError::NoSuchAccount(id))
    }
    fn maybe(&self, id: u64) -> Option<(u64, String)> {
        self.accounts.get(&id).map(|b| (b, b.to_string()))
    }
    fn all(&self) -> std::collections::BTreeMap<u64, u64> {
        self.accounts.entries().into_iter().collect()
    }
}

fn main() {
    let service = BankService(MyBank::default());
    let ctx = Context::new(0, [0; 32]);
    let _: BankResponse = service.execute(BankRequest::Open { id: 1 }, &ctx);
    let response = service.execute(BankRequest::Balance { id: 1 }, &ctx);
    assert!(matches!(response, BankResponse::Balance(Ok(0))));
    for request in [
        BankRequest::Transfer {
            from: 1,
            to: 2,
            amount: 3,
        },
        BankRequest::Maybe { id: 1 },
        BankRequest::All {},
        BankRequest::Close { id: 1 },
    ] {
        let _ = service.execute(request, &ctx);
    }
}
