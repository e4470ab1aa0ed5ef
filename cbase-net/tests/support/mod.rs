//! A small service the integration tests share: `put(k)` writes `k` under
//! key `k`.

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Put(pub u64);

impl Request for Put {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("values", &self.0))
    }
    fn method(&self) -> &'static str {
        "put"
    }
}

#[derive(Default)]
pub struct Values {
    values: Table<u64, u64>,
}

impl State for Values {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

#[derive(Default)]
pub struct Store(Values);

impl Service for Store {
    type Request = Put;
    type Response = u64;
    fn execute(&self, put: Put, _: &Context) -> u64 {
        self.0.values.insert(put.0, put.0);
        put.0
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}
