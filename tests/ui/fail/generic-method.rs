use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[account])]
    fn deposit<T>(&self, account: u64, amount: T);
}

fn main() {}
