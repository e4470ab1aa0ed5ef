//! Tests of both parallelizers: targeted cases for the lock design's corners,
//! and a property test driving random workloads through both against the
//! definition of [`conflicts`].

use proptest::prelude::*;

use super::cells::WAYS;
use super::*;
use crate::access::conflicts;
use crate::key::ValueHash;

fn t(name: &str) -> TableId {
    TableId::of(name)
}

fn v(n: u64) -> ValueHash {
    ValueHash(n)
}

fn entry(table: &str, n: u64) -> Key {
    Key::Entry(t(table), v(n))
}

fn reads(keys: &[Key]) -> AccessSet {
    AccessSet::new(keys.to_vec(), Vec::new())
}

fn writes(keys: &[Key]) -> AccessSet {
    AccessSet::new(Vec::new(), keys.to_vec())
}

/// A parallelizer knowing tables `a` and `b` (so `u`, `w` are unknown).
fn two_tables(capacity: usize) -> Parallelizer {
    Parallelizer::new(capacity, &[t("a"), t("b")])
}

fn schedule(p: &mut Parallelizer, access: &AccessSet) -> (TaskId, bool) {
    let s = p.schedule(access).expect("window has room");
    (s.task, s.ready)
}

fn complete(p: &mut Parallelizer, task: TaskId) -> Vec<TaskId> {
    let mut ready = Vec::new();
    p.complete(task, &mut ready);
    ready
}

/// Whether `second`, scheduled while `first` runs, has to wait for it.
fn waits(p: &mut Parallelizer, first: &AccessSet, second: &AccessSet) -> bool {
    let (a, a_ready) = schedule(p, first);
    assert!(a_ready, "{first:?} alone must be ready");
    let (b, b_ready) = schedule(p, second);
    let woken = complete(p, a);
    if b_ready {
        assert!(woken.is_empty());
    } else {
        assert_eq!(woken, vec![b]);
    }
    assert!(complete(p, b).is_empty());
    assert_eq!(p.in_flight(), 0);
    !b_ready
}

#[test]
fn empty_access_set_is_always_ready() {
    let mut p = two_tables(4);
    let (x, ready) = schedule(&mut p, &AccessSet::exclusive());
    assert!(ready);
    let (_, ready) = schedule(&mut p, &AccessSet::none());
    assert!(ready, "a request touching nothing conflicts with nothing");
    assert!(complete(&mut p, x).is_empty());
}

#[test]
fn same_key_twice_does_not_block_itself() {
    let mut p = two_tables(4);
    // transfer(from = 1, to = 1)
    let transfer = writes(&[entry("a", 1), entry("a", 1)]);
    let (x, ready) = schedule(&mut p, &transfer);
    assert!(ready);
    assert!(complete(&mut p, x).is_empty());
    // The same for a bare value, which expands to one cell per table slot.
    let bare = writes(&[Key::Value(v(1)), Key::Value(v(1))]).read(Key::Value(v(1)));
    assert!(schedule(&mut p, &bare).1);
}

#[test]
fn read_and_write_of_the_same_key_do_not_block_themselves() {
    let mut p = two_tables(4);
    for key in [
        entry("a", 1),
        entry("u", 1),
        Key::Value(v(1)),
        Key::table("a"),
        Key::All,
    ] {
        let set = AccessSet::none().read(key).write(key);
        let (x, ready) = schedule(&mut p, &set);
        assert!(ready, "{set:?}");
        assert!(complete(&mut p, x).is_empty());
    }
}

#[test]
fn table_and_entry_of_the_same_table_join_into_six() {
    let mut p = two_tables(8);
    // Reads all of `a` and writes a[1]: TABLE(a) in SIX, not R then IW.
    let mixed = AccessSet::none().read(Key::table("a")).write(entry("a", 1));
    let (x, ready) = schedule(&mut p, &mixed);
    assert!(ready, "must not queue behind itself");
    // SIX admits intention-read: reading another entry of `a` does not conflict.
    assert!(schedule(&mut p, &reads(&[entry("a", 2)])).1);
    // Writing another entry of `a` conflicts with the table read.
    let (y, ready) = schedule(&mut p, &writes(&[entry("a", 2)]));
    assert!(!ready);
    // Reading the table conflicts with the write of a[1].
    let (z, ready) = schedule(&mut p, &reads(&[Key::table("a")]));
    assert!(!ready);
    let woken = complete(&mut p, x);
    // y still waits for the reader of a[2]; z (table read) is compatible with
    // that reader but queued behind y: a FIFO false wait, allowed.
    assert!(!woken.contains(&y));
    let _ = z;
    // Table `b` is unaffected throughout.
    assert!(schedule(&mut p, &writes(&[entry("b", 1)])).1);
}

