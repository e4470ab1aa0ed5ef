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
//! from it, so a party that ties up the budget with frames it never
//! finishes delays other large frames only.

use std::sync::Arc;

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
}

impl FrameBudget {
    /// A budget of `bytes` (rounded down to KiB; at most 4 TiB).
    pub fn new(bytes: usize) -> FrameBudget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX);
        FrameBudget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
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
    pub(super) async fn take(&self, total: usize) -> Option<OwnedSemaphorePermit> {
        let beyond = total.checked_sub(FREE_FRAME).filter(|b| *b > 0)?;
        let units = u32::try_from(beyond.div_ceil(UNIT))
            .ok()
            .filter(|u| *u <= self.units)?;
        Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .ok()
    }
}
