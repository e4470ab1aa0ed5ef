#![deny(warnings)]

use cbase::prelude::*;

#[cbase::service]
pub trait Clock {
    #[writes(log[id])]
    fn first(&self, ctx: &Context, id: u64, tag: u64) -> u64;

    #[writes(log[id])]
    fn middle(&self, id: u64, ctx: &Context, tag: u64) -> u64;

    #[writes(log[id])]
    fn last(&self, id: u64, tag: u64, ctx: &Context) -> u64;

    /// The context under another name, and alone.
    fn now(&self, context: &cbase::Context) -> u64;
}

#[derive(Default, State)]
pub struct MyClock {
    log: Table<u64, u64>,
}

impl Clock for MyClock {
    fn first(&self, ctx: &Context, id: u64, tag: u64) -> u64 {
        self.log.insert(id, tag + ctx.timestamp_nanos());
        tag
    }
    fn middle(&self, id: u64, ctx: &Context, tag: u64) -> u64 {
        self.log.insert(id, tag + ctx.timestamp_nanos());
        tag
    }
    fn last(&self, id: u64, tag: u64, ctx: &Context) -> u64 {
        self.log.insert(id, tag + ctx.timestamp_nanos());
        tag
    }
    fn now(&self, context: &Context) -> u64 {
        context.timestamp_nanos()
    }
}

fn main() {
    let service = ClockService(MyClock::default());
    let ctx = Context::new(7, [1; 32]);
    for request in [
        ClockRequest::First { id: 1, tag: 2 },
        ClockRequest::Middle { id: 1, tag: 2 },
        ClockRequest::Last { id: 1, tag: 2 },
        ClockRequest::Now {},
    ] {
        let _ = service.execute(request, &ctx);
    }
}
