//! A count of bytes waiting somewhere, held to a bound, where the first
//! entry always fits: a queue whose reader keeps up gets even an entry
//! larger than the bound, and one whose reader stalls holds at most the
//! bound (or one entry). Client connections' answers
//! ([`super::answers`]) and frames for a peer replica
//! ([`super::peer_queue`]) are counted this way.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes waiting, at most `limit` unless a single entry is larger.
#[derive(Debug)]
pub struct ByteBound {
    queued: AtomicUsize,
    limit: usize,
}

impl ByteBound {
    /// Nothing waiting, with room for `limit` bytes.
    pub fn new(limit: usize) -> ByteBound {
        ByteBound {
            queued: AtomicUsize::new(0),
            limit,
        }
    }

    /// Counts `bytes` more if they fit (or nothing is waiting); the count
    /// before, or `None` (and nothing counted) if they do not fit.
    pub fn reserve(&self, bytes: usize) -> Option<usize> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let after = queued.saturating_add(bytes);
                (queued == 0 || after <= self.limit).then_some(after)
            })
            .ok()
    }

    /// Uncounts `bytes` (no further than zero); the count before.
    pub fn release(&self, bytes: usize) -> usize {
        match self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(bytes))
            }) {
            Ok(before) | Err(before) => before,
        }
    }

    /// Bytes waiting now.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_entry_fits_whatever_its_size_and_later_ones_only_within_the_bound() {
        let bound = ByteBound::new(10);
        assert_eq!(bound.reserve(25), Some(0), "the first fits");
        assert_eq!(bound.reserve(1), None);
        assert_eq!(bound.release(25), 25);
        assert_eq!(bound.reserve(6), Some(0));
        assert_eq!(bound.reserve(4), Some(6));
        assert_eq!(bound.reserve(1), None);
        assert_eq!(bound.release(100), 10, "released past zero stops at zero");
        assert_eq!(bound.queued(), 0);
    }
}
