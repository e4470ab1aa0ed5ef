//! A key-value store the durability tests share: `Put { key, value }`
//! writes `value` under `key` in its one table, `values`.

use cbase_core::{AccessSet, Container, Context, Key, Request, Service, State, Table};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Put {
    pub key: u64,
    pub value: u64,
}

impl Request for Put {
    fn access_set(&self) -> AccessSet {
        AccessSet::none().write(Key::entry("values", &self.key))
    }
    fn method(&self) -> &'static str {
        "put"
    }
}

pub struct Values {
    pub values: Table<u64, u64>,
}

impl State for Values {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("values", &self.values)]
    }
}

pub struct Store(pub Values);

impl Service for Store {
    type Request = Put;
    type Response = ();
    fn execute(&self, put: Put, _: &Context) {
        self.0.values.insert(put.key, put.value);
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

/// A store with nothing in it.
pub fn empty() -> Store {
    Store(Values {
        values: Table::new(),
    })
}
