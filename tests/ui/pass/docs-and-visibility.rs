#![deny(warnings)]
#![deny(missing_docs)]
//! Generated items inherit the trait's visibility and its methods' docs, and
//! are documented themselves: `missing_docs` holds for a public service.

mod bank {
    use cbase::prelude::*;

    /// A bank, visible in this crate only.
    #[cbase::service]
    pub(crate) trait Bank {
        /// Opens an account.
        ///
        /// Several lines of documentation.
        #[writes(accounts[id])]
        fn open(&self, id: u64);

        /// The balance of one account.
        #[reads(accounts[id])]
        #[must_use]
        fn balance(&self, id: u64) -> Option<u64>;
    }

    /// The state.
    #[derive(Default, State)]
    pub(crate) struct MyBank {
        accounts: Table<u64, u64>,
    }

    impl Bank for MyBank {
        fn open(&self, id: u64) {
            self.accounts.insert(id, 0);
        }
        fn balance(&self, id: u64) -> Option<u64> {
            self.accounts.get(&id)
        }
    }
}

use cbase::prelude::*;

/// A public service: every generated item it exports must be documented.
#[cbase::service]
pub trait Ledger {
    /// Records an entry.
    #[writes(entries[id])]
    fn record(&self, id: u64, amount: u64, ctx: &Context);

    /// Every entry.
    #[reads(entries[*])]
    fn all(&self) -> Vec<(u64, u64)>;
}

fn main() {
    let service = bank::BankService(bank::MyBank::default());
    let ctx = Context::new(0, [0; 32]);
    let _ = service.execute(bank::BankRequest::Open { id: 1 }, &ctx);
    let _ = service.execute(bank::BankRequest::Balance { id: 1 }, &ctx);
}
