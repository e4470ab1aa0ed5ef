use cbase::prelude::*;

#[cbase::service]
pub trait Tickets {
    #[writes(seatz[show])]
    fn book(&self, show: String) -> bool;
}

#[derive(Default, State)]
pub struct Office {
    seats: Table<String, u32>,
}

impl Tickets for Office {
    fn book(&self, show: String) -> bool {
        self.seats.get(&show).is_some()
    }
}

fn main() {
    // Building the service for this state is what checks its rules.
    let service = TicketsService(Office::default());
    let _ = Service::state(&service);
}
