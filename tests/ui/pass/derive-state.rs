#![deny(warnings)]

use cbase::prelude::*;

#[derive(Default, State)]
struct Bank {
    accounts: Table<u64, u64>,
    owners: Table<String, Vec<u64>>,
    fees: Cell<u64>,
    #[state(skip)]
    label: String,
    r#type: Cell<u8>,
}

/// Generic parameters and where clauses are kept.
#[derive(Default, State)]
struct Generic<K: 'static>
where
    Table<K, u64>: Container,
{
    items: Table<K, u64>,
}

fn main() {
    let bank = Bank::default();
    assert_eq!(bank.label, "");
    assert_eq!(
        bank.table_names(),
        vec!["accounts", "owners", "fees", "type"]
    );
    let generic = Generic::<String>::default();
    assert_eq!(generic.table_names(), vec!["items"]);
}
