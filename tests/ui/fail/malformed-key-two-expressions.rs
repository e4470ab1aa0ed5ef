use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[account account])]
    fn balance(&self, account: u64) -> u64;
}

fn main() {}
