//! Proposals by sequence number and digest, apart from the agreement on them.
//!
//! Certificates name proposals by digest only, so a replica entering a new
//! view may agree on a slot whose proposal it never received (it missed the
//! pre-prepare, or prepared another view's proposal there). It executes the
//! slot once it has the proposal, which it fetches from a peer: the digest the
//! quorum agreed on decides whether an answer is the one asked for, so any
//! peer may serve it. Proposals are kept for the sequence numbers above the
//! stable checkpoint that the log or a prepared certificate refers to, so at
//! least the f+1 correct replicas that prepared a proposal can serve it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ReplicaId;
use crate::message::{Hash, Proposal, Seq};

/// Known proposals, and the ones this replica waits for.
#[derive(Debug, Default)]
pub(super) struct Proposals {
    known: BTreeMap<(Seq, Hash), Proposal>,
    /// Slots whose agreed digest names a proposal not known yet, with the
    /// number of times it was asked for (to rotate through peers).
    missing: BTreeMap<Seq, (Hash, u32)>,
}

impl Proposals {
    pub fn insert(&mut self, seq: Seq, digest: Hash, proposal: Proposal) {
        if self.missing.get(&seq).is_some_and(|(d, _)| *d == digest) {
            self.missing.remove(&seq);
        }
        self.known.insert((seq, digest), proposal);
    }

    pub fn get(&self, seq: Seq, digest: &Hash) -> Option<&Proposal> {
        self.known.get(&(seq, *digest))
    }

    /// Notes that slot `seq` needs the proposal with `digest`; returns
    /// whether it is already known.
    pub fn need(&mut self, seq: Seq, digest: Hash) -> bool {
        if self.known.contains_key(&(seq, digest)) {
            self.missing.remove(&seq);
            return true;
        }
        if digest == *NULL_DIGEST {
            self.known.insert((seq, digest), Proposal::null());
            return true;
        }
        let entry = self.missing.entry(seq).or_insert((digest, 0));
        if entry.0 != digest {
            *entry = (digest, 0);
        }
        false
    }

    /// Whether slot `seq` waits for the proposal with `digest`.
    pub fn is_missing(&self, seq: Seq, digest: &Hash) -> bool {
        self.missing.get(&seq).is_some_and(|(d, _)| d == digest)
    }

    /// The fetches to send now: up to `limit` missing proposals, each asked
    /// of the next peer in turn (never `me`).
    pub fn fetches(
        &mut self,
        n: usize,
        me: ReplicaId,
        limit: usize,
    ) -> Vec<(ReplicaId, Seq, Hash)> {
        let mut asks = Vec::new();
        for (seq, (digest, attempts)) in self.missing.iter_mut().take(limit) {
            let mut peer = ((*seq + u64::from(*attempts)) % n as u64) as ReplicaId;
            if peer == me {
                peer = (peer + 1) % n as ReplicaId;
            }
            *attempts = attempts.wrapping_add(1);
            asks.push((peer, *seq, *digest));
        }
        asks
    }

    /// Keeps only proposals above `low` that `referenced` names, and drops
    /// wishes at or below `low`.
    pub fn retain(&mut self, low: Seq, referenced: &BTreeSet<(Seq, Hash)>) {
        self.known
            .retain(|key, _| key.0 > low && referenced.contains(key));
        self.missing = self.missing.split_off(&(low + 1));
    }

    /// Drops everything at or below `low`.
    pub fn forget_up_to(&mut self, low: Seq) {
        self.known = self.known.split_off(&(low + 1, [0; 32]));
        self.missing = self.missing.split_off(&(low + 1));
    }

    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }
}

/// The digest of [`Proposal::null`].
pub(super) static NULL_DIGEST: std::sync::LazyLock<Hash> =
    std::sync::LazyLock::new(|| Proposal::null().digest());
