//! Client batches waiting for a sequence number, bounded in count and bytes,
//! and served fairly across clients.
//!
//! The primary proposes from the front; a backup keeps what clients sent it
//! in case it becomes primary. Clients decide what arrives here, so the queue
//! bounds the batches that came each way (from their clients directly, or
//! forwarded by one backup): it refuses a batch once those hold
//! `max_pending` batches or `max_pending_bytes` bytes, whichever comes
//! first, or once its client has `max_pending_per_client` batches among
//! them. Each way is counted apart because a backup times the batches it
//! forwards: clients that filled the primary's queue (or one client its
//! share of it) and sent one more batch to the backups alone would
//! otherwise have the forwarded copies dropped and every backup's timer run
//! out on a correct primary. A backup holds a forwarded batch at least as
//! long as the primary does (until it executes, not until it is proposed),
//! under the same bounds, so a correct backup never forwards more than the
//! primary has room for from it. The primary may thus hold up to n times
//! the bounds, each way's share bounded by its sender.
//!
//! The front is not the oldest batch but the next in a fair order: clients
//! with waiting batches take turns counted in requests (see [`Pending`]), so
//! a client that floods the primary, with many batches or with big ones,
//! gets its share like everyone else and cannot push the others' requests
//! back behind its own. (A backup applies the same cap, so it never times
//! more of one client's batches than the primary would hold.)

use std::collections::BTreeMap;

use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::{ClientBatch, Hash};

/// One waiting batch with its digest and encoded size.
#[derive(Debug)]
pub(super) struct Queued {
    pub digest: Hash,
    pub bytes: usize,
    pub batch: ClientBatch,
    /// The backup that forwarded it, or `None` if its client sent it here.
    pub source: Option<ReplicaId>,
}

impl Queued {
    fn client(&self) -> PublicKey {
        self.batch.batch.client
    }
}

/// The waiting batches in the order they are served, and what each client
/// has queued.
///
/// Self-clocked fair queuing, in requests: a batch of `r` requests gets the
/// tag `max(its client's previous tag, the tag last served) + r`, and the
/// smallest tag goes first. A client that sends one request at a time is
/// served next to one that sends batches of hundreds as if each request
/// were a turn, instead of waiting a whole big batch per turn; clients
/// sending alike take turns batch for batch; and each client's batches keep
/// their order. Only the primary's proposals follow this order, and they
/// are agreed, so replicas need not compute it alike.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Every waiting batch by (tag, arrival).
    queue: BTreeMap<(u64, u64), Queued>,
    /// Each client with waiting batches: how many, and its last tag.
    clients: BTreeMap<PublicKey, (usize, u64)>,
    /// What the limits count of the waiting batches.
    tally: Tally,
    /// The tag of the batch served last.
    served: u64,
    /// Batches queued so far: breaks ties between equal tags by arrival.
    arrivals: u64,
}

/// The waiting batches counted as the limits count them: kept as batches
/// come and go, and counted afresh when some are dropped at once.
#[derive(Debug, Default)]
struct Tally {
    /// How many batches of each client came each way (see the module
    /// documentation).
    shares: BTreeMap<(PublicKey, Option<ReplicaId>), usize>,
    /// How many batches, and how many bytes, came each way.
    ways: BTreeMap<Option<ReplicaId>, (usize, usize)>,
}

impl Tally {
    fn add(&mut self, queued: &Queued) {
        *self
            .shares
            .entry((queued.client(), queued.source))
            .or_default() += 1;
        let way = self.ways.entry(queued.source).or_default();
        way.0 += 1;
        way.1 += queued.bytes;
    }

    fn remove(&mut self, queued: &Queued) {
        let share = (queued.client(), queued.source);
        if let Some(count) = self.shares.get_mut(&share) {
            *count -= 1;
            if *count == 0 {
                self.shares.remove(&share);
            }
        }
        if let Some(way) = self.ways.get_mut(&queued.source) {
            way.0 -= 1;
            way.1 -= queued.bytes;
            if way.0 == 0 {
                self.ways.remove(&queued.source);
            }
        }
    }
}

/// Why a batch does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The batches that came its way hold `max_pending` batches or
    /// `max_pending_bytes` bytes.
    Queue,
    /// Its client has `max_pending_per_client` batches waiting.
    Client,
}

