//! Soundness of the parallelizer + executor, observed from inside the requests.
//!
//! Every request records a logical start and end time (a shared atomic
//! counter); afterwards, for every dependent pair i < j in submission order,
//! i must have ended before j started. Random workloads with wildcards,
//! entries and prefixes of a table keyed by tuples, run with W = 1, 2, 8 and
//! 32 workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cbase_core::{
    AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table, conflicts,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TABLES: [&str; 3] = ["a", "b", "c"];

struct Probe {
    /// Position in the agreed order, for the recorded span.
    index: usize,
    access: AccessSet,
    /// What this probe declared, touched while it runs.
    touches: Vec<Touch>,
    spin: u32,
}

impl Request for Probe {
    fn access_set(&self) -> AccessSet {
        self.access.clone()
    }
    fn method(&self) -> &'static str {
        "probe"
    }
}

/// One declared access, made while the probe runs.
#[derive(Clone, Copy)]
enum Touch {
    /// A cell of table `a`, `b` or `c` (by index): read, or written.
    Cell(usize, u64, bool),
    /// A seat `(show, seat)` of `seats`: read, or written.
    Seat(u64, u32, bool),
    /// The seats of a show: counted, or (declared as a written prefix) one
    /// of them written.
    Show(u64, bool),
}

struct Tables {
    a: Table<u64, u64>,
    b: Table<u64, u64>,
    c: Table<u64, u64>,
    seats: Table<(u64, u32), u64>,
}

impl State for Tables {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![
            ("a", &self.a),
            ("b", &self.b),
            ("c", &self.c),
            ("seats", &self.seats),
        ]
    }
}

struct Recorder {
    clock: AtomicU64,
    spans: Vec<(AtomicU64, AtomicU64)>,
    state: Tables,
}

struct RecorderService(Arc<Recorder>);

impl Service for RecorderService {
    type Request = Probe;
    type Response = ();

    fn execute(&self, probe: Probe, _ctx: &Context) {
        let index = probe.index;
        let recorder = &self.0;
        let start = recorder.clock.fetch_add(1, Ordering::SeqCst);
        recorder.spans[index].0.store(start, Ordering::SeqCst);
        // Touch what was declared, so the checks run too; and spin a little so
        // requests overlap when they are allowed to.
        let seats = &recorder.state.seats;
        for &touch in &probe.touches {
            match touch {
                Touch::Cell(table, value, write) => {
                    let table = [&recorder.state.a, &recorder.state.b, &recorder.state.c][table];
                    if write {
                        table.upsert(value, || 0, |n| *n += 1);
                    } else {
                        std::hint::black_box(table.get(&value));
                    }
                }
                Touch::Seat(show, seat, true) => seats.upsert((show, seat), || 0, |n| *n += 1),
                Touch::Seat(show, seat, false) => {
                    std::hint::black_box(seats.get(&(show, seat)));
                }
                Touch::Show(show, write) => {
                    let sold = seats.prefix((show,)).fold(0, |sum, _, n| sum + n);
                    if write {
                        seats.insert((show, (sold % 4) as u32), sold + 1);
                    }
                }
            }
        }
        let mut x = 0u64;
        for i in 0..probe.spin {
            x = x.wrapping_mul(31).wrapping_add(u64::from(i));
            std::hint::black_box(x);
        }
        if probe.spin.is_multiple_of(7) {
            std::thread::yield_now();
        }
        let end = recorder.clock.fetch_add(1, Ordering::SeqCst);
        recorder.spans[index].1.store(end, Ordering::SeqCst);
    }

    fn state(&self) -> &dyn State {
        &self.0.state
    }
}

fn random_key(rng: &mut StdRng, write: bool, touches: &mut Vec<Touch>) -> Key {
    let table = rng.gen_range(0..TABLES.len());
    let value = rng.gen_range(0..6u64);
    let (show, seat) = (rng.gen_range(0..3u64), rng.gen_range(0..4u32));
    match rng.gen_range(0..100) {
        0..2 => Key::All,
        2..6 => Key::table(TABLES[table]),
        6..8 => Key::table("seats"),
        8..12 => Key::value(&value),
        12..14 => Key::value(&(show, seat)),
        14..17 => Key::entry("unknown", &value),
        17..32 => {
            touches.push(Touch::Show(show, write));
            Key::prefix("seats", &(show,))
        }
        32..50 => {
            touches.push(Touch::Seat(show, seat, write));
            Key::entry("seats", &(show, seat))
        }
        _ => {
            touches.push(Touch::Cell(table, value, write));
            Key::entry(TABLES[table], &value)
        }
    }
}

fn random_probe(rng: &mut StdRng, index: usize) -> Probe {
    let spin = rng.gen_range(0..2000);
    let mut touches = Vec::new();
    if rng.gen_range(0..50) == 0 {
        return Probe {
            index,
            access: AccessSet::exclusive(),
            touches,
            spin,
        };
    }
    let reads = (0..rng.gen_range(0..4))
        .map(|_| random_key(rng, false, &mut touches))
        .collect();
    let writes = (0..rng.gen_range(0..3))
        .map(|_| random_key(rng, true, &mut touches))
        .collect();
    Probe {
        index,
        access: AccessSet::new(reads, writes),
        touches,
        spin,
    }
}

fn run(seed: u64, workers: usize, requests: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let probes: Vec<Probe> = (0..requests).map(|i| random_probe(&mut rng, i)).collect();
    let accesses: Vec<AccessSet> = probes.iter().map(|p| p.access.clone()).collect();
    let recorder = Arc::new(Recorder {
        clock: AtomicU64::new(0),
        spans: (0..requests)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
        state: Tables {
            a: Table::new(),
            b: Table::new(),
            c: Table::new(),
            seats: Table::new(),
        },
    });
    let failures = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&failures);
    let executor = ExecutorBuilder::new()
        .workers(workers)
        .window(64)
        .start(RecorderService(Arc::clone(&recorder)), move |reply| {
            if reply.result.is_err() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    for (index, probe) in probes.into_iter().enumerate() {
        debug_assert_eq!(index, probe.index);
        executor
            .submit(index as u64, Context::new(0, [0; 32]), probe)
            .unwrap();
    }
    executor.wait_idle();
    executor.shutdown();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "a declared access was refused"
    );

    let spans: Vec<(u64, u64)> = recorder
        .spans
        .iter()
        .map(|(s, e)| (s.load(Ordering::SeqCst), e.load(Ordering::SeqCst)))
        .collect();
    for j in 0..requests {
        assert!(spans[j].0 < spans[j].1, "request {j} did not run");
        for i in 0..j {
            if conflicts(&accesses[i], &accesses[j]) {
                assert!(
                    spans[i].1 < spans[j].0,
                    "seed {seed}, W = {workers}: request {j} started at {} before dependent \
                     earlier request {i} ended at {}\n  {i}: {:?}\n  {j}: {:?}",
                    spans[j].0,
                    spans[i].1,
                    accesses[i],
                    accesses[j]
                );
            }
        }
    }
}

#[test]
fn dependent_requests_never_overlap_and_keep_agreed_order() {
    for workers in [1, 2, 8, 32] {
        for seed in 0..12 {
            run(seed * 1000 + workers as u64, workers, 400);
        }
    }
}
