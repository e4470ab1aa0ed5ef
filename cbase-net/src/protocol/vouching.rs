//! Unsigned client batches: who can tell they are genuine, and when the
//! primary may propose one.
//!
//! A client sends an unsigned batch to every replica over its own
//! authenticated connection (frame MACs keyed by the handshake). Checking
//! those MACs costs a fraction of a microsecond where verifying a signature
//! costs tens, but the proof convinces only the replica that received the
//! frame: a backup shown the batch inside a pre-prepare cannot tell a
//! genuine batch from one a faulty primary made up. So:
//!
//! - **Vouching.** A correct replica prepares a proposal only if it
//!   received every unsigned batch in it from its client itself (or checked
//!   its signature), or once f+1 replicas vouch for the proposal: the
//!   primary's pre-prepare and f prepares for the same digest. Among f+1
//!   replicas one is correct, and by induction the first correct replica to
//!   prepare received the batches itself. A prepared (and so a committed)
//!   proposal therefore carries only batches their clients sent; its
//!   certificate convinces anyone, which is why view changes and state
//!   transfers need no client signatures.
//! - **Haves.** A backup tells the primary which unsigned batches it
//!   received (digests only). The primary proposes an unsigned batch once
//!   2f backups say they have it: at least f of them are correct, so with a
//!   correct primary f+1 correct replicas prepare at once and every other
//!   correct replica then has its f+1 vouchers. A faulty client that sends
//!   a batch to too few replicas gets it proposed never, rather than
//!   stalling a sequence number and deposing a correct primary.
//! - **No timers.** Backups arm no request timers for unsigned batches (a
//!   faulty client could send one to the backups alone). A client whose
//!   unsigned batch gets no answer retransmits it signed, and the signed
//!   copy takes the path that holds a faulty primary to account.
//!
//! Everything here is bounded in count, whatever clients and peers send.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::Hash;

use super::pending::Queued;

/// The most batch digests a replica remembers having authenticated itself.
pub(super) const AUTHENTICATED: usize = 1 << 16;

/// The most digests the primary remembers per backup from its haves.
pub(super) const HAVES_PER_PEER: usize = 1 << 15;

/// The most digests one have message may carry (more are ignored).
pub(crate) const MAX_HAVE_DIGESTS: usize = 4096;

/// A set of digests that forgets the oldest beyond its capacity.
///
/// Hashed, not ordered: it is asked for membership on every client batch
/// and every batch of every proposal, and nothing ever iterates it, so its
/// order cannot make replicas differ.
#[derive(Debug)]
pub(super) struct Recent {
    order: VecDeque<Hash>,
    set: HashSet<Hash>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Recent {
        Recent {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity,
        }
    }

    /// Adds `digest`; false if it was there already.
    pub fn insert(&mut self, digest: Hash) -> bool {
        if !self.set.insert(digest) {
            return false;
        }
        self.order.push_back(digest);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }

