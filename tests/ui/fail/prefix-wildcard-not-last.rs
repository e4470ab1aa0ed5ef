use cbase::prelude::*;

#[cbase::service]
trait Tickets {
    #[reads(seats[(*, seat)])]
    fn holders(&self, seat: u32) -> usize;
}

fn main() {}
