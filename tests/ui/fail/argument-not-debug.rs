use cbase::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
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
