use cbase::prelude::*;

#[derive(State)]
struct Bank {
    accounts: Table<u64, u64>,
    fee: u64,
}

fn main() {}
