use cbase::prelude::*;

#[derive(Debug, Clone)]
pub struct Deposit {
    pub account: u64,
    pub amount: u64,
}

#[cbase::service]
trait Bank {
    #[writes(accounts[deposit.account])]
    fn deposit(&self, deposit: Deposit);
}

fn main() {}
