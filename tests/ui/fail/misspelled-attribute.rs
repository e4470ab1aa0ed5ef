use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[read(accounts[account])]
    fn balance(&self, account: u64) -> u64;
}

fn main() {}
