//! The pairwise parallelizer: the reference design and benchmark baseline.
//!
//! This is the structure of the published CBASE implementations: keep the
//! pending requests, test each new one against every pending one with
//! [`conflicts`], and build a dependency graph in which each request counts
//! its unfinished predecessors. It is *precise* (a request waits exactly for
//! the earlier requests it conflicts with, nothing else), which makes it the
//! oracle the lock-based [`Parallelizer`](super::Parallelizer) is tested
//! against, but it costs O(window × keys²) per request, which is what the lock
//! design exists to avoid.

use std::fmt;
use std::mem;

use super::{Scheduled, TaskId, WindowFull};
use crate::access::{AccessSet, conflicts};

/// Schedules requests by testing each one against every pending one.
///
/// Same contract as [`Parallelizer`](super::Parallelizer) (without the table
/// list, which it does not need), and no false waits.
pub struct PairwiseParallelizer {
    capacity: usize,
    slots: Vec<PairSlot>,
    free_slots: Vec<u32>,
    /// Slots of the scheduled, not yet completed requests, in no particular
    /// order (each slot knows its position, for O(1) removal).
    pending: Vec<u32>,
    next_seq: u64,
}

struct PairSlot {
    seq: u64,
    running: bool,
    access: AccessSet,
    /// Earlier conflicting requests not yet completed.
    predecessors: usize,
    /// Later conflicting requests, to notify at completion.
    successors: Vec<u32>,
    /// Position in `pending`, while scheduled.
    pending_index: usize,
}

impl fmt::Debug for PairwiseParallelizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairwiseParallelizer")
            .field("capacity", &self.capacity)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl PairwiseParallelizer {
    /// A parallelizer admitting up to `capacity` requests in flight.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or does not fit in a `u32`.
    pub fn new(capacity: usize) -> PairwiseParallelizer {
        assert!(capacity >= 1, "parallelizer capacity must be at least 1");
        let capacity32 = u32::try_from(capacity).expect("parallelizer capacity must fit in a u32");
        PairwiseParallelizer {
            capacity,
            slots: (0..capacity)
                .map(|_| PairSlot {
                    seq: 0,
                    running: false,
                    access: AccessSet::none(),
                    predecessors: 0,
                    successors: Vec::new(),
                    pending_index: usize::MAX,
                })
                .collect(),
            free_slots: (0..capacity32).rev().collect(),
            pending: Vec::with_capacity(capacity),
            next_seq: 0,
        }
    }

    /// The maximum number of requests in flight.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of requests scheduled and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether [`schedule`](Self::schedule) would refuse the next request.
    pub fn is_full(&self) -> bool {
        self.free_slots.is_empty()
    }

    /// Takes the next request in agreed order; `ready` is true when it may
    /// start now.
    ///
    /// # Errors
    ///
    /// [`WindowFull`] if `capacity` requests are in flight; nothing changes.
    pub fn schedule(&mut self, access: &AccessSet) -> Result<Scheduled, WindowFull> {
        let Some(slot) = self.free_slots.pop() else {
            return Err(WindowFull {
                capacity: self.capacity,
            });
        };
        let mut predecessors = 0;
        for &other in &self.pending {
            let other = &mut self.slots[other as usize];
            if conflicts(&other.access, access) {
                other.successors.push(slot);
                predecessors += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = &mut self.slots[slot as usize];
        entry.seq = seq;
        entry.access = access.clone();
        entry.predecessors = predecessors;
        entry.running = predecessors == 0;
        entry.pending_index = self.pending.len();
        self.pending.push(slot);
        Ok(Scheduled {
            task: TaskId(slot),
            ready: predecessors == 0,
        })
    }

    /// Reports that `task` finished. Appends to `ready`, in agreed order, every
    /// task that became ready because of it.
    ///
    /// # Panics
    ///
    /// If `task` is not running: a bug in the caller.
    pub fn complete(&mut self, task: TaskId, ready: &mut Vec<TaskId>) {
        let index = task.index();
        let running = self
            .slots
            .get(index)
            .is_some_and(|s| s.running && s.pending_index != usize::MAX);
        assert!(
            running,
            "PairwiseParallelizer::complete({task:?}): the task is not running; \
             only a task reported ready may be completed, and only once"
        );
        let start = ready.len();
        let mut successors = mem::take(&mut self.slots[index].successors);
        for &next in &successors {
            let next_slot = &mut self.slots[next as usize];
            next_slot.predecessors -= 1;
            if next_slot.predecessors == 0 {
                next_slot.running = true;
                ready.push(TaskId(next));
            }
        }
        successors.clear();

        let slot = &mut self.slots[index];
        slot.successors = successors;
        slot.running = false;
        // Keep the allocation-free `none()` rather than the old keys alive.
        slot.access = AccessSet::none();
        let position = mem::replace(&mut slot.pending_index, usize::MAX);
        self.pending.swap_remove(position);
        if let Some(&moved) = self.pending.get(position) {
            self.slots[moved as usize].pending_index = position;
        }
        self.free_slots.push(task.0);
        // Successors were recorded as they were scheduled, so the tasks woken
        // above are already in agreed order.
        debug_assert!(ready[start..].is_sorted_by_key(|t| self.slots[t.index()].seq));
    }
}
