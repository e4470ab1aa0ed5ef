use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[account])]
    #[writes(accounts[account])]
    fn deposit(&self, account: u64, amount: u64) -> u64;
}

fn main() {}