#[test]
fn all_with_anything_does_not_block_itself() {
    let mut p = two_tables(4);
    let sets = [
        AccessSet::none().read(Key::All).write(entry("a", 1)),
        AccessSet::none().write(Key::All).read(entry("a", 1)),
        AccessSet::none().read(Key::All).write(Key::table("b")),
        AccessSet::none().read(Key::All).write(Key::Value(v(3))),
        AccessSet::none()
            .write(Key::All)
            .write(Key::All)
            .read(Key::All),
    ];
    for set in &sets {
        let (x, ready) = schedule(&mut p, set);
        assert!(ready, "{set:?}");
        assert!(complete(&mut p, x).is_empty());
    }
}

#[test]
fn read_all_admits_readers_and_excludes_writers() {
    let mut p = two_tables(8);
    let read_all = reads(&[Key::All]);
    assert!(!waits(&mut p, &read_all, &reads(&[entry("a", 1)])));
    assert!(!waits(&mut p, &read_all, &reads(&[Key::table("u")])));
    assert!(!waits(&mut p, &read_all, &read_all));
    assert!(waits(&mut p, &read_all, &writes(&[entry("u", 1)])));
    assert!(waits(&mut p, &read_all, &writes(&[Key::Value(v(1))])));
    assert!(waits(&mut p, &writes(&[Key::table("b")]), &read_all));
}

#[test]
fn exclusive_waits_for_everything_and_blocks_everything() {
    let mut p = two_tables(8);
    let (r, _) = schedule(&mut p, &reads(&[entry("a", 1)]));
    let (x, ready) = schedule(&mut p, &AccessSet::exclusive());
    assert!(!ready);
    // Later requests do not overtake the exclusive one, even if they commute
    // with the reader.
    let (y, ready) = schedule(&mut p, &reads(&[entry("b", 9)]));
    assert!(!ready);
    assert_eq!(complete(&mut p, r), vec![x]);
    assert_eq!(complete(&mut p, x), vec![y]);
}

#[test]
fn readers_share_and_writers_queue_in_order() {
    let mut p = two_tables(8);
    let k = entry("a", 1);
    let (r1, ok1) = schedule(&mut p, &reads(&[k]));
    let (r2, ok2) = schedule(&mut p, &reads(&[k]));
    assert!(ok1 && ok2);
    let (w, ok) = schedule(&mut p, &writes(&[k]));
    assert!(!ok);
    // A reader behind a waiting writer waits: FIFO, so the writer is not starved.
    let (r3, ok) = schedule(&mut p, &reads(&[k]));
    assert!(!ok);
    assert!(complete(&mut p, r2).is_empty());
    assert_eq!(complete(&mut p, r1), vec![w]);
    assert_eq!(complete(&mut p, w), vec![r3]);
}

#[test]
fn intention_holders_may_pass_a_waiting_table_reader_only_when_compatible() {
    let mut p = two_tables(8);
    let (w1, _) = schedule(&mut p, &writes(&[entry("a", 1)])); // TABLE(a) IW
    let (tr, ok) = schedule(&mut p, &reads(&[Key::table("a")])); // R: waits
    assert!(!ok);
    // IW is incompatible with the waiting R: must not overtake it.
    let (w2, ok) = schedule(&mut p, &writes(&[entry("a", 2)]));
    assert!(!ok);
    // IR is compatible with both the IW holder and the R waiter: passes.
    let (r3, ok) = schedule(&mut p, &reads(&[entry("a", 3)]));
    assert!(ok);
    assert_eq!(complete(&mut p, w1), vec![tr]);
    assert!(complete(&mut p, r3).is_empty());
    assert_eq!(complete(&mut p, tr), vec![w2]);
}

#[test]
fn bare_values_meet_entries_in_known_and_unknown_tables() {
    let mut p = two_tables(8);
    let bare = |n| Key::Value(v(n));
    for table in ["a", "b", "u", "w"] {
        assert!(
            waits(&mut p, &writes(&[bare(1)]), &reads(&[entry(table, 1)])),
            "{table}"
        );
        assert!(
            waits(&mut p, &reads(&[entry(table, 1)]), &writes(&[bare(1)])),
            "{table}"
        );
        assert!(
            !waits(&mut p, &writes(&[bare(1)]), &writes(&[entry(table, 2)])),
            "{table}"
        );
        assert!(
            !waits(&mut p, &reads(&[bare(1)]), &reads(&[entry(table, 1)])),
            "{table}"
        );
        // A bare value touches every table, so whole-table locks meet it.
        assert!(
            waits(&mut p, &reads(&[Key::table(table)]), &writes(&[bare(5)])),
            "{table}"
        );
    }
    assert!(waits(&mut p, &writes(&[bare(1)]), &reads(&[bare(1)])));
    assert!(!waits(&mut p, &writes(&[bare(1)]), &writes(&[bare(2)])));
}

