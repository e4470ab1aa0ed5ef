//! `#[cbase::service]` and `#[derive(State)]` end to end: generated access
//! sets, the dispatcher and adapter on the core executor, undeclared accesses,
//! and the typed client over the in-process invoker.

use std::sync::{Arc, Mutex};

use cbase::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    NoSuchAccount(u64),
    Insufficient { balance: u64, wanted: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub accounts: u64,
    pub total: u64,
    pub at: u64,
    pub lucky: u64,
}

// ANCHOR: service
/// A bank.
#[cbase::service]
pub trait Bank {
    /// Opens an account.
    #[writes(accounts[id])]
    fn open(&self, id: u64, amount: u64);

    /// The balance of one account.
    #[reads(accounts[id])]
    fn balance(&self, id: u64) -> Option<u64>;

    #[writes(accounts[from], accounts[to])]
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError>;

    #[writes(accounts[m.from] for m in &moves, accounts[m.to] for m in &moves)]
    fn settle(&self, moves: Vec<Move>) -> Result<(), BankError>;

    #[reads(accounts[*], fees[*])]
    fn total(&self) -> u64;

    #[reads(id)]
    fn exists(&self, id: u64) -> bool;

    #[reads(accounts[id])]
    #[writes(fees[*])]
    fn charge(&self, id: u64, fee: u64) -> u64;

    #[reads(*)]
    fn everything(&self) -> u64;

    /// No rule: exclusive.
    fn audit(&self, ctx: &Context) -> Report;

    /// Declares one account, touches another.
    #[reads(accounts[id])]
    fn peek_next(&self, id: u64) -> Option<u64>;
}
// ANCHOR_END: service

// ANCHOR: state
#[derive(Default, cbase::State)]
pub struct MyBank {
    accounts: Table<u64, u64>,
    fees: Cell<u64>,
    #[state(skip)]
    #[allow(dead_code)]
    label: String,
}
// ANCHOR_END: state

impl MyBank {
    fn move_money(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError> {
        let balance = self
            .accounts
            .get(&from)
            .ok_or(BankError::NoSuchAccount(from))?;
        if !self.accounts.contains_key(&to) {
            return Err(BankError::NoSuchAccount(to));
        }
        if balance < amount {
            return Err(BankError::Insufficient {
                balance,
                wanted: amount,
            });
        }
        self.accounts.insert(from, balance - amount);
        self.accounts.update(&to, |b| *b += amount);
        Ok(())
    }
}

impl Bank for MyBank {
    fn open(&self, id: u64, amount: u64) {
        self.accounts.insert(id, amount);
    }
    fn balance(&self, id: u64) -> Option<u64> {
        self.accounts.get(&id)
    }
    fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<(), BankError> {
        if from == to {
            return Ok(());
        }
        self.move_money(from, to, amount)
    }
    fn settle(&self, moves: Vec<Move>) -> Result<(), BankError> {
        for m in moves {
            if m.from != m.to {
                self.move_money(m.from, m.to, m.amount)?;
            }
        }
        Ok(())
    }
    fn total(&self) -> u64 {
        self.accounts.fold(0, |sum, _, b| sum + b) + self.fees.get()
    }
    fn exists(&self, id: u64) -> bool {
        self.accounts.contains_key(&id)
    }
    // ANCHOR: cell-and-context
    fn charge(&self, id: u64, fee: u64) -> u64 {
        let _ = self.accounts.get(&id);
        self.fees.update(|f| {
            *f += fee;
            *f
        })
    }
    fn everything(&self) -> u64 {
        self.accounts.len() as u64
    }
    fn audit(&self, ctx: &Context) -> Report {
        let accounts = self.accounts.len() as u64;
        Report {
            accounts,
            total: self.total(),
            at: ctx.timestamp_nanos(),
            lucky: ctx.rng().gen_range(0..accounts.max(1)),
        }
    }
    // ANCHOR_END: cell-and-context
    fn peek_next(&self, id: u64) -> Option<u64> {
        self.accounts.get(&(id + 1))
    }
}

fn entry(id: u64) -> Key {
    Key::entry("accounts", &id)
}

// ANCHOR: access-set-test
#[test]
fn generated_access_sets_match_the_rules() {
    let moves = vec![
        Move {
            from: 1,
            to: 2,
            amount: 3,
        },
        Move {
            from: 4,
            to: 5,
            amount: 6,
        },
    ];
    let cases: Vec<(BankRequest, AccessSet)> = vec![
        (
            BankRequest::Open { id: 1, amount: 5 },
            AccessSet::none().write(entry(1)),
        ),
        (
            BankRequest::Balance { id: 7 },
            AccessSet::none().read(entry(7)),
        ),
        (
            BankRequest::Transfer {
                from: 1,
                to: 2,
                amount: 3,
            },
            AccessSet::none().write(entry(1)).write(entry(2)),
        ),
        (
            BankRequest::Settle { moves },
            AccessSet::none()
                .write(entry(1))
                .write(entry(4))
                .write(entry(2))
                .write(entry(5)),
        ),
        (
            BankRequest::Total {},
            AccessSet::none()
                .read(Key::table("accounts"))
                .read(Key::table("fees")),
        ),
        (
            BankRequest::Exists { id: 9 },
            AccessSet::none().read(Key::value(&9u64)),
        ),
        (
            BankRequest::Charge { id: 3, fee: 1 },
            AccessSet::none().read(entry(3)).write(Key::table("fees")),
        ),
        (BankRequest::Everything {}, AccessSet::none().read(Key::All)),
        (BankRequest::Audit {}, AccessSet::exclusive()),
    ];
    for (request, expected) in cases {
        assert_eq!(request.access_set(), expected, "{request:?}");
    }
    assert_eq!(
        BankRequest::Transfer {
            from: 1,
            to: 2,
            amount: 3
        }
        .method(),
        "transfer"
    );
    let tables = BankRequest::declared_tables();
    assert!(tables.contains(&("total", "fees")) && tables.contains(&("settle", "accounts")));
}
// ANCHOR_END: access-set-test

fn workload() -> Vec<BankRequest> {
    let mut requests: Vec<BankRequest> = (0..10)
        .map(|id| BankRequest::Open { id, amount: 100 })
        .collect();
    for i in 0..400u64 {
        let (a, b) = (i * 7 % 11, i * 3 % 11);
        requests.push(match i % 9 {
            0 => BankRequest::Transfer {
                from: a,
                to: b,
                amount: i % 40,
            },
            1 => BankRequest::Settle {
                moves: vec![
                    Move {
                        from: a,
                        to: b,
                        amount: 5,
                    },
                    Move {
                        from: b,
                        to: a,
                        amount: 2,
                    },
                ],
            },
            2 => BankRequest::Balance { id: a },
            3 => BankRequest::Exists { id: b },
            4 => BankRequest::Charge { id: a, fee: 1 },
            5 => BankRequest::Total {},
            6 => BankRequest::Audit {},
            7 => BankRequest::Everything {},
            _ => BankRequest::Transfer {
                from: b,
                to: a,
                amount: 3,
            },
        });
    }
    requests
}

// ANCHOR: one-vs-many-workers
fn run(workers: usize) -> (Vec<String>, Digest) {
    let replies = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&replies);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .start(BankService(MyBank::default()), move |reply| {
            sink.lock()
                .unwrap()
                .push((reply.tag, format!("{:?}", reply.result)));
        })
        .unwrap();
    for (tag, request) in workload().into_iter().enumerate() {
        executor
            .submit(
                tag as u64,
                Context::new(tag as u64, [tag as u8; 32]),
                request,
            )
            .unwrap();
    }
    executor.wait_idle();
    let digest = executor.service().0.digest();
    let mut replies = std::mem::take(&mut *replies.lock().unwrap());
    replies.sort();
    (replies.into_iter().map(|(_, r)| r).collect(), digest)
}

