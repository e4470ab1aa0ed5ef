#![deny(warnings)]

use cbase::prelude::*;

#[cbase::service]
pub trait Counter {
    #[writes(counts[name])]
    fn bump(&self, name: String) -> u64;

    #[reads(counts[name])]
    fn get(&self, name: String) -> Option<u64>;
}

#[derive(Default, State)]
pub struct MyCounter {
    counts: Table<String, u64>,
}

impl Counter for MyCounter {
    fn bump(&self, name: String) -> u64 {
        self.counts.upsert(
            name,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        )
    }
    fn get(&self, name: String) -> Option<u64> {
        self.counts.get(&name)
    }
}

/// Only compiled (never awaited): uses every generated client method.
async fn use_client(client: CounterClient<LocalInvoker<CounterService<MyCounter>>>) {
    let _: Result<u64, ClientError> = client.bump("a".to_owned()).await;
    let _: Result<Option<u64>, ClientError> = client.get("a".to_owned()).await;
    let _ = client.invoker();
    let _ = client.into_invoker();
}

fn main() {
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        CounterService(MyCounter::default()),
    )
    .unwrap();
    let client = CounterClient::new(invoker);
    let _future = use_client(client);
}
