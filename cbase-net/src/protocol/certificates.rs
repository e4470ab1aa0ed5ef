//! Checking the certificates a view change carries, and computing the
//! pre-prepares a new view must re-issue from them.
//!
//! Everything here is a pure function of the messages and the cluster's
//! public keys, so the new primary and every backup compute the same result:
//! a backup accepts a new-view only if its own computation matches.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::{
    Checkpoint, Hash, PrePrepareHeader, PreparedProof, Seq, View, ViewChange, checkpoint_header,
    domain, pre_prepare_header, prepare_header, view_change_bytes,
};

/// What certificate checks need to know about the cluster.
pub(crate) struct Quorums<'a> {
    pub keys: &'a [PublicKey],
    /// Votes that make a certificate ([`ClusterConfig::quorum`](crate::config::ClusterConfig::quorum)).
    pub quorum: usize,
    pub window: u64,
}

impl Quorums<'_> {
    fn n(&self) -> usize {
        self.keys.len()
    }

    fn primary(&self, view: View) -> ReplicaId {
        (view % self.n() as u64) as ReplicaId
    }

    fn key(&self, replica: ReplicaId) -> Option<&PublicKey> {
        self.keys.get(replica as usize)
    }

    /// A quorum of checkpoints from distinct replicas, all signed, all for `(seq, state)`.
    pub fn checkpoint_proof_holds(&self, seq: Seq, state: &Hash, proof: &[Checkpoint]) -> bool {
        if seq == 0 {
            // The initial state is the same everywhere and needs no proof;
            // one given anyway is refused, lest a faulty voter fill a
            // frame with junk for a correct primary to copy into a
            // new-view too large to send.
            return proof.is_empty();
        }
        // One vote per replica at most: so a proof is at most n votes, and
        // a new-view quoting 2f+1 of them fits a frame.
        let mut signers = BTreeSet::new();
        for checkpoint in proof {
            if !signers.insert(checkpoint.replica) {
                return false;
            }
            let Some(key) = self.key(checkpoint.replica) else {
                return false;
            };
            let header = checkpoint_header(checkpoint.seq, &checkpoint.state, checkpoint.replica);
            if checkpoint.seq != seq
                || checkpoint.state != *state
                || !key.verify(domain::CHECKPOINT, &header, &checkpoint.signature)
            {
                return false;
            }
        }
        signers.len() >= self.quorum
    }

    /// A pre-prepare header signed by its view's primary. (The proposal it
    /// names was checked, client signatures included, by every correct
    /// replica that prepared it.)
    pub fn pre_prepare_holds(&self, pre_prepare: &PrePrepareHeader) -> bool {
        let primary = self.primary(pre_prepare.view);
        let Some(key) = self.key(primary) else {
            return false;
        };
        let header = pre_prepare_header(pre_prepare.view, pre_prepare.seq, &pre_prepare.digest);
        key.verify(domain::PRE_PREPARE, &header, &pre_prepare.signature)
    }

    /// A valid pre-prepare plus `quorum - 1` matching, signed prepares from
    /// distinct backups of its view.
    pub fn prepared_proof_holds(&self, proof: &PreparedProof) -> bool {
        let pre_prepare = &proof.pre_prepare;
        if !self.pre_prepare_holds(pre_prepare) {
            return false;
        }
        let primary = self.primary(pre_prepare.view);
        let mut signers = BTreeSet::new();
        for prepare in &proof.prepares {
            // One prepare per backup at most, as for checkpoint proofs.
            if !signers.insert(prepare.replica) {
                return false;
            }
            let Some(key) = self.key(prepare.replica) else {
                return false;
            };
            let header =
                prepare_header(prepare.view, prepare.seq, &prepare.digest, prepare.replica);
            if prepare.replica == primary
                || prepare.view != pre_prepare.view
                || prepare.seq != pre_prepare.seq
                || prepare.digest != pre_prepare.digest
                || !key.verify(domain::PREPARE, &header, &prepare.signature)
            {
                return false;
            }
        }
        signers.len() + 1 >= self.quorum
    }

    /// A view-change that is signed by its sender and whose certificates hold.
    pub fn view_change_holds(&self, view_change: &ViewChange) -> bool {
        let body = &view_change.body;
        let Some(key) = self.key(body.replica) else {
            return false;
        };
        if !key.verify(
            domain::VIEW_CHANGE,
            &view_change_bytes(body),
            &view_change.signature,
        ) {
            return false;
        }
        if !self.checkpoint_proof_holds(body.stable_seq, &body.stable_state, &body.checkpoint_proof)
        {
            return false;
        }
        let mut seqs = BTreeSet::new();
        body.prepared.iter().all(|proof| {
            let seq = proof.pre_prepare.seq;
            seq > body.stable_seq
                && seq <= body.stable_seq + self.window
                && proof.pre_prepare.view < body.new_view
                && seqs.insert(seq)
                && self.prepared_proof_holds(proof)
        })
    }
}

