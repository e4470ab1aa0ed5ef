//! Requests whose rule cannot be evaluated, or that swallow a refusal: each
//! fails the same way on every replica and leaves nothing, and the executor
//! (the replica) carries on.

use std::sync::mpsc;

use cbase_core::{
    AccessSet, Container, Context, ExecError, ExecutorBuilder, Key, ReadOnly, Request, Service,
    State, Table,
};

struct Slots {
    slots: Table<u64, u64>,
}

impl State for Slots {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("slots", &self.slots)]
    }
}

#[derive(Debug)]
enum SlotRequest {
    /// Reads `slots[ids[0]]`: the rule indexes its argument, as a rule
    /// expression may, and panics when `ids` is empty.
    First { ids: Vec<u64> },
    /// Writes `slots[id]`.
    Put { id: u64, value: u64 },
    /// Reads `slots[id]`.
    Get { id: u64 },
    /// Writes `slots[id]`, then reads `slots[id + 1]`, which it does not
    /// declare, and catches the refusal.
    Swallow { id: u64 },
}

impl Request for SlotRequest {
    fn access_set(&self) -> AccessSet {
        match self {
            SlotRequest::First { ids } => AccessSet::none().read(Key::entry("slots", &ids[0])),
            SlotRequest::Put { id, .. } => AccessSet::none().write(Key::entry("slots", id)),
            SlotRequest::Get { id } => AccessSet::none().read(Key::entry("slots", id)),
            SlotRequest::Swallow { id } => AccessSet::none().write(Key::entry("slots", id)),
        }
    }

    fn method(&self) -> &'static str {
        match self {
            SlotRequest::First { .. } => "first",
            SlotRequest::Put { .. } => "put",
            SlotRequest::Get { .. } => "get",
            SlotRequest::Swallow { .. } => "swallow",
        }
    }

    fn read_only(&self) -> bool {
        matches!(self, SlotRequest::First { .. } | SlotRequest::Get { .. })
    }
}

struct SlotService(Slots);

impl Service for SlotService {
    type Request = SlotRequest;
    type Response = Option<u64>;

    fn execute(&self, request: SlotRequest, _: &Context) -> Option<u64> {
        let slots = &self.0.slots;
        match request {
            SlotRequest::First { ids } => slots.get(&ids[0]),
            SlotRequest::Put { id, value } => slots.insert(id, value),
            SlotRequest::Get { id } => slots.get(&id),
            SlotRequest::Swallow { id } => {
                slots.insert(id, 99);
                let next =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slots.get(&(id + 1))));
                next.unwrap_or(Some(0))
            }
        }
    }

    fn state(&self) -> &dyn State {
        &self.0
    }
}

type Replies = mpsc::Receiver<(u64, Result<Option<u64>, ExecError>)>;

fn start(workers: usize) -> (cbase_core::Executor<SlotService>, Replies) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .window(8)
        .start(
            SlotService(Slots {
                slots: Table::new(),
            }),
            move |reply| {
                let _ = tx.lock().unwrap().send((reply.tag, reply.result));
            },
        )
        .unwrap();
    (executor, rx)
}

fn sorted(rx: &Replies, n: usize) -> Vec<(u64, Result<Option<u64>, ExecError>)> {
    let mut replies: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
    replies.sort_by_key(|(tag, _)| *tag);
    replies
}

fn ctx() -> Context {
    Context::new(0, [0; 32])
}

#[test]
fn a_rule_that_panics_fails_its_request_and_not_the_replica() {
    for workers in [1, 2] {
        let (executor, rx) = start(workers);
        executor
            .submit(0, ctx(), SlotRequest::Put { id: 1, value: 10 })
            .unwrap();
        executor
            .submit(1, ctx(), SlotRequest::First { ids: vec![] })
            .unwrap();
        executor
            .submit(2, ctx(), SlotRequest::First { ids: vec![1] })
            .unwrap();
        executor
            .submit(3, ctx(), SlotRequest::Get { id: 1 })
            .unwrap();
        let replies = sorted(&rx, 4);
        assert_eq!(replies[0].1, Ok(None));
        let Err(ExecError::Panicked { method, message }) = &replies[1].1 else {
            panic!("expected the rule's panic, got {:?}", replies[1]);
        };
        assert_eq!(method, "first");
        assert!(message.contains("index out of bounds"), "{message}");
        assert_eq!(replies[2].1, Ok(Some(10)));
        assert_eq!(replies[3].1, Ok(Some(10)));
        executor.shutdown();
    }
}

#[test]
fn a_rule_that_panics_is_not_taken_for_a_read() {
    // The fast path asks whether a request only reads before ordering it:
    // a rule that panics is not a read, and asking does not panic.
    assert!(ReadOnly::new(SlotRequest::First { ids: vec![] }).is_err());
    assert!(ReadOnly::new(SlotRequest::First { ids: vec![3] }).is_ok());
}

#[test]
fn a_refusal_the_request_catches_still_fails_it_and_leaves_no_trace() {
    for workers in [1, 2] {
        let (executor, rx) = start(workers);
        executor
            .submit(0, ctx(), SlotRequest::Put { id: 1, value: 10 })
            .unwrap();
        executor
            .submit(1, ctx(), SlotRequest::Swallow { id: 1 })
            .unwrap();
        executor
            .submit(2, ctx(), SlotRequest::Get { id: 1 })
            .unwrap();
        let replies = sorted(&rx, 3);
        let Err(ExecError::UndeclaredAccess(refusal)) = &replies[1].1 else {
            panic!("expected the refusal, got {:?}", replies[1]);
        };
        assert_eq!(
            (refusal.method.as_str(), refusal.key.as_str()),
            ("swallow", "2")
        );
        assert_eq!(
            replies[2].1,
            Ok(Some(10)),
            "the write before it was dropped"
        );
        executor.shutdown();
    }
}
