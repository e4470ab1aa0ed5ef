use cbase::prelude::*;

#[cbase::service]
trait Directory {
    #[writes(names[id])]
    fn rename(&self, id: u64, name: &str);
}

fn main() {}
