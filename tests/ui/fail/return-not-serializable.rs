use cbase::prelude::*;

#[derive(Debug, Clone)]
pub struct Statement {
    pub balance: u64,
}

#[cbase::service]
trait Bank {
    #[reads(accounts[account])]
    fn statement(&self, account: u64) -> Statement;
}

fn main() {}
