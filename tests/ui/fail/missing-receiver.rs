use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[account])]
    fn deposit(account: u64, amount: u64);
}

fn main() {}
