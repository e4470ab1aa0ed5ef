//! The batches a backup watches the primary for (its request timers).
//!
//! A backup that learns of a client batch not yet executed starts a timer
//! for it; if the batch is not executed in time it suspects the primary. A
//! timer must end however the batch gets executed: by this replica's own
//! execution, or skipped over by a state transfer. The latter shows up only
//! in the transferred client table, so each timer keeps which requests its
//! batch carries (a few bytes each) and not just the batch's digest: a
//! backup may time a batch it does not hold (it saw the batch proposed, then
//! the client retransmitted it).

use std::collections::BTreeMap;

use crate::checkpoint::ClientTable;
use crate::crypto::PublicKey;
use crate::message::ClientBatch;

/// One timed batch.
#[derive(Clone, Debug)]
pub(super) struct Awaited {
    /// When the timer started (or was last given a fresh start).
    pub since: u64,
    client: PublicKey,
    /// `(lane, number)` of each request in the batch.
    requests: Vec<(u32, u64)>,
}

impl Awaited {
    /// A timer for `batch` started at `now`.
    pub fn new(now: u64, batch: &ClientBatch) -> Awaited {
        Awaited {
            since: now,
            client: batch.batch.client,
            requests: batch
                .batch
                .requests
                .iter()
                .map(|request| (request.lane, request.number))
                .collect(),
        }
    }

    /// Whether a state with this client table executed every request of the
    /// batch (its lane's record is at or past the request's number).
    pub fn executed_in(&self, clients: &ClientTable) -> bool {
        executed(clients, &self.client, self.requests.iter().copied())
    }

    /// Notes the requests a delivered proposal executed (the highest number
    /// per client and lane); returns whether every request of this batch is
    /// now executed, in whatever batch it came. A client may send one
    /// request in several batches (re-batched on retransmission, or a faulty
    /// client on purpose), and the batch timed need not be the one ordered.
    pub fn note_executed(&mut self, executed: &Executed) -> bool {
        let client = self.client;
        self.requests.retain(|(lane, number)| {
            executed
                .get(&(client, *lane))
                .is_none_or(|highest| highest < number)
        });
        self.requests.is_empty()
    }
}

/// The highest request number a proposal executed, per client and lane.
pub(super) type Executed = BTreeMap<(PublicKey, u32), u64>;

/// What `batches` execute: the highest request number per client and lane.
pub(super) fn executed_by(batches: &[ClientBatch]) -> Executed {
    let mut executed = Executed::new();
    for batch in batches {
        for request in &batch.batch.requests {
            let highest = executed
                .entry((batch.batch.client, request.lane))
                .or_default();
            *highest = (*highest).max(request.number);
        }
    }
    executed
}

/// Whether a state with this client table settled every request
/// `(lane, number)` of `client`: executed it (its lane's record is at or
/// past it), or will never execute it (its session expired).
pub(super) fn executed(
    clients: &ClientTable,
    client: &PublicKey,
    mut requests: impl Iterator<Item = (u32, u64)>,
) -> bool {
    requests.all(|(lane, number)| clients.settled(client, lane, number))
}