#[test]
fn distinct_entries_and_tables_do_not_wait() {
    let mut p = two_tables(8);
    assert!(!waits(
        &mut p,
        &writes(&[entry("a", 1)]),
        &writes(&[entry("a", 2)])
    ));
    assert!(!waits(
        &mut p,
        &writes(&[entry("a", 1)]),
        &writes(&[entry("b", 1)])
    ));
    assert!(!waits(
        &mut p,
        &writes(&[Key::table("a")]),
        &writes(&[Key::table("b")])
    ));
    assert!(!waits(
        &mut p,
        &writes(&[Key::table("a")]),
        &writes(&[entry("b", 1)])
    ));
    // Unknown tables share CATCHALL for whole-table locks (a false wait) ...
    assert!(waits(
        &mut p,
        &writes(&[Key::table("u")]),
        &reads(&[Key::table("w")])
    ));
    // ... but their entries are still told apart from known tables'.
    assert!(!waits(
        &mut p,
        &writes(&[Key::table("u")]),
        &writes(&[entry("a", 1)])
    ));
}

#[test]
fn window_full_at_capacity_and_slots_are_reused() {
    let mut p = two_tables(3);
    assert_eq!(p.capacity(), 3);
    let tasks: Vec<TaskId> = (0..3)
        .map(|i| schedule(&mut p, &writes(&[entry("a", i)])).0)
        .collect();
    assert!(p.is_full());
    assert_eq!(p.in_flight(), 3);
    let err = p.schedule(&AccessSet::none()).expect_err("window is full");
    assert_eq!(err, WindowFull { capacity: 3 });
    assert_eq!(
        err.to_string(),
        "parallelizer window is full (3 requests in flight)"
    );
    assert!(tasks.iter().all(|t| t.index() < 3));
    complete(&mut p, tasks[1]);
    assert!(!p.is_full());
    let (again, ready) = schedule(&mut p, &writes(&[entry("a", 1)]));
    assert!(ready);
    assert_eq!(again, tasks[1], "the freed slot is reused");
    assert!(p.schedule(&AccessSet::none()).is_err());
}

/// A reader that took a cell last and completed while another reader still
/// holds it must not leave its slot as the cell's owner: the next request in
/// that slot would take the cell for its own and skip it. On both paths.
#[test]
fn a_reused_slot_does_not_inherit_a_cells_ownership() {
    for pad in [0, FEW_KEYS as u64] {
        let mut p = two_tables(4);
        let with = |base: u64, key: Key| -> Vec<Key> {
            let mut keys: Vec<Key> = (base..base + pad).map(|n| entry("b", n)).collect();
            keys.push(key);
            keys
        };
        let (b, b_ready) = schedule(&mut p, &reads(&with(100, entry("a", 1))));
        let (a, a_ready) = schedule(&mut p, &reads(&with(200, entry("a", 1))));
        assert!(a_ready && b_ready, "readers share");
        assert!(complete(&mut p, a).is_empty());
        let (c, c_ready) = schedule(&mut p, &writes(&with(300, entry("a", 1))));
        assert_eq!(c, a, "the writer reuses the last reader's slot");
        assert!(
            !c_ready,
            "pad {pad}: the writer must wait for the other reader"
        );
        assert_eq!(complete(&mut p, b), vec![c]);
        assert!(complete(&mut p, c).is_empty());
        assert_eq!(p.cell_nodes(), 0);
    }
}

/// Two values whose cells' 32-bit keys coincide share one cell: writes to
/// them conflict (falsely, and only that), in agreed order.
#[test]
fn values_whose_cell_keys_collide_conflict_and_nothing_is_lost() {
    let p = two_tables(4);
    let salt = p.tables.salts[p.tables.slot(t("a"))];
    let mut seen = HashMap::new();
    let (x, y) = (0..1u64 << 20)
        .find_map(|n| {
            seen.insert(cell_key(salt, n), n)
                .map(|earlier| (earlier, n))
        })
        .expect("a birthday collision among a million 32-bit keys");
    assert_ne!(x, y);
    let mut p = two_tables(4);
    assert!(waits(
        &mut p,
        &writes(&[entry("a", x)]),
        &writes(&[entry("a", y)])
    ));
    assert!(waits(
        &mut p,
        &reads(&[entry("a", x)]),
        &writes(&[entry("a", y)])
    ));
    assert!(!waits(
        &mut p,
        &reads(&[entry("a", x)]),
        &reads(&[entry("a", y)])
    ));
    assert!(!waits(
        &mut p,
        &writes(&[entry("a", x)]),
        &writes(&[entry("b", y)])
    ));
}