    pub fn contains(&self, digest: &Hash) -> bool {
        self.set.contains(digest)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

/// What backups told the primary they have, per backup.
#[derive(Debug, Default)]
pub(super) struct Haves {
    by_peer: BTreeMap<ReplicaId, Recent>,
}

impl Haves {
    /// Notes that `peer` has `digest`.
    pub fn insert(&mut self, peer: ReplicaId, digest: Hash) {
        self.by_peer
            .entry(peer)
            .or_insert_with(|| Recent::new(HAVES_PER_PEER))
            .insert(digest);
    }

    /// How many peers said they have `digest`.
    pub fn count(&self, digest: &Hash) -> usize {
        self.by_peer
            .values()
            .filter(|have| have.contains(digest))
            .count()
    }

    /// Forgets everything (a new view: haves went to the old primary).
    pub fn clear(&mut self) {
        self.by_peer.clear();
    }
}

/// Unsigned batches the primary holds until enough backups have them:
/// bounded per client and in all, the oldest dropped first (its client
/// retransmits it signed).
#[derive(Debug, Default)]
pub(super) struct Unvouched {
    batches: BTreeMap<Hash, Queued>,
    /// Digests in arrival order; entries already taken out are skipped and
    /// swept once they outnumber the batches held.
    order: VecDeque<Hash>,
    /// Each client's held digests, oldest first.
    by_client: BTreeMap<PublicKey, VecDeque<Hash>>,
    bytes: usize,
}

impl Unvouched {
    pub fn contains(&self, digest: &Hash) -> bool {
        self.batches.contains_key(digest)
    }

    /// Holds `queued`, dropping the oldest batches over the bounds: at most
    /// `max_per_client` of its client's, `max_batches` and `max_bytes` in all.
    pub fn insert(
        &mut self,
        queued: Queued,
        max_batches: usize,
        max_bytes: usize,
        max_per_client: usize,
    ) {
        let client = queued.batch.batch.client;
        let held = self.by_client.get(&client).map_or(0, VecDeque::len);
        if held >= max_per_client.max(1) {
            // The client's oldest makes room: a client crowds out only itself.
            if let Some(oldest) = self.by_client.get(&client).and_then(|d| d.front()).copied() {
                self.remove(&oldest);
            }
        }
        self.bytes += queued.bytes;
        self.by_client
            .entry(client)
            .or_default()
            .push_back(queued.digest);
        self.order.push_back(queued.digest);
        self.batches.insert(queued.digest, queued);
        while self.batches.len() > max_batches || self.bytes > max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        if self.order.len() > 2 * self.batches.len() + 64 {
            let batches = &self.batches;
            self.order.retain(|digest| batches.contains_key(digest));
        }
    }

    /// Takes the batch out, if held.
    pub fn remove(&mut self, digest: &Hash) -> Option<Queued> {
        let queued = self.batches.remove(digest)?;
        self.bytes -= queued.bytes;
        let client = queued.batch.batch.client;
        if let Some(held) = self.by_client.get_mut(&client) {
            held.retain(|other| other != digest);
            if held.is_empty() {
                self.by_client.remove(&client);
            }
        }
        Some(queued)
    }

    /// Drops everything (this replica is no longer primary).
    pub fn clear(&mut self) {
        *self = Unvouched::default();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.batches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::message::{ClientBatch, ClientRequest, RequestBatch};

    fn queued(key: &SecretKey, number: u64) -> Queued {
        let batch = ClientBatch::unsigned(RequestBatch {
            client: key.public(),
            requests: vec![ClientRequest {
                lane: 0,
                number,
                operation: vec![],
            }],
        });
        Queued {
            digest: batch.digest(),
            bytes: 100,
            batch,
            source: None,
        }
    }

    #[test]
    fn recent_forgets_the_oldest_beyond_its_capacity() {
        let mut recent = Recent::new(2);
        assert!(recent.insert([1; 32]));
        assert!(!recent.insert([1; 32]));
        recent.insert([2; 32]);
        recent.insert([3; 32]);
        assert!(!recent.contains(&[1; 32]));
        assert!(recent.contains(&[2; 32]) && recent.contains(&[3; 32]));
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn haves_count_each_peer_once() {
        let mut haves = Haves::default();
        haves.insert(1, [7; 32]);
        haves.insert(1, [7; 32]);
        haves.insert(2, [7; 32]);
        assert_eq!(haves.count(&[7; 32]), 2);
        assert_eq!(haves.count(&[8; 32]), 0);
    }

    #[test]
    fn a_flooding_client_crowds_out_only_itself() {
        let (flooder, polite) = (SecretKey::generate(), SecretKey::generate());
        let mut unvouched = Unvouched::default();
        let kept = queued(&polite, 1);
        let kept_digest = kept.digest;
        unvouched.insert(kept, 100, usize::MAX, 4);
        for number in 0..50 {
            unvouched.insert(queued(&flooder, number), 100, usize::MAX, 4);
        }
        assert_eq!(unvouched.len(), 5);
        assert!(unvouched.contains(&kept_digest));
        // The global bound drops the oldest, whoever sent it.
        for number in 0..4 {
            unvouched.insert(queued(&SecretKey::generate(), number), 5, usize::MAX, 4);
        }
        assert_eq!(unvouched.len(), 5);
        assert!(!unvouched.contains(&kept_digest));
    }
}
