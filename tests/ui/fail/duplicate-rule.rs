use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[from])]
    #[reads(accounts[to])]
    fn compare(&self, from: u64, to: u64) -> bool;
}

fn main() {}
