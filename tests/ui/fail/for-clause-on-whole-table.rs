use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[*] for id in ids)]
    fn balances(&self, ids: Vec<u64>) -> Vec<u64>;
}

fn main() {}
