//! What a replica keeps on disk so that it cannot contradict itself after a
//! restart, and so that a restart of every replica loses nothing a client
//! saw complete.
//!
//! The protocol decides *what* must be durable and *when*; the runtime
//! decides *how* (see `cbase_net::storage`). Before a replica acts on a
//! decision that a restart must not forget, it emits
//! [`Output::Persist`](super::Output::Persist), and the runtime writes
//! everything persisted in a burst of outputs to disk (one sync) before it
//! sends any of that burst's messages:
//!
//! - [`Durable::Proposal`], with a backup's first prepare for a proposal
//!   it holds. A faulty primary can assemble a prepared certificate from
//!   the prepares of correct backups that never prepared the proposal
//!   themselves, and every later view must then re-issue its digest; at
//!   least f correct backups signed that certificate, and they can serve
//!   the proposal after a restart too. This record alone is not synced on
//!   its own: the runtime writes it in the commit of the backup's next
//!   synced record (its next commit vote, or its vote for a view change,
//!   which a slot that does not commit brings within a request timeout).
//!   Syncing it before the prepare would put a second `fsync` on the path
//!   of every batch (a fifth of durable throughput, measured). So the
//!   proposal is lost only if every correct backup that vouched for it
//!   crashes within that time of vouching, while a faulty replica holds a
//!   certificate for it.
//! - [`Durable::Prepared`], just before its commit vote for a batch. A batch
//!   that committed anywhere prepared at a quorum; each of those replicas
//!   wrote its prepared certificate before voting to commit, so after any
//!   restart, every quorum of view-change votes still includes a correct
//!   replica that carries it, and the next view keeps the batch at its
//!   sequence number (PBFT's view-change argument, with the disk standing in
//!   for memory).
//! - [`Durable::View`] before a replica votes for a view, and
//!   [`Durable::Entered`] before it enters one: it promises to take part in
//!   no lower view. After a restart it takes part in no view up to the
//!   highest it wrote (see `recovery.rs`), so it cannot prepare a second
//!   proposal where it prepared one before, or, as a primary, assign a
//!   sequence number twice. Entering also records the highest sequence
//!   number the new view carried, which is what reads must wait for after a
//!   restart (see [`Replica::read_barrier`](super::Replica::read_barrier)).
//! - [`Durable::Window`] before its first pre-prepare or prepare of a view
//!   above the number it last wrote for that view (it writes how far its
//!   window reaches, so once a window, not once a message). After a restart
//!   in the view it entered, nothing it did in that view is above it, so
//!   once its stable checkpoint reaches that number it takes part in the
//!   view again without waiting for a view change (see `recovery.rs`).
//!
//! The stable checkpoint (with its proof) and the batches executed above it
//! are written by the runtime, which has the state; [`Recovered`] brings all
//! of it back to [`Replica::recover`](super::Replica::recover).

use serde::{Deserialize, Serialize};

use super::Replica;
use super::recovery::Recovery;
use crate::config::{ClusterConfig, ReplicaId};
use crate::crypto::SecretKey;
use crate::message::{Checkpoint, Hash, PreparedProof, Proposal, Seq, View};

/// Something a replica must have on disk before the outputs that follow it
/// take effect: its prepared certificate before its commit vote (so a
/// restart of every replica cannot lose a batch that committed), and the
/// view it votes for or enters (so after a restart it takes part in no view
/// it may have voted in before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Durable {
    /// The replica prepared a batch and is about to vote to commit it.
    Prepared {
        /// The prepared certificate.
        proof: PreparedProof,
        /// The proposal, if the replica has it (it may still be fetching
        /// it when the batch prepares) and has not written it already as a
        /// [`Durable::Proposal`].
        proposal: Option<Proposal>,
    },
    /// The backup is about to send its prepare for this proposal in `view`:
    /// it keeps it until a stable checkpoint covers `seq`, so that it can
    /// serve it to peers a later view re-issues it to. Not synced on its
    /// own ([`Durable::must_sync`]).
    Proposal {
        /// The view of the pre-prepare or prepare.
        view: View,
        /// The sequence number.
        seq: Seq,
        /// The proposal's digest.
        digest: Hash,
        /// The proposal.
        proposal: Proposal,
    },
    /// The replica votes for this view: it will take part in no view below it.
    View(View),
    /// The replica enters `view`, whose new-view carried sequence numbers up
    /// to `carried` (or started above a checkpoint there): it will take part
    /// in no view below it, and everything that may have committed before
    /// the view is at or below `carried`.
    Entered {
        /// The view entered.
        view: View,
        /// The highest sequence number the view's new-view carried.
        carried: Seq,
    },
    /// In `view`, the replica may send a pre-prepare or a prepare for any
    /// number up to `seq`, and none above.
    Window {
        /// The view.
        view: View,
        /// The highest number.
        seq: Seq,
    },
    /// A replica started from a restored copy (see
    /// [`Replica::recover_restored`]) ended its recovery: its directory now
    /// holds its own votes again, and a later start from it is an ordinary
    /// restart. Until this is written, the runtime starts it as restored
    /// whether or not it is told to.
    RestoreOver,
}

