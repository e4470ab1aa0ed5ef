use cbase::prelude::*;

#[cbase::service]
trait Bank {
    #[writes(accounts[ctx])]
    fn open(&self, ctx: &Context, account: u64);
}

fn main() {}