#[test]
fn the_window_holds_at_most_max_capacity_requests() {
    let p = Parallelizer::new(Parallelizer::MAX_CAPACITY, &[]);
    assert_eq!(p.capacity(), Parallelizer::MAX_CAPACITY);
    let refused =
        std::panic::catch_unwind(|| Parallelizer::new(Parallelizer::MAX_CAPACITY + 1, &[]));
    let message = refused.expect_err("one more is refused");
    let message = message
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("capacity must be at most 32766"),
        "{message}"
    );
}

#[test]
#[should_panic(expected = "is not running")]
fn completing_a_waiting_task_panics() {
    let mut p = two_tables(4);
    schedule(&mut p, &writes(&[entry("a", 1)]));
    let (waiting, ready) = schedule(&mut p, &writes(&[entry("a", 1)]));
    assert!(!ready);
    complete(&mut p, waiting);
}

#[test]
#[should_panic(expected = "is not running")]
fn completing_a_task_twice_panics() {
    let mut p = two_tables(4);
    let (x, _) = schedule(&mut p, &writes(&[entry("a", 1)]));
    complete(&mut p, x);
    complete(&mut p, x);
}

#[test]
#[should_panic(expected = "is not running")]
fn completing_an_unknown_task_panics() {
    let mut p = two_tables(4);
    complete(&mut p, TaskId(7));
}

#[test]
#[should_panic(expected = "is not running")]
fn pairwise_completing_a_waiting_task_panics() {
    let mut p = PairwiseParallelizer::new(4);
    p.schedule(&writes(&[entry("a", 1)])).expect("room");
    let waiting = p.schedule(&writes(&[entry("a", 1)])).expect("room");
    assert!(!waiting.ready);
    p.complete(waiting.task, &mut Vec::new());
}

#[test]
fn woken_tasks_are_reported_in_agreed_order() {
    let mut p = two_tables(8);
    // x holds two cells; y waits on the second, z on the first.
    let (x, _) = schedule(&mut p, &writes(&[entry("a", 1), entry("a", 2)]));
    let (y, _) = schedule(&mut p, &reads(&[entry("a", 2)]));
    let (z, _) = schedule(&mut p, &reads(&[entry("a", 1)]));
    assert_eq!(complete(&mut p, x), vec![y, z]);
}

#[test]
fn idle_cells_are_recycled() {
    let mut p = two_tables(16);
    let mut running = std::collections::VecDeque::new();
    for i in 0..200_000u64 {
        if p.is_full() {
            let oldest = running
                .pop_front()
                .expect("a full window has a running task");
            let mut woken = Vec::new();
            p.complete(oldest, &mut woken);
            running.extend(woken);
        }
        let s = p
            .schedule(&writes(&[entry("a", i), entry("b", i)]))
            .expect("room");
        if s.ready {
            running.push_back(s.task);
        }
    }
    // Exactly the cells of the requests in flight are kept.
    assert_eq!(p.cell_nodes(), 2 * p.in_flight());
    while let Some(task) = running.pop_front() {
        let mut woken = Vec::new();
        p.complete(task, &mut woken);
        running.extend(woken);
    }
    assert_eq!(p.in_flight(), 0);
    assert_eq!(p.cell_nodes(), 0);
}

/// Entries of several tables interleaved in one request each take their own
/// table's cell, whichever table came just before.
#[test]
fn entries_alternating_between_tables_keep_their_tables() {
    let mut p = Parallelizer::new(8, &[t("a"), t("b"), t("c")]);
    let named = [
        ("a", 1),
        ("b", 2),
        ("a", 3),
        ("c", 4),
        ("b", 5),
        ("a", 6),
        ("u", 7),
    ];
    let mixed = writes(&named.map(|(table, n)| entry(table, n)));
    for (table, n) in named {
        assert!(
            waits(&mut p, &mixed, &reads(&[entry(table, n)])),
            "{table}[{n}]"
        );
        let other = if table == "a" { "b" } else { "a" };
        assert!(
            !waits(&mut p, &mixed, &reads(&[entry(other, n)])),
            "{other}[{n}]"
        );
    }
}

/// Bare values (one cell per table slot) among many entries, in the writes
/// with many reads after them.
#[test]
fn bare_values_among_many_keys() {
    let mut p = two_tables(4);
    let access = AccessSet::new(
        (0..20).map(|n| entry("b", n)).collect(),
        vec![
            Key::Value(v(100)),
            entry("a", 1),
            Key::Value(v(101)),
            Key::Value(v(102)),
        ],
    );
    assert!(waits(&mut p, &access, &reads(&[entry("u", 101)])));
    assert!(waits(&mut p, &access, &reads(&[entry("b", 102)])));
    assert!(waits(&mut p, &access, &writes(&[entry("b", 19)])));
    assert!(waits(&mut p, &access, &reads(&[entry("a", 1)])));
    assert!(!waits(&mut p, &access, &reads(&[entry("b", 20)])));
    assert!(!waits(&mut p, &access, &reads(&[entry("b", 19)])));
}