impl Durable {
    /// Whether the runtime must have this record on disk (synced) before
    /// the burst's messages leave. A [`Durable::Proposal`] need not: it
    /// may wait, and go to disk in the commit of the replica's next record
    /// that must (see `durable.rs`).
    pub fn must_sync(&self) -> bool {
        !matches!(self, Durable::Proposal { .. })
    }

    /// The view this record promises not to go below, if any.
    pub fn view(&self) -> Option<View> {
        match self {
            Durable::Prepared { .. }
            | Durable::Proposal { .. }
            | Durable::Window { .. }
            | Durable::RestoreOver => None,
            Durable::View(view) | Durable::Entered { view, .. } => Some(*view),
        }
    }
}

/// What a replica found on its own disk at a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The highest view it wrote ([`Durable::View`] or [`Durable::Entered`]).
    pub view: View,
    /// The last view it entered, with the highest sequence number that
    /// view's new-view carried (`None`: it entered none, or its directory
    /// predates the record).
    pub entered: Option<(View, Seq)>,
    /// Its stable checkpoint: sequence number, agreed digest and the quorum
    /// of signed votes that proves it (`None`: the initial state).
    pub stable: Option<(Seq, Hash, Vec<Checkpoint>)>,
    /// The prepared certificates it wrote above that checkpoint.
    pub prepared: Vec<(PreparedProof, Option<Proposal>)>,
    /// The proposals it wrote above that checkpoint
    /// ([`Durable::Proposal`]), as (view, sequence number, digest, proposal).
    pub proposals: Vec<(View, Seq, Hash, Proposal)>,
    /// The last [`Durable::Window`] it wrote, (view, number): in that view
    /// it sent no pre-prepare or prepare above the number (`None`: it wrote
    /// none, or its directory predates the record).
    pub window: Option<(View, Seq)>,
    /// It was started from a restored copy and its recovery has not ended
    /// since ([`Durable::RestoreOver`]): start it as restored again.
    pub restored: bool,
    /// The last sequence number its execution has executed, the batches it
    /// wrote above the checkpoint replayed (at least the checkpoint's).
    pub executed: Seq,
    /// The proposals of those executed batches, with their digests, so that
    /// it can serve them to peers that fetch them.
    pub executed_proposals: Vec<(Seq, Hash, Proposal)>,
}

impl Replica {
    /// A replica restarted from its own disk: at its stable checkpoint, with
    /// its execution at `recovered.executed`, its prepared certificates in
    /// every view-change vote it sends, and (like
    /// [`Replica::restarted`]) taking part in no view up to the highest it
    /// wrote (what peers claim adds nothing to that: a faulty peer claiming
    /// a view far ahead would keep it learning for good). If it wrote a view
    /// above 0 it restarts voting for that view again, since it may have
    /// only voted for it and the vote was lost. So it can neither
    /// contradict a vote it cast before the restart nor forget a batch that
    /// may have committed.
    pub fn recover(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: super::ProtocolConfig,
        recovered: Recovered,
    ) -> Replica {
        Replica::recover_from(id, cluster, secret, config, recovered, None)
    }

    /// A replica started from a directory put back from a copy (a backup),
    /// which may be older than what it did since: it keeps the copy's
    /// stable checkpoint, certificates and executed batches (so it fetches
    /// only what changed since), but the copy's views are only a lower bound
    /// of those it voted in, so it recovers as one restarted without its
    /// memory does ([`Replica::restarted`]): it takes part in no view up to
    /// the highest it hears of from n - q + f peers before it first votes,
    /// and answers no reads until then.
    pub fn recover_restored(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: super::ProtocolConfig,
        recovered: Recovered,
    ) -> Replica {
        let probe = super::random_probe();
        Replica::recover_from(id, cluster, secret, config, recovered, Some(probe))
    }

