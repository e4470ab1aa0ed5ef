//! Schedules that must give every replica the same replies and the same
//! state, whatever the number of workers, and must never stop a worker.
//!
//! The service below is written by hand the way `#[cbase::service]` writes
//! it: each rule key is `Key::entry(table, &argument)`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cbase_core::{
    AccessSet, Container, Context, ExecError, Executor, ExecutorBuilder, Key, Request, Service,
    State, Table, conflicts,
};

/// A file index keyed by path, and an audit table keyed by a sequence number.
struct Files {
    files: Table<PathBuf, u64>,
    audit: Table<u64, u64>,
}

impl State for Files {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("files", &self.files), ("audit", &self.audit)]
    }
}

#[derive(Debug, Clone)]
enum FileRequest {
    /// `#[writes(audit[seq], files[path])]`: records `size` under `seq`, then
    /// sets `files[path]` to `size`.
    Put { seq: u64, path: PathBuf, size: u64 },
    /// `#[reads(files[path])]`.
    Get { path: PathBuf },
}

impl Request for FileRequest {
    fn access_set(&self) -> AccessSet {
        match self {
            FileRequest::Put { seq, path, .. } => AccessSet::none()
                .write(Key::entry("audit", seq))
                .write(Key::entry("files", path)),
            FileRequest::Get { path } => AccessSet::none().read(Key::entry("files", path)),
        }
    }

    fn method(&self) -> &'static str {
        match self {
            FileRequest::Put { .. } => "put",
            FileRequest::Get { .. } => "get",
        }
    }

    fn read_only(&self) -> bool {
        matches!(self, FileRequest::Get { .. })
    }
}

/// Holds a `Put` of `size == GATED` inside its method until the gate opens.
const GATED: u64 = 7_777;

struct FileService {
    state: Files,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Service for FileService {
    type Request = FileRequest;
    type Response = Option<u64>;

    fn execute(&self, request: FileRequest, _: &Context) -> Option<u64> {
        match request {
            FileRequest::Put { seq, path, size } => {
                if size == GATED {
                    let gate = self.gate.lock().unwrap().take();
                    if let Some(gate) = gate {
                        let _ = gate.recv();
                    }
                }
                self.state.audit.insert(seq, size);
                self.state.files.insert(path, size)
            }
            FileRequest::Get { path } => self.state.files.get(&path),
        }
    }

    fn state(&self) -> &dyn State {
        &self.state
    }
}

type Replies = mpsc::Receiver<(u64, Result<Option<u64>, ExecError>)>;

fn start(workers: usize, gate: Option<mpsc::Receiver<()>>) -> (Executor<FileService>, Replies) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let service = FileService {
        state: Files {
            files: Table::new(),
            audit: Table::new(),
        },
        gate: Mutex::new(gate),
    };
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .window(16)
        .start(service, move |reply| {
            let _ = tx.lock().unwrap().send((reply.tag, reply.result));
        })
        .unwrap();
    (executor, rx)
}

/// The two spellings of one path the tests use: equal paths, different
/// encodings, and (as the table shards a key by its hash) one shard.
#[test]
fn the_two_spellings_are_one_path_with_two_encodings_in_one_shard() {
    let (plain, slashed) = (PathBuf::from("home/u2"), PathBuf::from("home/u2/"));
    assert_eq!(plain, slashed);
    let (a, b) = (
        cbase_core::ValueHash::of(&plain),
        cbase_core::ValueHash::of(&slashed),
    );
    assert_ne!(a, b);
    assert_eq!(a.0 % 64, b.0 % 64, "one shard of the table's 64");
    assert!(!conflicts(
        &put(0, "home/u2", 1).access_set(),
        &get("home/u2/").access_set()
    ));
}

fn ctx() -> Context {
    Context::new(0, [0; 32])
}

fn put(seq: u64, path: &str, size: u64) -> FileRequest {
    FileRequest::Put {
        seq,
        path: PathBuf::from(path),
        size,
    }
}

fn get(path: &str) -> FileRequest {
    FileRequest::Get {
        path: PathBuf::from(path),
    }
}

/// The reply tagged `tag`, waiting at most `patience` for it.
fn reply_of(
    rx: &Replies,
    tag: u64,
    patience: Duration,
    seen: &mut Vec<(u64, Result<Option<u64>, ExecError>)>,
) -> Option<Result<Option<u64>, ExecError>> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(at) = seen.iter().position(|(t, _)| *t == tag) {
            return Some(seen.remove(at).1);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(reply) => seen.push(reply),
            Err(_) => return None,
        }
    }
}

