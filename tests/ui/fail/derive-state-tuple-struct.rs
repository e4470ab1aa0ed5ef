use cbase::prelude::*;

#[derive(State)]
struct Bank(Table<u64, u64>, Cell<u64>);

fn main() {}
