use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[account])]
    fn deposit(&mut self, account: u64, amount: u64);
}

fn main() {}
