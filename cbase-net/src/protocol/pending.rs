//! Client batches waiting for a sequence number, bounded in count and bytes,
//! and served fairly across clients.
//!
//! The primary proposes from the front; a backup keeps what clients sent it
//! in case it becomes primary. Clients decide what arrives here, so the queue
//! refuses a batch once it holds `max_pending` batches or `max_pending_bytes`
//! bytes, whichever comes first, and a batch from a client that already has
//! `max_pending_per_client` batches waiting.
//!
//! The front is not the oldest batch but the next client's: clients with
//! waiting batches take turns, one batch each, so a client that floods the
//! primary gets its turn like everyone else and cannot push the others'
//! requests back behind its own. (A backup applies the same cap, so it never
//! times more of one client's batches than the primary would hold.)

use std::collections::{BTreeMap, VecDeque};

use crate::crypto::PublicKey;
use crate::message::{ClientBatch, Hash};

/// One waiting batch with its digest and encoded size.
#[derive(Debug)]
pub(super) struct Queued {
    pub digest: Hash,
    pub bytes: usize,
    pub batch: ClientBatch,
}

impl Queued {
    fn client(&self) -> PublicKey {
        self.batch.batch.client
    }
}

/// The waiting batches, by client, and the bytes they hold.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Each client's batches, oldest first; only clients with some.
    by_client: BTreeMap<PublicKey, VecDeque<Queued>>,
    /// The clients with waiting batches, in the order they are served.
    turns: VecDeque<PublicKey>,
    len: usize,
    bytes: usize,
}

/// Why a batch does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The queue holds `max_pending` batches or `max_pending_bytes` bytes.
    Queue,
    /// Its client has `max_pending_per_client` batches waiting.
    Client,
}

impl Pending {
    /// Whether one more batch of `bytes` from `client` fits the limits.
    pub fn room_for(
        &self,
        client: &PublicKey,
        bytes: usize,
        max_batches: usize,
        max_bytes: usize,
        max_per_client: usize,
    ) -> Result<(), Full> {
        if self.len >= max_batches || self.bytes.saturating_add(bytes) > max_bytes {
            return Err(Full::Queue);
        }
        if self.by_client.get(client).map_or(0, VecDeque::len) >= max_per_client {
            return Err(Full::Client);
        }
        Ok(())
    }

    pub fn push_back(&mut self, queued: Queued) {
        self.bytes += queued.bytes;
        self.len += 1;
        let client = queued.client();
        let batches = self.by_client.entry(client).or_default();
        if batches.is_empty() {
            self.turns.push_back(client);
        }
        batches.push_back(queued);
    }

    /// The next batch to propose: the oldest of the client whose turn it is.
    pub fn front(&self) -> Option<&Queued> {
        let client = self.turns.front()?;
        self.by_client.get(client)?.front()
    }

    /// Takes the next batch; its client's turn passes to the next client.
    pub fn pop_front(&mut self) -> Option<Queued> {
        let client = self.turns.pop_front()?;
        let batches = self.by_client.get_mut(&client)?;
        let queued = batches.pop_front()?;
        if batches.is_empty() {
            self.by_client.remove(&client);
        } else {
            self.turns.push_back(client);
        }
        self.bytes -= queued.bytes;
        self.len -= 1;
        Some(queued)
    }

    /// Keeps the batches `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Queued) -> bool) {
        let (mut len, mut bytes) = (0, 0);
        for batches in self.by_client.values_mut() {
            batches.retain(|queued| {
                let kept = keep(queued);
                if kept {
                    len += 1;
                    bytes += queued.bytes;
                }
                kept
            });
        }
        self.by_client.retain(|_, batches| !batches.is_empty());
        let by_client = &self.by_client;
        self.turns.retain(|client| by_client.contains_key(client));
        self.len = len;
        self.bytes = bytes;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::message::{ClientRequest, RequestBatch};

    fn queued(client: &SecretKey, number: u64) -> Queued {
        let batch = ClientBatch::sign(
            RequestBatch {
                client: client.public(),
                requests: vec![ClientRequest {
                    lane: 0,
                    number,
                    operation: vec![0; 10],
                }],
            },
            client,
        );
        Queued {
            digest: batch.digest(),
            bytes: 100,
            batch,
        }
    }

    #[test]
    fn clients_take_turns_and_each_keeps_its_order() {
        let (flood, a, b) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let mut pending = Pending::default();
        for number in 1..=5 {
            pending.push_back(queued(&flood, number));
        }
        pending.push_back(queued(&a, 1));
        pending.push_back(queued(&b, 1));
        pending.push_back(queued(&a, 2));
        let mut served = Vec::new();
        while let Some(next) = pending.pop_front() {
            served.push((next.client(), next.batch.batch.requests[0].number));
        }
        let (f, a, b) = (flood.public(), a.public(), b.public());
        assert_eq!(
            served,
            [
                (f, 1),
                (a, 1),
                (b, 1),
                (f, 2),
                (a, 2),
                (f, 3),
                (f, 4),
                (f, 5)
            ]
        );
        assert!(pending.is_empty());
        assert_eq!(pending.bytes, 0);
    }

    #[test]
    fn a_client_over_its_cap_is_refused_and_the_queue_over_its_limits() {
        let (flood, other) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let mut pending = Pending::default();
        for number in 1..=3 {
            pending.push_back(queued(&flood, number));
        }
        let room = |pending: &Pending, client: &SecretKey| {
            pending.room_for(&client.public(), 100, 10, 1_000, 3)
        };
        assert_eq!(room(&pending, &flood), Err(Full::Client));
        assert_eq!(room(&pending, &other), Ok(()));
        assert_eq!(
            pending.room_for(&other.public(), 800, 10, 1_000, 3),
            Err(Full::Queue),
            "over the bytes"
        );
        // Retaining keeps the turns consistent.
        pending.retain(|q| q.batch.batch.requests[0].number != 2);
        assert_eq!(pending.len(), 2);
        assert_eq!(room(&pending, &flood), Ok(()));
        assert_eq!(
            pending
                .pop_front()
                .map(|q| q.batch.batch.requests[0].number),
            Some(1)
        );
        assert_eq!(
            pending
                .pop_front()
                .map(|q| q.batch.batch.requests[0].number),
            Some(3)
        );
        assert!(pending.pop_front().is_none());
    }
}
