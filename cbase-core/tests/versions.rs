//! Reading a recent checkpoint from the live state and the earlier values
//! kept (`State::keep_versions` / `snapshot_at`): the result is the state
//! as it was when the checkpoint was taken, whatever was written since,
//! and whatever is being written while it is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cbase_core::{Cell, Container, Snapshot, State, Table};
use proptest::prelude::*;

struct Books {
    titles: Table<u32, String>,
    count: Cell<u64>,
}

impl State for Books {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("titles", &self.titles), ("count", &self.count)]
    }
}

fn books() -> Books {
    let state = Books {
        titles: Table::named("titles"),
        count: Cell::named("count", 0),
    };
    for key in 0..20 {
        state.titles.insert(key, format!("book {key}"));
    }
    state
}

/// One step of a history: a write (or removal), a checkpoint, or letting go
/// of the checkpoints before the newest but `keep`.
#[derive(Clone, Debug)]
enum Step {
    Write(u32, Option<u8>),
    Checkpoint,
    Forget { keep: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u32..30, proptest::option::of(any::<u8>())).prop_map(|(k, v)| Step::Write(k, v)),
        1 => Just(Step::Checkpoint),
        1 => (0usize..3).prop_map(|keep| Step::Forget { keep }),
    ]
}

proptest! {
    #[test]
    fn every_checkpoint_kept_reads_as_it_was_taken(steps in proptest::collection::vec(step(), 0..120)) {
        let state = books();
        state.keep_versions(0);
        // What each checkpoint was, by sequence number, and which are let go.
        let mut taken: Vec<(u64, Snapshot)> = vec![(0, state.snapshot().unwrap())];
        let mut floor = 0;
        for step in steps {
            match step {
                Step::Write(key, Some(value)) => {
                    state.titles.insert(key, format!("{value}"));
                    state.count.update(|c| *c += 1);
                }
                Step::Write(key, None) => {
                    state.titles.remove(&key);
                }
                Step::Checkpoint => {
                    let seq = taken.last().unwrap().0 + 4;
                    state.checkpoint_taken(seq);
                    taken.push((seq, state.snapshot().unwrap()));
                }
                Step::Forget { keep } => {
                    let at = taken.len().saturating_sub(keep + 1);
                    floor = floor.max(taken[at].0);
                    state.forget_versions_before(floor);
                }
            }
        }
        for (seq, snapshot) in &taken {
            let read = state.snapshot_at(*seq).unwrap();
            if *seq < floor {
                prop_assert!(read.is_none(), "checkpoint {} was let go", seq);
            } else {
                prop_assert_eq!(read.as_ref(), Some(snapshot), "checkpoint {}", seq);
            }
        }
        let next = taken.last().unwrap().0 + 4;
        prop_assert!(state.snapshot_at(next).unwrap().is_none(), "not taken yet");
    }
}

#[test]
fn a_checkpoint_read_while_requests_write_is_the_checkpoint() {
    let state = Arc::new(books());
    state.keep_versions(0);
    state.checkpoint_taken(4);
    let at_4 = state.snapshot().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) && round < 200_000 {
                let key = round.wrapping_mul(2_654_435_761) % 40;
                if round.is_multiple_of(7) {
                    state.titles.remove(&key);
                } else {
                    state.titles.insert(key, format!("round {round}"));
                }
                state.count.set(u64::from(round));
                round += 1;
            }
        })
    };
    // However the reads and the writes interleave, each read is checkpoint 4.
    for _ in 0..200 {
        assert_eq!(state.snapshot_at(4).unwrap().as_ref(), Some(&at_4));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(state.snapshot_at(4).unwrap().as_ref(), Some(&at_4));
}

#[test]
fn replacing_the_contents_drops_the_versions_until_kept_again() {
    let state = books();
    state.keep_versions(0);
    state.titles.insert(1, "changed".into());
    let other = books();
    other.titles.insert(99, "elsewhere".into());
    state.restore(&other.snapshot().unwrap()).unwrap();
    assert!(
        state.snapshot_at(0).unwrap().is_none(),
        "versions of replaced contents would read a state that is gone"
    );
    state.keep_versions(8);
    assert_eq!(
        state.snapshot_at(8).unwrap(),
        Some(other.snapshot().unwrap())
    );
}

/// A table whose checkpoint read stops, once armed, where any thread can
/// be descheduled, and waits there until the test lets it go on.
/// Everything else is the table's own.
struct PausedTable {
    inner: Table<u32, String>,
    pause: std::sync::Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    at: PauseAt,
}