impl Pending {
    /// Whether one more batch of `bytes` from `client`, come from
    /// `source`, fits the limits.
    pub fn room_for(
        &self,
        client: &PublicKey,
        source: Option<ReplicaId>,
        bytes: usize,
        max_batches: usize,
        max_bytes: usize,
        max_per_client: usize,
    ) -> Result<(), Full> {
        let (batches, held) = self.tally.ways.get(&source).copied().unwrap_or_default();
        if batches >= max_batches || held.saturating_add(bytes) > max_bytes {
            return Err(Full::Queue);
        }
        let share = self.tally.shares.get(&(*client, source)).copied();
        if share.unwrap_or(0) >= max_per_client {
            return Err(Full::Client);
        }
        Ok(())
    }

    pub fn push_back(&mut self, queued: Queued) {
        let requests = queued.batch.batch.requests.len().max(1) as u64;
        let (count, last) = self
            .clients
            .entry(queued.client())
            .or_insert((0, self.served));
        let tag = (*last).max(self.served).saturating_add(requests);
        *count += 1;
        *last = tag;
        self.tally.add(&queued);
        self.arrivals += 1;
        self.queue.insert((tag, self.arrivals), queued);
    }

    /// The next batch to propose: the smallest tag.
    pub fn front(&self) -> Option<&Queued> {
        self.queue.first_key_value().map(|(_, queued)| queued)
    }

    /// Takes the next batch.
    pub fn pop_front(&mut self) -> Option<Queued> {
        let ((tag, _), queued) = self.queue.pop_first()?;
        self.served = self.served.max(tag);
        let client = queued.client();
        if let Some((count, _)) = self.clients.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.clients.remove(&client);
            }
        }
        self.tally.remove(&queued);
        Some(queued)
    }

    /// Keeps the batches `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Queued) -> bool) {
        self.queue.retain(|_, queued| keep(queued));
        let mut clients: BTreeMap<PublicKey, (usize, u64)> = BTreeMap::new();
        let mut tally = Tally::default();
        for ((tag, _), queued) in &self.queue {
            let (count, last) = clients.entry(queued.client()).or_default();
            *count += 1;
            *last = (*last).max(*tag);
            tally.add(queued);
        }
        self.clients = clients;
        self.tally = tally;
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
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
            source: None,
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
        assert!(pending.tally.ways.is_empty() && pending.tally.shares.is_empty());
    }

    fn batch_of(client: &SecretKey, number: u64, requests: usize) -> Queued {
        let batch = ClientBatch::unsigned(RequestBatch {
            client: client.public(),
            requests: (0..requests as u64)
                .map(|at| ClientRequest {
                    lane: at as u32,
                    number,
                    operation: Vec::new(),
                })
                .collect(),
        });
        Queued {
            digest: batch.digest(),
            bytes: 100,
            batch,
            source: None,
        }
    }

    #[test]
    fn a_client_sending_one_request_at_a_time_is_not_held_behind_big_batches() {
        let (flood, polite) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let mut pending = Pending::default();
        for number in 1..=4 {
            pending.push_back(batch_of(&flood, number, 256));
        }
        // The flood's first batch is being proposed when the polite
        // client's request arrives: it goes next, not after three more.
        assert_eq!(pending.pop_front().unwrap().client(), flood.public());
        pending.push_back(batch_of(&polite, 1, 1));
        assert_eq!(pending.pop_front().unwrap().client(), polite.public());
        // Over 256 requests' worth of service, the polite client's one-request
        // batches go 256 times for one of the flood's.
        for number in 2..=300 {
            pending.push_back(batch_of(&polite, number, 1));
        }
        let served: Vec<bool> = (0..258)
            .map(|_| pending.pop_front().unwrap().client() == flood.public())
            .collect();
        assert_eq!(served.iter().filter(|flood| **flood).count(), 1);
    }

    #[test]
    fn a_client_over_its_cap_is_refused_and_the_queue_over_its_limits() {
        let (flood, other) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let mut pending = Pending::default();
        for number in 1..=3 {
            pending.push_back(queued(&flood, number));
        }
        let room = |pending: &Pending, client: &SecretKey| {
            pending.room_for(&client.public(), None, 100, 10, 1_000, 3)
        };
        assert_eq!(room(&pending, &flood), Err(Full::Client));
        assert_eq!(room(&pending, &other), Ok(()));
        // A backup's forwards are a share of their own.
        assert_eq!(
            pending.room_for(&flood.public(), Some(2), 100, 10, 1_000, 3),
            Ok(())
        );
        assert_eq!(
            pending.room_for(&other.public(), None, 800, 10, 1_000, 3),
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