/// What a new view starts from: the highest stable checkpoint among the
/// view-changes, and for every sequence number above it up to the highest
/// prepared one, the digest of the proposal to re-issue (the one prepared in
/// the highest view, or the empty "null" proposal's where none prepared).
#[derive(Debug, PartialEq)]
pub(crate) struct NewViewPlan {
    pub stable_seq: Seq,
    pub stable_state: Hash,
    /// The signed checkpoints proving it.
    pub stable_proof: Vec<Checkpoint>,
    pub proposals: Vec<(Seq, Hash)>,
}

/// Computes the plan from view-changes that have already been checked.
pub(crate) fn plan_new_view(view_changes: &[ViewChange]) -> NewViewPlan {
    let (stable_seq, stable_state, stable_proof) = view_changes
        .iter()
        .max_by_key(|vc| vc.body.stable_seq)
        .map(|vc| {
            (
                vc.body.stable_seq,
                vc.body.stable_state,
                vc.body.checkpoint_proof.clone(),
            )
        })
        .unwrap_or((0, [0; 32], Vec::new()));
    let mut chosen: BTreeMap<Seq, &PrePrepareHeader> = BTreeMap::new();
    for vc in view_changes {
        for proof in &vc.body.prepared {
            let pre_prepare = &proof.pre_prepare;
            if pre_prepare.seq <= stable_seq {
                continue;
            }
            let better = chosen
                .get(&pre_prepare.seq)
                .is_none_or(|current| pre_prepare.view > current.view);
            if better {
                chosen.insert(pre_prepare.seq, pre_prepare);
            }
        }
    }
    let highest = chosen.keys().next_back().copied().unwrap_or(stable_seq);
    let proposals = (stable_seq + 1..=highest)
        .map(|seq| {
            let digest = match chosen.get(&seq) {
                Some(pre_prepare) => pre_prepare.digest,
                None => *super::proposals::NULL_DIGEST,
            };
            (seq, digest)
        })
        .collect();
    NewViewPlan {
        stable_seq,
        stable_state,
        stable_proof,
        proposals,
    }
}

/// The largest encoded new-view a cluster of `n` replicas (quorum
/// `quorum`) with window `window` can produce: a quorum of view-changes that
/// each carry a prepared certificate for every sequence number of the window
/// and a stable-checkpoint proof, plus a header per sequence number. An
/// upper bound computed from the encoded sizes of the parts (varint lengths
/// counted at their widest), so it can be compared with the frame limit
/// before a replica starts.
pub(crate) fn largest_new_view_bytes(quorum: usize, window: u64) -> u64 {
    use crate::crypto::Signature;
    use crate::message::{Prepare, ViewChangeBody};
    let signature = Signature::from_bytes([0xff; 64]);
    let header = PrePrepareHeader {
        view: u64::MAX,
        seq: u64::MAX,
        digest: [0xff; 32],
        signature,
    };
    let prepare = Prepare {
        view: u64::MAX,
        seq: u64::MAX,
        digest: [0xff; 32],
        replica: u32::MAX,
        signature,
    };
    let checkpoint = Checkpoint {
        seq: u64::MAX,
        state: [0xff; 32],
        replica: u32::MAX,
        signature,
    };
    let empty_body = ViewChangeBody {
        new_view: u64::MAX,
        stable_seq: u64::MAX,
        stable_state: [0xff; 32],
        checkpoint_proof: Vec::new(),
        prepared: Vec::new(),
        replica: u32::MAX,
    };
    // A vector's length takes at most 9 bytes as a varint.
    const LENGTH: u64 = 9;
    let quorum = quorum as u64;
    let proof = encode(&header) + LENGTH + (quorum - 1) * encode(&prepare);
    let view_change = encode(&empty_body)
        + quorum * encode(&checkpoint)
        + window * proof
        + 2 * LENGTH
        + encode(&signature);
    8 + LENGTH + quorum * view_change + LENGTH + window * encode(&header)
}

fn encode<T: serde::Serialize>(value: &T) -> u64 {
    cbase_core::codec::encode(value)
        .expect("protocol values always encode")
        .len() as u64
}
