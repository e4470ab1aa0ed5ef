use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[reads(accounts[acount])]
    fn balance(&self, account: u64) -> u64;

    #[writes(accounts[account])]
    fn deposit(&mut self, account: u64, amount: u64);

    #[read(accounts[from], accounts[to])]
    fn compare(&self, from: u64, to: u64) -> bool;
}

fn main() {}