    /// With `restored_probe`, as [`Replica::recover_restored`].
    fn recover_from(
        id: ReplicaId,
        cluster: &ClusterConfig,
        secret: SecretKey,
        config: super::ProtocolConfig,
        recovered: Recovered,
        restored_probe: Option<u64>,
    ) -> Replica {
        let mut replica = Replica::new(id, cluster, secret, config);
        replica.recovery = Some(match restored_probe {
            Some(probe) => Recovery::restored(recovered.view, probe),
            None => Recovery::above(recovered.view),
        });
        if let Some((seq, state, proof)) = recovered.stable {
            replica.low = seq;
            replica.stable_state = state;
            replica.stable_proof = proof;
        }
        replica.delivered = recovered.executed.max(replica.low);
        replica.next_seq = replica.delivered + 1;
        for (seq, digest, proposal) in recovered.executed_proposals {
            if seq > replica.low {
                replica.proposals.insert(seq, digest, proposal);
            }
        }
        // What it vouched for before the restart: kept, and served, as
        // before it (see `Replica::pre_prepared`).
        for (view, seq, digest, proposal) in recovered.proposals {
            if seq <= replica.low || proposal.digest() != digest {
                continue;
            }
            replica.proposals.insert(seq, digest, proposal);
            replica.note_pre_prepared(view, seq, digest);
            replica.proposals_on_disk.insert((seq, digest));
        }
        for (proof, proposal) in recovered.prepared {
            let (seq, digest) = (proof.pre_prepare.seq, proof.pre_prepare.digest);
            if seq <= replica.low {
                continue;
            }
            if let Some(proposal) = proposal.filter(|p| p.digest() == digest) {
                replica.proposals.insert(seq, digest, proposal);
            }
            // A later view's certificate for a slot replaces an earlier one.
            let newer = replica
                .prepared
                .get(&seq)
                .is_none_or(|held| held.pre_prepare.view <= proof.pre_prepare.view);
            if newer {
                replica.prepared.insert(seq, proof);
            }
        }
        // Reads wait for what it voted to commit before the restart too: if
        // it entered the view its disk names, for what that view carried and
        // what it prepared there since, as in memory before the restart (a
        // certificate from an earlier view above what the view carried never
        // committed, and nothing will fill its number in an idle cluster);
        // otherwise for every certificate it has, until it enters a view.
        let highest_certified = |from: View| {
            replica
                .prepared
                .values()
                .filter(|proof| proof.pre_prepare.view >= from)
                .map(|proof| proof.pre_prepare.seq)
                .max()
                .unwrap_or(0)
        };
        let highest = match recovered.entered {
            Some((view, carried)) if view == recovered.view => carried.max(highest_certified(view)),
            _ => highest_certified(0),
        };
        replica.highest_prepared = highest;
        // A certificate from the view its disk names means it entered that
        // view (certificates are only made in the view one works in): it
        // needs no vote for it, and must not cast one again, since its disk
        // keeps only the latest certificate per slot, and the one from an
        // earlier view that its lost vote carried may be gone, so a second
        // signed vote for the view could say less prepared than the first.
        // It takes up the view as a learner.
        let entered = replica
            .prepared
            .values()
            .any(|proof| proof.pre_prepare.view >= recovered.view);
        // Restarted in the view it had entered, with the disk naming how far
        // its window reached: it takes part there again once its checkpoint
        // is past that (see `recovery.rs`). Not from a restored copy, whose
        // window may have moved on since.
        let in_entered_view = entered
            || recovered.view == 0
            || recovered
                .entered
                .is_some_and(|(view, _)| view == recovered.view);
        // A record for an earlier view says nothing of this one. Nor does
        // none at all: a directory written before the record existed.
        if restored_probe.is_none()
            && in_entered_view
            && let Some(recovery) = &mut replica.recovery
        {
            recovery.rejoin_at = recovered
                .window
                .filter(|(view, _)| *view == recovered.view)
                .map(|(_, seq)| seq);
        }
        replica.window_written = recovered.window.unwrap_or((0, 0));
        if recovered.view > 0 && (entered || restored_probe.is_some()) {
            // A restored copy's vote for its view is no promise: it may
            // have voted again since. It casts none from the copy, and
            // follows the others as a learner until it may vote.
            replica.view = recovered.view;
        } else if recovered.view > 0 {
            // The disk does not say whether it entered that view or only
            // voted for it, and the vote was lost with its memory. So it
            // votes for it again, from its disk: the peers may still wait
            // for that vote, and refusing theirs for a view it counts as its
            // own would leave the view change short of a quorum. Its
            // certificates are a superset of those the lost vote carried
            // (each was written before its commit vote left); one from that
            // view itself, if it entered it, is no part of a vote for it.
            // If it entered the view, a peer relays the new-view and it
            // follows the others in as a learner.
            let target = recovered.view;
            replica.view = target - 1;
            replica.status = super::Status::ChangingTo { target, since: 0 };
            let body = crate::message::ViewChangeBody {
                new_view: target,
                stable_seq: replica.low,
                stable_state: replica.stable_state,
                checkpoint_proof: replica.stable_proof.clone(),
                prepared: replica
                    .prepared
                    .values()
                    .filter(|proof| proof.pre_prepare.view < target)
                    .cloned()
                    .collect(),
                replica: id,
            };
            let signature = replica.secret.sign(
                crate::message::domain::VIEW_CHANGE,
                &crate::message::view_change_bytes(&body),
            );
            replica
                .view_changes
                .entry(target)
                .or_default()
                .insert(id, crate::message::ViewChange { body, signature });
        }
        replica
    }
}
