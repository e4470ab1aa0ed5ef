#![deny(warnings)]

mod reexport {
    pub use cbase as renamed;
}

use cbase::prelude::*;

#[cbase::service(crate = "reexport::renamed")]
pub trait Echo {
    #[reads(value)]
    fn echo(&self, value: u64) -> u64;
}

#[derive(Default, State)]
pub struct MyEcho {
    seen: Cell<u64>,
}

impl Echo for MyEcho {
    fn echo(&self, value: u64) -> u64 {
        value + self.seen.get()
    }
}

fn main() {
    let service = EchoService(MyEcho::default());
    let _ = service.execute(EchoRequest::Echo { value: 1 }, &Context::new(0, [0; 32]));
}
