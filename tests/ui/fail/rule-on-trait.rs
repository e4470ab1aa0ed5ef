use cbase::prelude::*;

#[cbase::service]
#[reads(accounts[*])]
trait Bank {
    fn balance(&self, account: u64) -> u64;
}

fn main() {}