/// A cell that spilled out of a full set stays the one cell of its key after
/// ways of its set free up: a later request finds it (and waits) rather than
/// storing a second cell in a freed way. With and without padding keys, so
/// that both the few-keys path and the two-phase path are checked.
#[test]
fn a_spilled_cell_is_found_after_its_set_frees_up() {
    for pad in [0, FEW_KEYS] {
        let mut p = two_tables(8);
        let salt = p.tables.salts[p.tables.slot(t("a"))];
        // Cells agreeing in their low 16 bits share a set in any table of up
        // to 2^16 sets; WAYS of them fill it and the next one spills.
        let home = cell_key(salt, 0) & 0xffff;
        let values: Vec<u64> = (0..)
            .filter(|&n| cell_key(salt, n) & 0xffff == home)
            .take(WAYS + 1)
            .collect();
        let padded = |keys: Vec<Key>, base: u64| {
            let padding = (base..base + pad as u64).map(|n| entry("b", n)).collect();
            AccessSet::new(padding, keys)
        };
        let fill = padded(values[..WAYS].iter().map(|&n| entry("a", n)).collect(), 0);
        let (filler, ready) = schedule(&mut p, &fill);
        assert!(ready);
        let spill = padded(vec![entry("a", values[WAYS])], 100);
        let (holder, ready) = schedule(&mut p, &spill);
        assert!(ready, "pad {pad}");
        let spilled = cell_key(salt, values[WAYS]);
        assert_eq!(p.cells.locate(spilled), Some(SPILLED), "pad {pad}");
        assert!(complete(&mut p, filler).is_empty());
        let (late, ready) = schedule(&mut p, &spill);
        assert!(!ready, "pad {pad}: the spilled cell is still held");
        assert_eq!(complete(&mut p, holder), vec![late]);
        assert!(complete(&mut p, late).is_empty());
        assert_eq!(p.cell_nodes(), 0);
    }
}

#[test]
fn many_tables_use_the_sorted_lookup() {
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let ids: Vec<TableId> = names.iter().map(|n| t(n)).collect();
    let mut p = Parallelizer::new(8, &ids);
    assert!(!p.tables.sorted.is_empty());
    assert!(!waits(
        &mut p,
        &writes(&[Key::table("t3")]),
        &writes(&[Key::table("t4")])
    ));
    assert!(waits(
        &mut p,
        &writes(&[Key::table("t3")]),
        &reads(&[entry("t3", 1)])
    ));
    assert!(waits(
        &mut p,
        &writes(&[Key::Value(v(1))]),
        &reads(&[entry("t19", 1)])
    ));
}

fn seat(show: u64, seat: u32) -> Key {
    Key::entry("a", &(show, seat))
}

fn show(show: u64) -> Key {
    Key::prefix("a", &(show,))
}

#[test]
fn a_prefix_waits_only_for_writes_under_it() {
    let mut p = two_tables(8);
    // Other shows run in parallel with a show's reader and writer.
    assert!(!waits(&mut p, &reads(&[show(1)]), &writes(&[seat(2, 1)])));
    assert!(!waits(&mut p, &writes(&[show(1)]), &writes(&[show(2)])));
    assert!(!waits(&mut p, &writes(&[show(1)]), &reads(&[seat(2, 7)])));
    // Readers of one show share it with each other and with seat readers.
    assert!(!waits(&mut p, &reads(&[show(1)]), &reads(&[show(1)])));
    assert!(!waits(&mut p, &reads(&[show(1)]), &reads(&[seat(1, 3)])));
    // A write under the show and the show meet, in either order.
    assert!(waits(&mut p, &reads(&[show(1)]), &writes(&[seat(1, 3)])));
    assert!(waits(&mut p, &writes(&[seat(1, 3)]), &reads(&[show(1)])));
    assert!(waits(&mut p, &writes(&[show(1)]), &reads(&[seat(1, 3)])));
    // The whole table meets every prefix; other tables meet none.
    assert!(waits(
        &mut p,
        &writes(&[Key::table("a")]),
        &reads(&[show(1)])
    ));
    assert!(waits(
        &mut p,
        &reads(&[show(1)]),
        &writes(&[Key::table("a")])
    ));
    assert!(!waits(
        &mut p,
        &reads(&[show(1)]),
        &writes(&[Key::table("b")])
    ));
    assert!(!waits(
        &mut p,
        &reads(&[show(1)]),
        &writes(&[Key::prefix("b", &(1u64,))])
    ));
    assert!(waits(&mut p, &reads(&[show(1)]), &writes(&[Key::All])));
    // A bare tuple value meets the prefix it lies under, in every table.
    assert!(waits(
        &mut p,
        &reads(&[show(1)]),
        &writes(&[Key::value(&(1u64, 3u32))])
    ));
    assert!(waits(
        &mut p,
        &reads(&[Key::prefix("u", &(1u64,))]),
        &writes(&[Key::value(&(1u64, 3u32))])
    ));
    assert!(!waits(
        &mut p,
        &reads(&[show(1)]),
        &writes(&[Key::value(&(2u64, 3u32))])
    ));
    assert_eq!(p.prefixes.len(), 0, "idle prefix nodes are dropped");
}

