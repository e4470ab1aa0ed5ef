use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[account])]
    fn open(&self, ctx: Context, account: u64);
}

fn main() {}
