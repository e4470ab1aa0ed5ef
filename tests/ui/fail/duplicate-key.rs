use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[from], accounts[to], accounts[from])]
    fn transfer(&self, from: u64, to: u64, amount: u64);
}

fn main() {}