#[test]
fn longer_prefixes_lie_under_shorter_ones() {
    let mut p = two_tables(8);
    let ab = Key::prefix("a", &(1u8, 2u8));
    let ac = Key::prefix("a", &(1u8, 3u8));
    let a = Key::prefix("a", &(1u8,));
    assert!(waits(&mut p, &writes(&[a]), &reads(&[ab])));
    assert!(waits(&mut p, &reads(&[ab]), &writes(&[a])));
    assert!(!waits(&mut p, &writes(&[ab]), &writes(&[ac])));
    assert!(waits(
        &mut p,
        &reads(&[ab]),
        &writes(&[Key::entry("a", &(1u8, 2u8, 9u8))])
    ));
    assert!(!waits(
        &mut p,
        &reads(&[ab]),
        &writes(&[Key::entry("a", &(1u8, 3u8, 9u8))])
    ));
    assert!(waits(
        &mut p,
        &reads(&[a]),
        &writes(&[Key::entry("a", &(1u8, 3u8, 9u8))])
    ));
}

#[test]
fn a_request_reaching_a_prefix_through_many_keys_takes_it_once() {
    let mut p = two_tables(8);
    // Twenty seats of one show and the show itself, read and written: one
    // prefix node, taken once in the join of the modes (past the linear
    // search of `want_prefix`, too).
    let mut many: Vec<Key> = (0..20).map(|s| seat(1, s)).collect();
    many.extend((0..12).map(|s| Key::prefix("a", &(s + 10u64,))));
    let set = AccessSet::new(vec![show(1), show(1)], many);
    let (task, ready) = schedule(&mut p, &set);
    assert!(ready, "a request never waits for itself");
    let (other, ready) = schedule(&mut p, &reads(&[seat(1, 0)]));
    assert!(!ready, "SIX on the show excludes a seat reader");
    let (third, ready) = schedule(&mut p, &reads(&[seat(2, 0)]));
    assert!(ready);
    assert_eq!(complete(&mut p, task), vec![other]);
    complete(&mut p, other);
    complete(&mut p, third);
    assert_eq!(p.prefixes.len(), 0);
}

// ---------------------------------------------------------------------------
// Property tests.

/// The common surface of both parallelizers, for the model checker.
trait Scheduler {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull>;
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>);
    fn in_flight(&self) -> usize;
    fn is_full(&self) -> bool;
}

impl Scheduler for Parallelizer {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        Parallelizer::schedule(self, access)
    }
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        Parallelizer::complete(self, task, ready);
    }
    fn in_flight(&self) -> usize {
        Parallelizer::in_flight(self)
    }
    fn is_full(&self) -> bool {
        Parallelizer::is_full(self)
    }
}

impl Scheduler for PairwiseParallelizer {
    fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        PairwiseParallelizer::schedule(self, access)
    }
    fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        PairwiseParallelizer::complete(self, task, ready);
    }
    fn in_flight(&self) -> usize {
        PairwiseParallelizer::in_flight(self)
    }
    fn is_full(&self) -> bool {
        PairwiseParallelizer::is_full(self)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Unscheduled,
    Waiting,
    Running,
    Done,
}

