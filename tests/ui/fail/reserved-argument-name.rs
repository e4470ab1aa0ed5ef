use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[__cbase_set])]
    fn balance(&self, __cbase_set: u64) -> u64;
}

fn main() {}
