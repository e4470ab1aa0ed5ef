use cbase::prelude::*;

#[derive(State)]
struct Bank {
    accounts: Table<u64, u64>,
    #[state(skp)]
    label: String,
}

fn main() {}
