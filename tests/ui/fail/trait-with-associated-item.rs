use cbase::prelude::*;

#[cbase::service]
trait Bank {
    const FEE: u64;

    #[reads(accounts[account])]
    fn balance(&self, account: u64) -> u64;
}

fn main() {}
