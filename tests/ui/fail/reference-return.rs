use cbase::prelude::*;

#[cbase::service]
trait Directory {
    #[reads(names[id])]
    fn name(&self, id: u64) -> &str;
}

fn main() {}
