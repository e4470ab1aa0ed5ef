//! The nodes above the cells: GLOBAL, the tables and key prefixes. Each
//! counts its holders and waiters per mode and keeps a FIFO of waiting
//! requests, linked through the requests' own entries so that queueing
//! allocates nothing.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::cells::PremixedHasher;
use super::lock::{MODES, Mode};
use super::{Request, Slot, TaskId, wake};

/// Takes (or queues for) `node`, which is `fixed[id]` or, with `id` equal to
/// `PREFIX_NODE`, the prefix node `prefix`.
pub(super) fn acquire_node(
    node: &mut FixedNode,
    id: u32,
    prefix: u64,
    mode: Mode,
    request: &mut Request,
    slots: &mut [Slot],
) {
    if mode.compatible_with_all(node.held.set | node.waiting.set) {
        node.held.add(mode);
    } else {
        node.waiting.add(mode);
        node.queue.push(request.next_ref(), slots);
        request.waiting += 1;
    }
    request.entries.push(Entry {
        node: id,
        next: EntryRef::NONE,
        mode,
        prefix,
    });
}

pub(super) fn release_fixed(
    node: &mut FixedNode,
    mode: Mode,
    slots: &mut [Slot],
    ready: &mut Vec<TaskId>,
) {
    node.held.remove(mode);
    while let Some(head) = node.queue.front() {
        let entry = slots[head.slot()].entries[head.index()];
        if !entry.mode.compatible_with_all(node.held.set) {
            break; // strict FIFO from here on
        }
        node.held.add(entry.mode);
        node.waiting.remove(entry.mode);
        node.queue.pop_front(entry.next);
        wake(slots, head.slot(), ready);
    }
}

/// `Entry::node` of a prefix node.
pub(super) const PREFIX_NODE: u32 = u32::MAX;

/// A request's claim on GLOBAL, a table node or a prefix node.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    /// The index of the node in `Parallelizer::fixed`, or `PREFIX_NODE`.
    pub(super) node: u32,
    /// The key of the node in `Parallelizer::prefixes`, for a prefix node.
    pub(super) prefix: u64,
    pub(super) mode: Mode,
    /// The next waiter in the node's queue, while this entry is queued.
    pub(super) next: EntryRef,
}

/// Where an entry lives: slot number in the high half, index in that slot's
/// entries in the low half.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct EntryRef(u64);

impl EntryRef {
    /// No entry: slot `u32::MAX` is never used (capacity is below it).
    pub(super) const NONE: EntryRef = EntryRef(u64::MAX);

    #[inline]
    pub(super) fn new(slot: u32, index: usize) -> EntryRef {
        let index = u32::try_from(index).expect("a request with more than u32::MAX lock entries");
        EntryRef((u64::from(slot) << 32) | u64::from(index))
    }

    #[inline]
    pub(super) fn slot(self) -> usize {
        (self.0 >> 32) as usize
    }

    #[inline]
    pub(super) fn index(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

/// A FIFO of waiting entries, linked through the entries themselves.
#[derive(Clone, Copy, Debug)]
pub(super) struct Queue {
    pub(super) head: EntryRef,
    pub(super) tail: EntryRef,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::EMPTY
    }
}

impl Queue {
    pub(super) const EMPTY: Queue = Queue {
        head: EntryRef::NONE,
        tail: EntryRef::NONE,
    };

    #[inline]
    pub(super) fn front(&self) -> Option<EntryRef> {
        (self.head != EntryRef::NONE).then_some(self.head)
    }

    /// Appends `me`, an entry about to be pushed with `next: NONE`. The
    /// previous tail belongs to another request (a request takes a node once),
    /// whose entries are in `slots`.
    #[inline]
    pub(super) fn push(&mut self, me: EntryRef, slots: &mut [Slot]) {
        if self.tail == EntryRef::NONE {
            self.head = me;
        } else {
            slots[self.tail.slot()].entries[self.tail.index()].next = me;
        }
        self.tail = me;
    }

    /// Removes the front entry, whose `next` link is given.
    #[inline]
    pub(super) fn pop_front(&mut self, next: EntryRef) {
        self.head = next;
        if next == EntryRef::NONE {
            self.tail = EntryRef::NONE;
        }
    }
}

/// GLOBAL, a table or a prefix: any of the five modes.
#[derive(Default, Debug)]
pub(super) struct FixedNode {
    pub(super) held: ModeCounts,
    pub(super) waiting: ModeCounts,
    pub(super) queue: Queue,
}

impl FixedNode {
    /// Whether no request holds or waits for the node (a waiter is counted
    /// in `waiting` for as long as it is queued).
    pub(super) fn is_idle(&self) -> bool {
        self.held.set == 0 && self.waiting.set == 0
    }
}

/// The prefix nodes in use, by key (see `prefix_node`).
pub(super) type PrefixNodes = HashMap<u64, FixedNode, BuildHasherDefault<PremixedHasher>>;

/// How many requests hold (or wait for) a node in each mode, and the set of
/// modes with a non-zero count, kept up to date so that a compatibility test
/// is one mask operation.
#[derive(Default, Debug)]
pub(super) struct ModeCounts {
    pub(super) counts: [u32; MODES],
    /// Bit `m` set iff `counts[m] > 0`.
    pub(super) set: u8,
}

impl ModeCounts {
    #[inline]
    pub(super) fn add(&mut self, mode: Mode) {
        self.counts[mode.index()] += 1;
        self.set |= mode.bit();
    }

    #[inline]
    pub(super) fn remove(&mut self, mode: Mode) {
        let count = &mut self.counts[mode.index()];
        *count -= 1;
        if *count == 0 {
            self.set &= !mode.bit();
        }
    }
}
