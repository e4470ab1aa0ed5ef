use cbase::prelude::*;

#[cbase::service]
trait Store<K> {
    #[reads(items[key])]
    fn get(&self, key: K) -> Option<u64>;
}

fn main() {}
