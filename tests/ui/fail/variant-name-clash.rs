use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[account])]
    fn get_balance(&self, account: u64) -> u64;

    #[reads(accounts[account])]
    fn get__balance(&self, account: u64) -> u64;
}

fn main() {}
