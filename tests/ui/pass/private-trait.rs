#![deny(warnings)]
//! A private service trait in a binary, used only through its adapter: the
//! generated items it does not use (client, response accessors) must not
//! warn as dead code.

use cbase::prelude::*;

#[cbase::service]
trait Greeter {
    #[writes(greeted[name])]
    fn greet(&self, name: String) -> String;
}

#[derive(Default, State)]
struct MyGreeter {
    greeted: Table<String, u64>,
}

impl Greeter for MyGreeter {
    fn greet(&self, name: String) -> String {
        self.greeted.upsert(name.clone(), || 0, |n| *n += 1);
        format!("hello, {name}")
    }
}

fn main() {
    let service = GreeterService(MyGreeter::default());
    let request = GreeterRequest::Greet {
        name: "x".to_owned(),
    };
    let _ = service.execute(request, &Context::new(0, [0; 32]));
}
