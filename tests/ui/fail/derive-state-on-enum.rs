use cbase::prelude::*;

#[derive(State)]
enum Bank {
    Open { accounts: Table<u64, u64> },
    Closed,
}

fn main() {}