/// Submits `order`'s first request, waits for its reply, then the rest: the
/// entry `home/u2` exists before the others run, on every replica. (Two
/// requests that *create* such keys at once are not ordered by their rules,
/// which `TableKey` documents; this schedule is about an entry that is
/// there.)
fn submit_after_the_first_committed(
    executor: &Executor<FileService>,
    rx: &Replies,
    order: &[FileRequest],
    seen: &mut Vec<(u64, Result<Option<u64>, ExecError>)>,
) {
    executor.submit(0, ctx(), order[0].clone()).unwrap();
    let first = reply_of(rx, 0, Duration::from_secs(30), seen).expect("a reply");
    assert_eq!(first, Ok(None), "the first put creates the entry");
    for (tag, request) in order.iter().enumerate().skip(1) {
        executor.submit(tag as u64, ctx(), request.clone()).unwrap();
    }
}

/// One agreed order, two replicas: the reply to a read of `home/u2/` must not
/// depend on how many workers a replica runs.
///
/// Agreed order: 0 `put(home/u2, 1)`, 1 `put(home/u2, 7777)`, 2 `get(home/u2/)`.
/// `home/u2/` and `home/u2` are the same `PathBuf` (`Ord` and `Eq` compare
/// path components, and a trailing `/` adds none), and their keys' hashes
/// happen to pick the same one of the table's 64 shards, so the table stores
/// both under one entry; but their encodings differ, so their keys hash apart
/// and `conflicts` calls requests 1 and 2 independent.
///
/// 1. Replica A (one worker) runs them in order: `get(home/u2/)` sees 7777.
/// 2. Replica B (two workers) runs 1 and 2 side by side; request 1 is held
///    inside its method (a slow request) until request 2 has replied, which
///    happens at once because nothing orders it after request 1: 1.
/// 3. Correct: the same reply on both replicas (either the two requests
///    conflict, or the read of `home/u2/` cannot see the entry written as `home/u2`).
#[test]
fn get_of_a_trailing_slash_path_during_a_slow_put_of_the_same_path_replies_alike_on_one_and_two_workers()
 {
    let order = [
        put(0, "home/u2", 1),
        put(1, "home/u2", GATED),
        get("home/u2/"),
    ];

    // Replica A: one worker, no gate.
    let (sequential, rx) = start(1, None);
    let mut seen = Vec::new();
    submit_after_the_first_committed(&sequential, &rx, &order, &mut seen);
    let on_one = reply_of(&rx, 2, Duration::from_secs(30), &mut seen).expect("a reply");
    // In agreed order the read sees the put, or is refused for naming the
    // entry by another encoding than the one it is stored under.
    assert!(
        matches!(&on_one, Ok(Some(GATED)))
            || matches!(&on_one, Err(ExecError::Panicked { message, .. })
                if message.contains("encodes differently")),
        "{on_one:?}"
    );

    // Replica B: two workers; the slow put is held until the read replied
    // or, if the read is (correctly) ordered after it, for two seconds.
    let (open, gate) = mpsc::channel();
    let (parallel, rx) = start(2, Some(gate));
    let mut seen = Vec::new();
    submit_after_the_first_committed(&parallel, &rx, &order, &mut seen);
    let early = reply_of(&rx, 2, Duration::from_secs(2), &mut seen);
    open.send(()).unwrap();
    let on_two = match early {
        Some(reply) => reply,
        None => reply_of(&rx, 2, Duration::from_secs(30), &mut seen).expect("a reply"),
    };
    let independent = !conflicts(&order[1].access_set(), &order[2].access_set());
    assert_eq!(
        on_two, on_one,
        "the same agreed order gives different replies on a replica with 2 workers and one \
         with 1 (conflicts(put home/u2, get home/u2/) = {})",
        !independent
    );
}

/// A second spelling of a stored path, written by a later request, must
/// fail that request alone (or succeed), never stop the worker.
///
/// 1. `put(0, home/u2, 1)` stores the entry `home/u2` and its digest under the
///    bytes of "home/u2".
/// 2. `put(1, home/u2/, 2)` stages `audit[1]` and `files[home/u2/]`. At commit,
///    `audit` is applied first; then the table's map finds the equal key
///    `home/u2` and replaces its value, and the digest log is told the old value
///    of the bytes "home/u2/", which it never held: `EntryLog::change` panics,
///    outside the executor's `catch_unwind`, and the worker thread dies.
/// 3. Correct: a reply to every request (the third, `get(home/u2)`, too), and no
///    `audit[1]` unless request 1 succeeded.
#[test]
fn put_of_a_trailing_slash_path_after_a_put_of_the_same_path_replies_and_the_worker_survives() {
    let (executor, rx) = start(1, None);
    executor.submit(0, ctx(), put(0, "home/u2", 1)).unwrap();
    executor.submit(1, ctx(), put(1, "home/u2/", 2)).unwrap();
    executor.submit(2, ctx(), get("home/u2")).unwrap();
    let mut seen = Vec::new();
    let first = reply_of(&rx, 0, Duration::from_secs(30), &mut seen);
    assert_eq!(first, Some(Ok(None)));
    let second = reply_of(&rx, 1, Duration::from_secs(10), &mut seen);
    let third = reply_of(&rx, 2, Duration::from_secs(10), &mut seen);
    let audited = executor.service().state.audit.get(&1);
    let stuck = executor.in_flight();
    // A dead worker never finishes its task: dropping the executor would
    // wait for it forever.
    std::mem::forget(executor);
    assert!(
        second.is_some() && third.is_some(),
        "request 1 replied {second:?}, request 2 {third:?}: no reply means the worker died in \
         the commit; {stuck} requests stuck in flight; audit[1] = {audited:?} (applied although \
         request 1 never replied)"
    );
    if !matches!(second, Some(Ok(_))) {
        assert_eq!(audited, None, "a failed request left its audit entry");
    }
}