/// Drives `sched` through `sets` in agreed order, interleaving completions of
/// running tasks as `choices` dictate, and checks the contract after every
/// step. With `precise`, also checks that nothing waits without a reason.
fn check_run<S: Scheduler>(
    sched: &mut S,
    capacity: usize,
    sets: &[AccessSet],
    choices: &[u16],
    precise: bool,
) -> Result<(), TestCaseError> {
    let n = sets.len();
    let mut status = vec![Status::Unscheduled; n];
    // Which request occupies each slot now.
    let mut occupant: Vec<Option<usize>> = vec![None; capacity];
    let mut next = 0;
    let mut running: Vec<usize> = Vec::new();
    let mut woken = Vec::new();
    let mut choices = choices.iter().copied();

    let became_ready = |j: usize, status: &mut [Status]| -> Result<(), TestCaseError> {
        // (b) exactly once, and only from waiting (or fresh).
        prop_assert!(
            matches!(status[j], Status::Waiting | Status::Unscheduled),
            "request {} reported ready while {:?}",
            j,
            status[j]
        );
        // (a) soundness.
        for i in 0..j {
            if conflicts(&sets[i], &sets[j]) {
                prop_assert_eq!(
                    status[i],
                    Status::Done,
                    "request {} ready before conflicting earlier request {}: {:?} vs {:?}",
                    j,
                    i,
                    &sets[i],
                    &sets[j]
                );
            }
        }
        status[j] = Status::Running;
        Ok(())
    };

    loop {
        let done = status.iter().all(|s| *s == Status::Done);
        if done {
            break;
        }
        let in_flight = status
            .iter()
            .filter(|s| matches!(s, Status::Waiting | Status::Running))
            .count();
        prop_assert_eq!(sched.in_flight(), in_flight);
        prop_assert_eq!(sched.is_full(), in_flight == capacity);
        // (c) no deadlock.
        prop_assert!(
            in_flight == 0 || !running.is_empty(),
            "deadlock: {} requests in flight, none running",
            in_flight
        );
        // (d) the earliest unfinished request is ready once all before it finished.
        if let Some(first) = status
            .iter()
            .position(|s| matches!(s, Status::Waiting | Status::Running))
        {
            prop_assert_eq!(
                status[first],
                Status::Running,
                "earliest request {} is not ready",
                first
            );
        }
        if precise {
            for j in 0..n {
                if status[j] == Status::Waiting {
                    let blocked =
                        (0..j).any(|i| status[i] != Status::Done && conflicts(&sets[i], &sets[j]));
                    prop_assert!(blocked, "request {} waits for nothing", j);
                }
            }
        }

        let choice = choices.next().unwrap_or(0) as usize;
        let want_schedule = !choice.is_multiple_of(3) || running.is_empty();
        if next < n && want_schedule {
            if in_flight == capacity {
                prop_assert!(
                    sched.schedule(&sets[next]).is_err(),
                    "schedule beyond capacity"
                );
                prop_assert!(!running.is_empty(), "deadlock with a full window");
            } else {
                let s = sched
                    .schedule(&sets[next])
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(s.task.index() < capacity);
                prop_assert!(
                    occupant[s.task.index()].is_none(),
                    "slot {} handed out twice",
                    s.task.index()
                );
                occupant[s.task.index()] = Some(next);
                if s.ready {
                    became_ready(next, &mut status)?;
                    running.push(next);
                } else {
                    status[next] = Status::Waiting;
                }
                next += 1;
                continue;
            }
        }
        prop_assert!(
            !running.is_empty(),
            "nothing to schedule and nothing running"
        );
        let i = running.swap_remove(choice % running.len());
        let task = (0..capacity)
            .find(|&s| occupant[s] == Some(i))
            .map(|s| TaskId(s as u32))
            .expect("a running request occupies a slot");
        woken.clear();
        sched.complete(task, &mut woken);
        status[i] = Status::Done;
        occupant[task.index()] = None;
        let mut last = None;
        for t in &woken {
            let j = occupant[t.index()].expect("a woken task occupies a slot");
            prop_assert!(
                last < Some(j),
                "woken tasks not in agreed order: {:?}",
                woken
            );
            last = Some(j);
            became_ready(j, &mut status)?;
            running.push(j);
        }
    }
    prop_assert_eq!(sched.in_flight(), 0);
    Ok(())
}

/// Tables `a`, `b` (always known), `c` (known in some runs) and `u` (never).
fn table_strategy() -> impl Strategy<Value = TableId> {
    prop::sample::select(vec![t("a"), t("b"), t("c"), t("u")])
}

fn value_strategy() -> impl Strategy<Value = ValueHash> {
    (0u64..4).prop_map(ValueHash)
}

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        1 => Just(Key::All),
        3 => table_strategy().prop_map(Key::Table),
        3 => value_strategy().prop_map(Key::Value),
        8 => (table_strategy(), value_strategy()).prop_map(|(t, v)| Key::Entry(t, v)),
        6 => prefix_key_strategy(),
    ]
}

/// Keys of tables with tuple keys: prefixes of one and two elements, entries
/// of 2- and 3-tuples under them, and bare tuple values, over few elements
/// so that they meet often.
fn prefix_key_strategy() -> impl Strategy<Value = Key> {
    let element = || 0u8..2;
    prop_oneof![
        3 => (table_strategy(), element()).prop_map(|(t, a)| Key::prefix_of(t, &(a,))),
        2 => (table_strategy(), element(), element())
            .prop_map(|(t, a, b)| Key::prefix_of(t, &(a, b))),
        3 => (table_strategy(), element(), element())
            .prop_map(|(t, a, b)| Key::entry_of(t, &(a, b))),
        2 => (table_strategy(), element(), element(), element())
            .prop_map(|(t, a, b, c)| Key::entry_of(t, &(a, b, c))),
        1 => (element(), element()).prop_map(|(a, b)| Key::value(&(a, b))),
    ]
}

