#![deny(warnings)]
//! Raw identifiers: a table named `r#type` is the field `r#type`, which
//! `#[derive(State)]` names `type`; a method `r#match` is the method `match`.

use std::sync::{Arc, Mutex};

use cbase::prelude::*;

#[cbase::service]
pub trait Registry {
    #[writes(r#type[r#ref])]
    fn r#match(&self, r#ref: u64) -> u64;
}

#[derive(Default, State)]
pub struct MyRegistry {
    r#type: Table<u64, u64>,
}

impl Registry for MyRegistry {
    fn r#match(&self, r#ref: u64) -> u64 {
        self.r#type.insert(r#ref, r#ref);
        r#ref
    }
}

fn main() {
    let request = RegistryRequest::Match { r#ref: 3 };
    assert_eq!(request.method(), "match");
    assert_eq!(RegistryRequest::declared_tables(), vec![("match", "type")]);

    let replies = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replies);
    let executor = ExecutorBuilder::new()
        .workers(1)
        .start(RegistryService(MyRegistry::default()), move |reply| {
            sink.lock().unwrap().push(format!("{:?}", reply.result));
        })
        .unwrap();
    executor
        .submit(0, Context::new(0, [0; 32]), request)
        .unwrap();
    executor.wait_idle();
    assert_eq!(*replies.lock().unwrap(), vec!["Ok(Match(3))".to_owned()]);
}
