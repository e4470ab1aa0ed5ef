#![deny(warnings)]
//! A `#[cfg]` on a method applies to everything generated for it.

use cbase::prelude::*;

#[cbase::service]
pub trait Bank {
    #[cfg(any())]
    #[reads(accounts[id])]
    fn never_compiled(&self, id: u64, missing: NoSuchType) -> u64;

    #[cfg(all())]
    #[reads(accounts[id])]
    fn balance(&self, id: u64) -> Option<u64>;
}

#[derive(Default, State)]
pub struct MyBank {
    accounts: Table<u64, u64>,
}

impl Bank for MyBank {
    fn balance(&self, id: u64) -> Option<u64> {
        self.accounts.get(&id)
    }
}

fn main() {
    let request = BankRequest::Balance { id: 1 };
    assert_eq!(request.method(), "balance");
    assert_eq!(
        BankRequest::declared_tables(),
        vec![("balance", "accounts")]
    );
    let response = BankService(MyBank::default()).execute(request, &Context::new(0, [0; 32]));
    assert!(matches!(response, BankResponse::Balance(None)));
}