fn access_strategy() -> impl Strategy<Value = AccessSet> {
    sized_access_strategy(4)
}

/// Up to `max_keys` keys of `key_strategy`, or the exclusive rule.
fn sized_access_strategy(max_keys: usize) -> impl Strategy<Value = AccessSet> {
    prop_oneof![
        1 => Just(AccessSet::exclusive()),
        12 => (0usize..=max_keys)
            .prop_flat_map(|n| (0..=n).prop_flat_map(move |r| {
                (prop::collection::vec(key_strategy(), r), prop::collection::vec(key_strategy(), n - r))
            }))
            .prop_map(|(reads, writes)| AccessSet::new(reads, writes)),
    ]
}

/// Many keys per request over a wider keyspace, mostly entries of tables
/// that alternate at random: the cell table grows while requests wait in cell
/// queues, full sets spill, runs of entries break on a third table, and bare
/// values (a cell per table slot) and wildcards fall in the middle of long
/// runs.
fn large_access_strategy() -> impl Strategy<Value = AccessSet> {
    let value = || (0u64..48).prop_map(ValueHash);
    let key = move || {
        prop_oneof![
            40 => (table_strategy(), value()).prop_map(|(t, v)| Key::Entry(t, v)),
            4 => prefix_key_strategy(),
            2 => value().prop_map(Key::Value),
            1 => table_strategy().prop_map(Key::Table),
        ]
    };
    let keys = move || prop::collection::vec(key(), 0..24);
    (keys(), keys(), 0u8..40).prop_map(|(reads, mut writes, all)| {
        // Rarely, a request that conflicts with everything.
        if all == 0 {
            writes.push(Key::All);
        }
        AccessSet::new(reads, writes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn lock_parallelizer_is_sound_and_live_with_large_access_sets(
        capacity in 1usize..32,
        sets in prop::collection::vec(large_access_strategy(), 0..60),
        choices in prop::collection::vec(any::<u16>(), 0..200),
    ) {
        let mut p = Parallelizer::new(capacity, &[t("a"), t("b")]);
        check_run(&mut p, capacity, &sets, &choices, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn lock_parallelizer_is_sound_and_live(
        capacity in 1usize..8,
        third_table_known in any::<bool>(),
        sets in prop::collection::vec(access_strategy(), 0..40),
        choices in prop::collection::vec(any::<u16>(), 0..120),
    ) {
        let mut tables = vec![t("a"), t("b")];
        if third_table_known {
            tables.push(t("c"));
        }
        let mut p = Parallelizer::new(capacity, &tables);
        check_run(&mut p, capacity, &sets, &choices, false)?;
    }

    #[test]
    fn pairwise_parallelizer_is_sound_live_and_precise(
        capacity in 1usize..8,
        sets in prop::collection::vec(access_strategy(), 0..40),
        choices in prop::collection::vec(any::<u16>(), 0..120),
    ) {
        let mut p = PairwiseParallelizer::new(capacity);
        check_run(&mut p, capacity, &sets, &choices, true)?;
    }

    /// Scheduling into a window where nothing has completed yet, a request is
    /// ready at once iff it conflicts with no earlier request, for both designs:
    /// every earlier request still holds or waits on its nodes, and the lock
    /// design admits a request compatible with all holders and waiters. Here
    /// the lock design has no false waits either: only one table (`u`) is
    /// unknown, so CATCHALL stands for exactly one table, and four small values
    /// under distinct salts do not collide.
    #[test]
    fn lock_parallelizer_admits_exactly_the_non_conflicting(
        sets in prop::collection::vec(access_strategy(), 0..24),
    ) {
        admits_exactly_the_non_conflicting(&sets)?;
    }

    /// The same with requests of up to 14 keys, so that the two-phase path
    /// (more than `FEW_KEYS` keys) is checked for precision too.
    #[test]
    fn lock_parallelizer_admits_exactly_the_non_conflicting_with_many_keys(
        sets in prop::collection::vec(sized_access_strategy(14), 0..16),
    ) {
        admits_exactly_the_non_conflicting(&sets)?;
    }
}

/// See `lock_parallelizer_admits_exactly_the_non_conflicting`.
fn admits_exactly_the_non_conflicting(sets: &[AccessSet]) -> Result<(), TestCaseError> {
    let capacity = sets.len().max(1);
    let mut locks = Parallelizer::new(capacity, &[t("a"), t("b"), t("c")]);
    let mut pairs = PairwiseParallelizer::new(capacity);
    for (j, set) in sets.iter().enumerate() {
        let expected = !(0..j).any(|i| conflicts(&sets[i], set));
        prop_assert_eq!(pairs.schedule(set).expect("room").ready, expected);
        prop_assert_eq!(
            locks.schedule(set).expect("room").ready,
            expected,
            "request {}",
            j
        );
    }
    Ok(())
}