/// Where a [`PausedTable`] stops.
#[derive(PartialEq)]
enum PauseAt {
    /// Between encoding the live contents and asking the log for the
    /// versions.
    AfterLiveRead,
    /// The first time its log is asked for: where a checkpoint read that
    /// has finished the containers before this one turns to it.
    BeforeLog,
}

impl PausedTable {
    fn new(name: &'static str, at: PauseAt) -> PausedTable {
        PausedTable {
            inner: Table::named(name),
            pause: std::sync::Mutex::new(None),
            at,
        }
    }

    /// Waits here if armed to stop `at` this point (once).
    fn pause_if(&self, at: PauseAt) {
        if self.at != at {
            return;
        }
        let pause = self.pause.lock().unwrap().take();
        if let Some((reached, go)) = pause {
            reached.send(()).unwrap();
            go.recv().unwrap();
        }
    }
}

use std::sync::mpsc;

impl Container for PausedTable {
    fn bind(&self, name: &'static str) -> Result<(), cbase_core::container::BindError> {
        self.inner.bind(name)
    }
    fn name(&self) -> Option<&'static str> {
        self.inner.name()
    }
    fn prepare(
        &self,
        staged: &cbase_core::txn::Staged,
    ) -> Result<Box<dyn std::any::Any>, cbase_core::codec::CodecError> {
        self.inner.prepare(staged)
    }
    fn commit(&self, prepared: Box<dyn std::any::Any>) {
        self.inner.commit(prepared)
    }
    fn entry_log(&self) -> &cbase_core::EntryLog {
        self.pause_if(PauseAt::BeforeLog);
        self.inner.entry_log()
    }
    fn encode_entries(&self) -> Result<cbase_core::Entries, cbase_core::codec::CodecError> {
        self.inner.encode_entries()
    }
    fn encode_entries_while_running(
        &self,
    ) -> Result<cbase_core::Entries, cbase_core::codec::CodecError> {
        let live = self.inner.encode_entries_while_running();
        self.pause_if(PauseAt::AfterLiveRead);
        live
    }
    fn decode_entries(
        &self,
        entries: &cbase_core::Entries,
    ) -> Result<Box<dyn std::any::Any + Send>, cbase_core::codec::CodecError> {
        self.inner.decode_entries(entries)
    }
    fn install(&self, staged: Box<dyn std::any::Any + Send>) {
        self.inner.install(staged)
    }
    fn decode_changes(
        &self,
        changes: &cbase_core::Changes,
    ) -> Result<Box<dyn std::any::Any + Send>, cbase_core::codec::CodecError> {
        self.inner.decode_changes(changes)
    }
    fn apply_changes(&self, staged: Box<dyn std::any::Any + Send>) {
        self.inner.apply_changes(staged)
    }
}

struct PausedState {
    titles: PausedTable,
}

impl State for PausedState {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("titles", &self.titles)]
    }
}

/// A replica executed past its checkpoint 8, then installs checkpoint 8
/// (what the runtime does for a replica that learned its state diverged:
/// `Execution::install` replaces the state even at or below the last batch
/// executed) and keeps versions from 8 on. A read of checkpoint 8 that
/// encoded the live contents before the install and asks the log after it
/// finds versions that start at 8 with nothing changed, and takes the live
/// contents it read (which include a change made after 8) for checkpoint 8.
/// `snapshot_at` promises nothing (`None`) when the state was replaced
/// since; here it returns a state that checkpoint 8 never was.
#[test]
fn a_checkpoint_read_that_straddles_an_install_of_the_same_checkpoint_is_that_checkpoint_or_nothing()
 {
    let state = Arc::new(PausedState {
        titles: PausedTable::new("titles", PauseAt::AfterLiveRead),
    });
    for key in 0..20 {
        state.titles.inner.insert(key, format!("book {key}"));
    }
    state.keep_versions(0);
    state.titles.inner.insert(1, "changed before 8".into());
    state.checkpoint_taken(8);
    let at_8 = state.snapshot().unwrap();
    state.titles.inner.insert(2, "changed after 8".into());

    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *state.titles.pause.lock().unwrap() = Some((reached_tx, go_rx));
    let reader = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || state.snapshot_at(8).unwrap())
    };
    reached.recv().unwrap();
    // The live contents are read; the install barrier runs now.
    state.restore(&at_8).unwrap();
    state.keep_versions(8);
    go.send(()).unwrap();
    let read = reader.join().unwrap();

    let changed_after = read.as_ref().is_some_and(|snapshot| {
        let decoded = books_titles(snapshot);
        decoded.get(&2).map(String::as_str) == Some("changed after 8")
    });
    assert!(
        read.is_none() || read.as_ref() == Some(&at_8),
        "checkpoint 8 read across an install is neither checkpoint 8 nor nothing \
         (carries the change made after 8: {changed_after})"
    );
}

