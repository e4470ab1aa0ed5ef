//! A barrier runs only once everything submitted before it has finished,
//! including requests that declare no keys at all.
//!
//! A request that touches nothing still has a reply, and a replica records
//! replies in its exactly-once table, which every checkpoint digests. If such
//! a request could still be running when a checkpoint's barrier ran, whether
//! its reply made it into the checkpoint would depend on thread timing, and
//! correct replicas would disagree on the digest. (The simulation found this:
//! a client's payload-only requests made a correct replica diverge in about 1
//! of 1,500 runs of one seed.)

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cbase_core::{AccessSet, Container, Context, ExecutorBuilder, Request, Service, State};

/// Opened by the test; a request waits for it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Declares nothing; waits at the gate.
struct Wait;

impl Request for Wait {
    fn access_set(&self) -> AccessSet {
        AccessSet::none()
    }
    fn method(&self) -> &'static str {
        "wait"
    }
}

struct Nothing;

impl State for Nothing {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        Vec::new()
    }
}

struct Gated(Nothing, Arc<Gate>);

impl Service for Gated {
    type Request = Wait;
    type Response = ();
    fn execute(&self, _: Wait, _: &Context) {
        self.1.wait();
    }
    fn state(&self) -> &dyn State {
        &self.0
    }
}

#[test]
fn a_barrier_waits_for_requests_that_declare_nothing() {
    let gate = Arc::new(Gate::default());
    let (replied, replies) = mpsc::channel();
    let executor = ExecutorBuilder::new()
        .workers(4)
        .start(Gated(Nothing, Arc::clone(&gate)), move |reply| {
            let _ = replied.send(reply.tag);
        })
        .unwrap();
    executor.submit(1, Context::new(0, [0; 32]), Wait).unwrap();
    let (ran, barrier) = mpsc::channel();
    executor
        .barrier(move |_| {
            let _ = ran.send(());
        })
        .unwrap();
    // With the request held at the gate, the barrier must not run. (Were it
    // wrong, it would run at once on one of the idle workers: the wait only
    // gives it the chance to show that, it is not needed for a pass.)
    let ran_early = barrier.recv_timeout(Duration::from_millis(200)).is_ok();
    gate.open();
    assert!(
        !ran_early,
        "the barrier ran while a request before it was still running"
    );
    assert_eq!(replies.recv().unwrap(), 1);
    barrier.recv().unwrap();
    executor.shutdown();
}

#[test]
fn requests_that_declare_nothing_still_run_side_by_side() {
    // The fence they read is shared, never written by a request: two of them
    // at the gate together prove they do not wait for each other.
    let gate = Arc::new(Gate::default());
    let (replied, replies) = mpsc::channel();
    let started = Arc::new((Mutex::new(0u32), Condvar::new()));
    struct Counting(Nothing, Arc<Gate>, Arc<(Mutex<u32>, Condvar)>);
    impl Service for Counting {
        type Request = Wait;
        type Response = ();
        fn execute(&self, _: Wait, _: &Context) {
            let (count, changed) = &*self.2;
            *count.lock().unwrap() += 1;
            changed.notify_all();
            self.1.wait();
        }
        fn state(&self) -> &dyn State {
            &self.0
        }
    }
    let executor = ExecutorBuilder::new()
        .workers(2)
        .start(
            Counting(Nothing, Arc::clone(&gate), Arc::clone(&started)),
            move |reply| {
                let _ = replied.send(reply.tag);
            },
        )
        .unwrap();
    for tag in 0..2 {
        executor
            .submit(tag, Context::new(0, [0; 32]), Wait)
            .unwrap();
    }
    let (count, changed) = &*started;
    let mut running = count.lock().unwrap();
    while *running < 2 {
        running = changed.wait(running).unwrap();
    }
    drop(running);
    gate.open();
    let mut tags: Vec<u64> = replies.iter().take(2).collect();
    tags.sort();
    assert_eq!(tags, [0, 1]);
    executor.shutdown();
}
