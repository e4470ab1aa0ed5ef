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
