use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[from], accounts[to])]
    fn transfer(&self, (from, to): (u64, u64), amount: u64);
}

fn main() {}