/// The titles of a snapshot of a `PausedState`.
fn books_titles(snapshot: &Snapshot) -> std::collections::BTreeMap<u32, String> {
    let decoded = PausedState {
        titles: PausedTable::new("titles", PauseAt::AfterLiveRead),
    };
    decoded.restore(snapshot).unwrap();
    decoded.titles.inner.entries().into_iter().collect()
}

/// A read of checkpoint 8 stops after its live read; meanwhile a write,
/// a removal and a re-insertion land on either side of checkpoint 12, and
/// the checkpoints before 8 (then before 12) are let go. The read is
/// checkpoint 8 while 8 is kept, and nothing once it is let go.
#[test]
fn a_paused_checkpoint_read_survives_later_checkpoints_and_is_nothing_once_let_go() {
    for let_go_of_8 in [false, true] {
        let state = Arc::new(PausedState {
            titles: PausedTable::new("titles", PauseAt::AfterLiveRead),
        });
        for key in 0..20 {
            state.titles.inner.insert(key, format!("book {key}"));
        }
        state.keep_versions(0);
        state.titles.inner.insert(1, "before 8".into());
        state.checkpoint_taken(8);
        let at_8 = state.snapshot().unwrap();
        state.titles.inner.insert(3, "after 8".into());

        let (reached_tx, reached) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *state.titles.pause.lock().unwrap() = Some((reached_tx, go_rx));
        let reader = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || state.snapshot_at(8).unwrap())
        };
        reached.recv().unwrap();
        state.titles.inner.insert(1, "after 8 too".into());
        state.titles.inner.remove(&4);
        state.checkpoint_taken(12);
        state.titles.inner.insert(4, "back after 12".into());
        state.titles.inner.insert(30, "new after 12".into());
        state.titles.inner.remove(&3);
        state.forget_versions_before(if let_go_of_8 { 12 } else { 8 });
        go.send(()).unwrap();
        let read = reader.join().unwrap();
        if let_go_of_8 {
            assert!(read.is_none(), "checkpoint 8 was let go");
        } else {
            assert_eq!(read.as_ref(), Some(&at_8));
        }
    }
}

struct TwoTables {
    first: Table<u32, String>,
    second: PausedTable,
}

impl State for TwoTables {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("first", &self.first), ("second", &self.second)]
    }
}

fn two_tables(prefix: &str) -> TwoTables {
    let state = TwoTables {
        first: Table::named("first"),
        second: PausedTable::new("second", PauseAt::BeforeLog),
    };
    for key in 0..10 {
        state.first.insert(key, format!("{prefix} {key}"));
        state.second.inner.insert(key, format!("{prefix} {key}"));
    }
    state
}

/// A replica whose checkpoint 8 diverged installs the agreed checkpoint 8
/// while a read of checkpoint 8 has read the first table and not yet
/// turned to the second. The read is the replica's own checkpoint 8, the
/// agreed one, or nothing: never the first table of one and the second of
/// the other.
#[test]
fn a_checkpoint_read_across_an_install_is_not_part_one_state_and_part_another() {
    let state = Arc::new(two_tables("diverged"));
    state.keep_versions(0);
    state.first.insert(1, "diverged before 8".into());
    state.checkpoint_taken(8);
    let own_8 = state.snapshot().unwrap();
    let agreed_8 = two_tables("agreed").snapshot().unwrap();

    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *state.second.pause.lock().unwrap() = Some((reached_tx, go_rx));
    let reader = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || state.snapshot_at(8).unwrap())
    };
    reached.recv().unwrap();
    state.restore(&agreed_8).unwrap();
    state.keep_versions(8);
    go.send(()).unwrap();
    let read = reader.join().unwrap();

    assert!(
        read.is_none() || read.as_ref() == Some(&own_8) || read.as_ref() == Some(&agreed_8),
        "checkpoint 8 read across an install is a mix of two states"
    );
    assert_eq!(state.snapshot_at(8).unwrap().as_ref(), Some(&agreed_8));
}
