use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[id])]
    fn total(&self) -> u64;
}

fn main() {}
