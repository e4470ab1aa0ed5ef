use cbase::prelude::*;

#[cbase::service]
trait Tickets {
    #[reads(seats[(*)])]
    fn all(&self) -> usize;
}

fn main() {}
