use cbase::prelude::*;

#[cbase::service]
pub trait Tickets {
    #[writes(seats[show])]
    fn book(&self, show: String) -> bool;
}

#[derive(Default)]
pub struct Office {
    seats: Table<String, u32>,
}

impl Tickets for Office {
    fn book(&self, show: String) -> bool {
        self.seats.get(&show).is_some()
    }
}

fn main() {
    let _invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        TicketsService(Office::default()),
    );
}
