use cbase::prelude::*;

#[cbase::service]
pub trait Tickets {
    #[reads(seats[(show, *)])]
    fn free(&self, show: u64) -> usize;
}

#[derive(Default, State)]
pub struct Office {
    seats: Table<u64, u32>,
}

impl Tickets for Office {
    fn free(&self, _show: u64) -> usize {
        self.seats.len()
    }
}

fn main() {
    // Building the service for this state is what checks its rules.
    let service = TicketsService(Office::default());
    let _ = Service::state(&service);
}