/// A container of the user's whose `commit` panics (say, a disk write that
/// fails) must not stop the worker, nor leave half the request applied.
mod user_container {
    use super::*;
    use cbase_core::EntryLog;
    use cbase_core::codec::CodecError;
    use cbase_core::container::BindError;
    use cbase_core::{Entries, txn};
    use std::any::Any;
    use std::cell::RefCell;

    /// A one-number container whose commit panics on the value 13.
    #[derive(Default)]
    pub struct Fragile {
        value: Mutex<u64>,
        log: EntryLog,
    }

    impl Fragile {
        pub fn set(&self, value: u64) {
            let staged = txn::stage::<RefCell<Option<u64>>>(cbase_core::TableId::of("fragile"))
                .expect("inside a request");
            *staged.borrow_mut() = Some(value);
        }
    }

    impl Container for Fragile {
        fn bind(&self, name: &'static str) -> Result<(), BindError> {
            assert_eq!(name, "fragile");
            Ok(())
        }
        fn name(&self) -> Option<&'static str> {
            Some("fragile")
        }
        fn prepare(&self, staged: &txn::Staged) -> Result<Box<dyn Any>, CodecError> {
            let staged = staged.downcast_ref::<RefCell<Option<u64>>>().unwrap();
            Ok(Box::new(staged.borrow_mut().take()))
        }
        fn commit(&self, prepared: Box<dyn Any>) {
            if let Some(value) = *prepared.downcast::<Option<u64>>().unwrap() {
                assert_ne!(value, 13, "the device refused the write");
                *self.value.lock().unwrap() = value;
            }
        }
        fn entry_log(&self) -> &EntryLog {
            &self.log
        }
        fn encode_entries(&self) -> Result<Entries, CodecError> {
            Ok(Entries::new())
        }
        fn decode_entries(&self, _: &Entries) -> Result<Box<dyn Any + Send>, CodecError> {
            Ok(Box::new(()))
        }
        fn install(&self, _: Box<dyn Any + Send>) {}
    }

    pub struct Both {
        pub audit: Table<u64, u64>,
        pub fragile: Fragile,
    }

    impl State for Both {
        fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
            vec![("audit", &self.audit), ("fragile", &self.fragile)]
        }
    }

    #[derive(Debug)]
    pub struct Record(pub u64);

    impl Request for Record {
        fn access_set(&self) -> AccessSet {
            AccessSet::none()
                .write(Key::entry("audit", &self.0))
                .write(Key::table("fragile"))
        }
        fn method(&self) -> &'static str {
            "record"
        }
    }

    pub struct BothService(pub Arc<Both>);

    impl Service for BothService {
        type Request = Record;
        type Response = ();
        fn execute(&self, Record(value): Record, _: &Context) {
            self.0.audit.insert(value, value);
            self.0.fragile.set(value);
        }
        fn state(&self) -> &dyn State {
            &*self.0
        }
    }
}

/// 1. `record(13)` stages `audit[13]` and `fragile = 13`, and returns.
/// 2. At commit, `audit` is applied, then `fragile`'s commit panics.
/// 3. Correct: `record(13)` gets an error reply and leaves no `audit[13]`;
///    `record(14)`, after it in the order, runs.
#[test]
fn record_whose_second_container_panics_in_commit_fails_alone_and_leaves_no_trace() {
    use user_container::*;
    let state = Arc::new(Both {
        audit: Table::new(),
        fragile: Fragile::default(),
    });
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let executor = ExecutorBuilder::new()
        .workers(1)
        .window(4)
        .start(BothService(Arc::clone(&state)), move |reply| {
            let _ = tx.lock().unwrap().send((reply.tag, reply.result.is_ok()));
        })
        .unwrap();
    executor.submit(13, ctx(), Record(13)).unwrap();
    executor.submit(14, ctx(), Record(14)).unwrap();
    let mut replies = Vec::new();
    while let Ok(reply) = rx.recv_timeout(Duration::from_secs(10)) {
        replies.push(reply);
        if replies.len() == 2 {
            break;
        }
    }
    let stuck = executor.in_flight();
    let audited = state.audit.get(&13);
    std::mem::forget(executor);
    assert_eq!(
        replies,
        vec![(13, false), (14, true)],
        "{stuck} requests stuck in flight; audit[13] = {audited:?}"
    );
    assert_eq!(
        audited, None,
        "the failed request's first container was applied"
    );
}
