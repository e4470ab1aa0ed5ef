//! What the large frames arriving on many connections may take together.
//!
//! A connection costs a replica its read buffer, and a frame's buffer grows
//! with the bytes that arrive, up to `max_frame`. Replicas are few, but
//! anyone can be a client: without a shared bound, a thousand connections
//! each sending most of a 16 MiB frame (and never its end) would make a
//! replica hold 16 GiB. So client connections share a [`FrameBudget`]: a
//! frame larger than [`FREE_FRAME`] takes its size beyond that from the
//! budget before its buffer grows past it, and gives it back when it is
//! read. A frame waits while the budget is spent. Frames up to
//! [`FREE_FRAME`], which is what clients send almost always, need nothing
//! from it.
//!
//! A frame takes its share when its length prefix arrives, before its
//! bytes do, so a party could tie the budget up with prefixes of frames it
//! never finishes. So one source (an address: see `runtime::sources`) may
//! hold at most a quarter of the budget ([`FrameBudget::for_source`]), or
//! one largest frame if that is more: a party behind one address delays
//! its own large frames only.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest frame (header, payload and MAC) read without the budget.
pub const FREE_FRAME: usize = 64 * 1024;

/// The budget's unit: permits count KiB.
const UNIT: usize = 1024;

/// Bytes shared by the large frames being read on some connections at
/// once; cloning shares it.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    permits: Arc<Semaphore>,
    units: u32,
    /// The share of one source and its size, when the budget is given to
    /// a connection ([`FrameBudget::for_source`]).
    source: Option<(Arc<Semaphore>, u32)>,
}

/// What a frame took from a [`FrameBudget`]: given back when dropped.
#[derive(Debug)]
pub struct Taken {
    _whole: OwnedSemaphorePermit,
    _source: Option<OwnedSemaphorePermit>,
}

/// The shares of the sources that have connections now: each a quarter of
/// the budget (or one largest frame, if more); a source's entry goes when
/// its last connection's budget is dropped.
#[derive(Debug)]
pub struct SourceShares<K> {
    units: u32,
    shares: Mutex<HashMap<K, Weak<Semaphore>>>,
}

impl<K: Eq + Hash + Clone> SourceShares<K> {
    /// Shares for sources of the connections reading against `budget`: a
    /// quarter of it each, or one largest frame if that is more.
    pub fn new(budget: &FrameBudget, max_frame: usize) -> SourceShares<K> {
        let largest =
            u32::try_from(max_frame.saturating_sub(FREE_FRAME).div_ceil(UNIT)).unwrap_or(u32::MAX);
        SourceShares {
            units: (budget.units / 4).max(largest).min(budget.units),
            shares: Mutex::new(HashMap::new()),
        }
    }

    /// The share of `source`, shared by all its connections.
    fn of(&self, source: &K) -> Arc<Semaphore> {
        let mut shares = self.shares.lock();
        if let Some(share) = shares.get(source).and_then(Weak::upgrade) {
            return share;
        }
        // Bounded by the live connections: sources with none are swept
        // whenever a new one comes.
        shares.retain(|_, share| share.strong_count() > 0);
        let share = Arc::new(Semaphore::new(self.units as usize));
        shares.insert(source.clone(), Arc::downgrade(&share));
        share
    }
}

impl FrameBudget {
    /// A budget of `bytes` (rounded down to KiB; at most 4 TiB).
    pub fn new(bytes: usize) -> FrameBudget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX);
        FrameBudget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
            source: None,
        }
    }

    /// This budget for a connection from `source`: its frames also take
    /// from the source's share, which all of the source's connections
    /// share: a party behind one address delays its own large frames only.
    pub fn for_source<K: Eq + Hash + Clone>(
        &self,
        shares: &SourceShares<K>,
        source: &K,
    ) -> FrameBudget {
        FrameBudget {
            source: Some((shares.of(source), shares.units)),
            ..self.clone()
        }
    }

    /// The largest frame (header, payload and MAC) the budget can ever let
    /// through.
    pub fn largest_frame(&self) -> usize {
        FREE_FRAME.saturating_add(self.units as usize * UNIT)
    }

    /// Bytes not taken right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    /// Takes what a frame of `total` bytes needs beyond [`FREE_FRAME`],
    /// waiting until it is free; `None` if the frame needs nothing or more
    /// than the whole budget. Cancel safe: dropped while waiting, it takes
    /// nothing.
    pub(super) async fn take(&self, total: usize) -> Option<Taken> {
        let beyond = total.checked_sub(FREE_FRAME).filter(|b| *b > 0)?;
        let units = u32::try_from(beyond.div_ceil(UNIT))
            .ok()
            .filter(|u| *u <= self.units)?;
        // The source's share first: a source waiting for its own share
        // holds none of the whole budget meanwhile.
        let source = match &self.source {
            Some((share, size)) => Some(
                Arc::clone(share)
                    .acquire_many_owned(units.min(*size))
                    .await
                    .ok()?,
            ),
            None => None,
        };
        let whole = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .ok()?;
        Some(Taken {
            _whole: whole,
            _source: source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One source holds at most a quarter of the budget (here a quarter is
    /// above one largest frame); its next large frame waits while others'
    /// are let through, and gets in once one of its own is read.
    #[tokio::test]
    async fn one_source_holds_at_most_its_share_and_others_are_let_through() {
        let budget = FrameBudget::new(64 << 20);
        let shares = SourceShares::new(&budget, 4 << 20);
        let (a, b) = (
            budget.for_source(&shares, &1u8),
            budget.for_source(&shares, &2u8),
        );
        let frame = FREE_FRAME + (4 << 20);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a.take(frame).await.expect("within the share"));
        }
        let mut fifth = Box::pin(a.take(frame));
        assert!(
            futures_poll_once(&mut fifth).await.is_none(),
            "a fifth large frame from one source waits for its share"
        );
        assert!(
            b.take(frame).await.is_some(),
            "another source is let through"
        );
        held.pop();
        assert!(
            fifth.await.is_some(),
            "its own frame read, the source gets in"
        );
    }

    /// Polls `future` once: its output if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
            std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
