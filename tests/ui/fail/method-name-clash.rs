use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[account])]
    fn new(&self, account: u64);
}

fn main() {}
