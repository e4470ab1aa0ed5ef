use cbase::prelude::*;

#[cbase::service]
pub trait Tickets {
    #[reads(seats[(show, seat, *)])]
    fn free(&self, show: u64, seat: u32) -> usize;
}

#[derive(Default, State)]
pub struct Office {
    seats: Table<(u64, u32), bool>,
}

impl Tickets for Office {
    fn free(&self, show: u64, _seat: u32) -> usize {
        self.seats.prefix((show,)).len()
    }
}

fn main() {
    // Building the service for this state is what checks its rules.
    let service = TicketsService(Office::default());
    let _ = Service::state(&service);
}
