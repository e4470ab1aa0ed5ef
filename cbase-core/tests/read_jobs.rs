//! Reads submitted together (`Executor::submit_reads` and `run_reads`, the fast path's
//! jobs) run after every earlier write to what they read and before every
//! later one, each in its own scope, each with its own reply.

mod common;

use std::sync::{Arc, Mutex};

use cbase_core::{Context, ExecutorBuilder, ReadOnly};
use common::{Bank, BankRequest, Outcome};

fn read(request: BankRequest) -> ReadOnly<BankRequest> {
    ReadOnly::new(request).expect("a read-only request")
}

/// Tags 0 to 2: accounts 1 and 2 open with 100 each, then 30 move from 1
/// to 2.
fn open_two_accounts_and_transfer(write: &impl Fn(u64, BankRequest)) {
    write(0, BankRequest::Open { id: 1, amount: 100 });
    write(1, BankRequest::Open { id: 2, amount: 100 });
    write(
        2,
        BankRequest::Transfer {
            from: 1,
            to: 2,
            amount: 30,
        },
    );
}

fn ctx(tag: u64) -> Context {
    Context::new(tag, [0; 32])
}

#[test]
fn reads_run_between_the_writes_around_them() {
    // Many rounds: the workers' timing differs from one to the next.
    for _ in 0..50 {
        let replies: Arc<Mutex<Vec<(u64, Outcome)>>> = Arc::default();
        let sink = Arc::clone(&replies);
        let executor = ExecutorBuilder::new()
            .workers(4)
            .start(Bank::new(), move |reply| {
                sink.lock().unwrap().push((reply.tag, reply.result));
            })
            .unwrap();
        let write =
            |tag: u64, request: BankRequest| executor.submit(tag, ctx(tag), request).unwrap();
        open_two_accounts_and_transfer(&write);
        executor
            .submit_reads(vec![
                (3, ctx(3), read(BankRequest::Balance { id: 1 })),
                (4, ctx(4), read(BankRequest::Balance { id: 2 })),
                (5, ctx(5), read(BankRequest::Total)),
            ])
            .unwrap();
        write(
            6,
            BankRequest::Transfer {
                from: 2,
                to: 1,
                amount: 10,
            },
        );
        executor
            .submit_reads(vec![(7, ctx(7), read(BankRequest::Balance { id: 1 }))])
            .unwrap();
        executor.wait_idle();
        executor.shutdown();
        let mut replies = std::mem::take(&mut *replies.lock().unwrap());
        replies.sort_by_key(|(tag, _)| *tag);
        let reads: Vec<(u64, Outcome)> = replies
            .into_iter()
            .filter(|(tag, _)| [3, 4, 5, 7].contains(tag))
            .collect();
        assert_eq!(
            reads,
            vec![
                (3, Ok(Ok(70))),
                (4, Ok(Ok(130))),
                (5, Ok(Ok(200))),
                (7, Ok(Ok(80)))
            ]
        );
    }
}

#[test]
fn a_request_that_writes_is_not_taken_as_a_read() {
    let refused = ReadOnly::new(BankRequest::Open { id: 1, amount: 1 }).unwrap_err();
    assert!(matches!(refused, BankRequest::Open { id: 1, amount: 1 }));
    let balance = ReadOnly::new(BankRequest::Balance { id: 1 }).unwrap();
    assert!(matches!(balance.request(), BankRequest::Balance { id: 1 }));
}

#[test]
fn reads_run_on_the_calling_thread_only_when_they_can_start_at_once() {
    // Many rounds: the workers' timing differs from one to the next.
    for _ in 0..50 {
        let replies: Arc<Mutex<Vec<(u64, Outcome, std::thread::ThreadId)>>> = Arc::default();
        let sink = Arc::clone(&replies);
        let executor = ExecutorBuilder::new()
            .workers(2)
            .start(Bank::new(), move |reply| {
                let thread = std::thread::current().id();
                sink.lock().unwrap().push((reply.tag, reply.result, thread));
            })
            .unwrap();
        let here = std::thread::current().id();
        let write =
            |tag: u64, request: BankRequest| executor.submit(tag, ctx(tag), request).unwrap();
        open_two_accounts_and_transfer(&write);
        executor
            .run_reads(vec![
                (3, ctx(3), read(BankRequest::Balance { id: 1 })),
                (4, ctx(4), read(BankRequest::Total)),
            ])
            .unwrap();
        write(
            5,
            BankRequest::Transfer {
                from: 2,
                to: 1,
                amount: 10,
            },
        );
        executor.wait_idle();
        // Nothing is running now: the next read runs here, before
        // `run_reads` returns.
        executor
            .run_reads(vec![(6, ctx(6), read(BankRequest::Balance { id: 1 }))])
            .unwrap();
        {
            let replies = replies.lock().unwrap();
            let last = replies.last().expect("a reply");
            assert_eq!((last.0, &last.1, last.2), (6, &Ok(Ok(80)), here));
        }
        executor.wait_idle();
        executor.shutdown();
        let mut replies = std::mem::take(&mut *replies.lock().unwrap());
        replies.sort_by_key(|(tag, _, _)| *tag);
        let reads: Vec<(u64, Outcome)> = replies
            .into_iter()
            .filter(|(tag, _, _)| [3, 4, 6].contains(tag))
            .map(|(tag, outcome, _)| (tag, outcome))
            .collect();
        // Wherever they ran, between the same writes.
        assert_eq!(
            reads,
            vec![(3, Ok(Ok(70))), (4, Ok(Ok(200))), (6, Ok(Ok(80)))]
        );
    }
}