#[test]
fn every_key_form_runs_the_same_with_one_and_eight_workers() {
    let (sequential, digest_1) = run(1);
    let (parallel, digest_8) = run(8);
    assert_eq!(sequential, parallel);
    assert_eq!(digest_1, digest_8);
    assert!(
        sequential.iter().all(|r| r.starts_with("Ok(")),
        "{sequential:?}"
    );
}
// ANCHOR_END: one-vs-many-workers

#[test]
fn the_state_lists_its_containers_by_field_name() {
    let bank = MyBank::default();
    assert_eq!(bank.table_names(), vec!["accounts", "fees"]);
}

// ANCHOR: local-invoker-test
#[tokio::test]
async fn typed_client_round_trips_and_reports_undeclared_access() {
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(4),
        BankService(MyBank::default()),
    )
    .unwrap();
    let bank = BankClient::new(invoker);
    bank.open(1, 50).await.unwrap();
    bank.open(2, 0).await.unwrap();
    bank.transfer(1, 2, 20).await.unwrap().unwrap();
    assert_eq!(
        bank.transfer(2, 1, 500).await.unwrap(),
        Err(BankError::Insufficient {
            balance: 20,
            wanted: 500
        })
    );
    assert_eq!(bank.balance(2).await.unwrap(), Some(20));
    assert!(bank.exists(1).await.unwrap());
    assert_eq!(bank.total().await.unwrap(), 50);
    assert_eq!(bank.audit().await.unwrap().accounts, 2);

    let error = bank.peek_next(1).await.unwrap_err();
    let ClientError::Exec(ExecError::UndeclaredAccess(refusal)) = error else {
        panic!("expected an undeclared-access error, got {error:?}");
    };
    assert_eq!(
        (
            refusal.method.as_str(),
            refusal.table.as_str(),
            refusal.key.as_str()
        ),
        ("peek_next", "accounts", "2")
    );
}
// ANCHOR_END: local-invoker-test

/// A service whose arguments and results are byte strings.
#[cbase::service]
pub trait Blobs {
    /// Stores a blob.
    #[writes(blobs[key])]
    fn put(&self, key: u64, value: Vec<u8>) -> Option<Vec<u8>>;
}

#[test]
fn byte_string_arguments_and_results_encode_as_serde_writes_them() {
    use cbase::core_crate::codec;

    // What serde derives for the same enums, byte by byte.
    #[derive(Serialize)]
    enum Request {
        Put { key: u64, value: Vec<u8> },
    }
    #[derive(Serialize)]
    enum Response {
        Put(Option<Vec<u8>>),
    }

    for size in [0, 1, 127, 128, 300, 70_000] {
        let value: Vec<u8> = (0..size).map(|at| (at % 253) as u8).collect();
        let generated = codec::encode(&BlobsRequest::Put {
            key: 7,
            value: value.clone(),
        })
        .unwrap();
        let per_byte = codec::encode(&Request::Put {
            key: 7,
            value: value.clone(),
        })
        .unwrap();
        assert_eq!(generated, per_byte, "request with {size} bytes");
        let back: BlobsRequest = codec::decode(&per_byte).unwrap();
        assert!(matches!(back, BlobsRequest::Put { key: 7, value: v } if v == value));

        for result in [None, Some(value.clone())] {
            let generated = codec::encode(&BlobsResponse::Put(result.clone())).unwrap();
            assert_eq!(generated, codec::encode(&Response::Put(result)).unwrap());
        }
    }
}
