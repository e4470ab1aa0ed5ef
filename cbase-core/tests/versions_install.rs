//! A checkpoint read from the live state while a state transfer installs
//! new contents into the same container.
//!
//! `Table::install` replaces the contents shard by shard and only then
//! replaces the digest tree and drops the versions (`EntryLog::install`).
//! A `snapshot_at` that encodes the table in between reads the *new*
//! contents and then puts back the *old* versions: the result is neither
//! the checkpoint asked for nor nothing.
//!
//! The window has no lock a test could wait on, so this binary's allocator
//! stops the installing thread at a precise point inside it: when it frees
//! the buffer of the shards it has just moved into the table (after the
//! last shard is replaced, before `EntryLog::install`). No sleeps: the two
//! threads hand over with atomics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cbase_core::merkle::DigestTree;
use cbase_core::{Container, State, Table};

/// The address of the allocation whose freeing stops the thread that frees
/// it (0: none).
static WATCH: AtomicUsize = AtomicUsize::new(0);
/// The watched allocation is being freed: its thread waits for `GO`.
static REACHED: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);

struct Pausing;

unsafe impl GlobalAlloc for Pausing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let watched = WATCH.load(Ordering::SeqCst);
        if watched != 0
            && ptr as usize == watched
            && WATCH
                .compare_exchange(watched, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            REACHED.store(true, Ordering::SeqCst);
            while !GO.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Pausing = Pausing;

struct Titles {
    titles: Table<u32, String>,
}

impl State for Titles {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("titles", &self.titles)]
    }
}

fn titles(prefix: &str) -> Titles {
    let state = Titles {
        titles: Table::named("titles"),
    };
    for key in 0..20 {
        state.titles.insert(key, format!("{prefix} {key}"));
    }
    state
}

/// What `Table::decode_entries` hands to `install`.
type TableStaged = (Vec<BTreeMap<u32, String>>, DigestTree);

#[test]
fn a_checkpoint_read_while_a_table_is_installed_is_that_checkpoint_or_nothing() {
    let state = Arc::new(titles("book"));
    state.keep_versions(0);
    state.titles.insert(1, "changed before 4".into());
    state.checkpoint_taken(4);
    let at_4 = state.snapshot().unwrap();
    // The state goes on after checkpoint 4.
    state.titles.insert(2, "changed after 4".into());

    // A state transfer brings checkpoint 12 of other contents.
    let fetched = titles("fetched").titles.encode_entries().unwrap();
    let staged = state.titles.decode_entries(&fetched).unwrap();
    let shards = staged
        .downcast_ref::<TableStaged>()
        .expect("a table stages its shards and their digest tree")
        .0
        .as_ptr();
    WATCH.store(shards as usize, Ordering::SeqCst);

    let installer = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            // What `State::restore` and the runtime's install barrier do.
            state.titles.install(staged);
            state.keep_versions(12);
            // Had the allocation not been freed in `install`, the reader
            // still goes on (after the install, where it must get nothing).
            WATCH.store(0, Ordering::SeqCst);
            REACHED.store(true, Ordering::SeqCst);
        })
    };
    while !REACHED.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // The installer is inside `Table::install`: every shard holds the
    // fetched contents, the log still has the versions of the old ones.
    let read = state.snapshot_at(4).unwrap();
    GO.store(true, Ordering::SeqCst);
    installer.join().unwrap();

    let contents = |snapshot: &cbase_core::Snapshot| {
        let decoded = titles("");
        decoded.restore(snapshot).unwrap();
        decoded.titles.entries()
    };
    assert!(
        read.is_none() || read.as_ref() == Some(&at_4),
        "checkpoint 4 read during an install is neither checkpoint 4 nor nothing:\n\
         read     {:?}\ncheckpoint 4 {:?}",
        read.as_ref().map(contents),
        contents(&at_4)
    );
    assert!(
        state.snapshot_at(4).unwrap().is_none(),
        "let go by the install"
    );
}
