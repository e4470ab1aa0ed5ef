use cbase::prelude::*;

#[cbase::service]
struct Bank;

fn main() {}
