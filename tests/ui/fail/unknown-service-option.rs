use cbase::prelude::*;

#[cbase::service(foo)]
trait Bank {
    #[reads(accounts[account])]
    fn balance(&self, account: u64) -> u64;
}

fn main() {}
