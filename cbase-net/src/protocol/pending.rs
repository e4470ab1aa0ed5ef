//! Client batches waiting for a sequence number, bounded in count and bytes.
//!
//! The primary proposes from the front; a backup keeps what clients sent it
//! in case it becomes primary. Clients decide what arrives here, so the queue
//! refuses a batch once it holds `max_pending` batches or `max_pending_bytes`
//! bytes, whichever comes first.

use std::collections::VecDeque;

use crate::message::{Hash, SignedBatch};

/// One waiting batch with its digest and encoded size.
#[derive(Debug)]
pub(super) struct Queued {
    pub digest: Hash,
    pub bytes: usize,
    pub batch: SignedBatch,
}

/// The queue and the bytes it holds.
#[derive(Debug, Default)]
pub(super) struct Pending {
    queue: VecDeque<Queued>,
    bytes: usize,
}

impl Pending {
    /// Whether one more batch of `bytes` fits the limits.
    pub fn has_room(&self, bytes: usize, max_batches: usize, max_bytes: usize) -> bool {
        self.queue.len() < max_batches && self.bytes.saturating_add(bytes) <= max_bytes
    }

    pub fn push_back(&mut self, queued: Queued) {
        self.bytes += queued.bytes;
        self.queue.push_back(queued);
    }

    pub fn front(&self) -> Option<&Queued> {
        self.queue.front()
    }

    pub fn pop_front(&mut self) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        self.bytes -= queued.bytes;
        Some(queued)
    }

    /// Keeps the batches `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Queued) -> bool) {
        let mut bytes = 0;
        self.queue.retain(|queued| {
            let kept = keep(queued);
            if kept {
                bytes += queued.bytes;
            }
            kept
        });
        self.bytes = bytes;
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
