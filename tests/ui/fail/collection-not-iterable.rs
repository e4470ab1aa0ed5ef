use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[x] for x in amount)]
    fn deposit(&self, account: u64, amount: u64);
}

fn main() {}
