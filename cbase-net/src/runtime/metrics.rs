//! What a replica counts and remembers for tests and operators: drops,
//! checkpoints taken and stable, views, transfers; and how checkpoint
//! histories of several replicas compare.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::message::{Hash, Seq};
use crate::protocol::Stats;

/// How many of the newest checkpoints [`NodeMetrics::checkpoints`] and
/// [`NodeMetrics::stable`] each keep: enough to compare replicas over any
/// test or benchmark run, while a replica that runs for months holds at most
/// this many entries (about 40 bytes each). The totals are counted in
/// [`NodeMetrics::checkpoints_taken`] and [`NodeMetrics::checkpoints_stable`].
pub const CHECKPOINT_HISTORY: usize = 1024;

/// Counters and histories of one replica, for tests and operators.
///
/// Histories are bounded: they keep the newest [`CHECKPOINT_HISTORY`] entries.
#[derive(Default)]
pub struct NodeMetrics {
    /// Protocol-level drops (bad signatures, wrong view, ...).
    pub protocol: Mutex<Stats>,
    /// Frames that failed authentication or were oversized (connection closed).
    pub bad_frames: AtomicU64,
    /// Authenticated frames that did not decode (connection closed).
    pub malformed: AtomicU64,
    /// Handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Client batches signed by another client than the connection's.
    pub impersonations: AtomicU64,
    /// Signed client batches whose signature is not their client's, sent
    /// over that client's own connection (which is then closed): checked
    /// on the connection, so they never reach the protocol.
    pub forged_batches: AtomicU64,
    /// Clients refused because the replica served
    /// `TransportConfig::max_client_connections` already, or
    /// `max_clients_per_source` from the client's source.
    pub clients_over_limit: AtomicU64,
    /// Connections closed on accept because as many handshakes as a
    /// replica runs at once (`max_handshakes`), or at once from the
    /// connection's source (`max_handshakes_per_source`), were under way.
    pub handshakes_over_limit: AtomicU64,
    /// Messages dropped because a peer's send queue was full.
    pub dropped_sends: AtomicU64,
    /// Requests answered from the reply cache without agreement.
    pub cached_replies: AtomicU64,
    /// Client batches refused unordered for being larger than any proposal.
    pub oversized_requests: AtomicU64,
    /// Client connections refused because the cluster file does not admit
    /// the client.
    pub unadmitted_clients: AtomicU64,
    /// Client connections refused because the client was built for another
    /// version of the service (its interface fingerprint differs).
    pub mismatched_clients: AtomicU64,
    /// The newest checkpoints taken (at most [`CHECKPOINT_HISTORY`]), oldest
    /// first: (seq, digest). A replica that caught up by state transfer has a
    /// gap where it did not execute, so compare replicas by sequence number.
    pub checkpoints: Mutex<VecDeque<(Seq, Hash)>>,
    /// How many checkpoints were taken in all.
    pub checkpoints_taken: AtomicU64,
    /// The longest a checkpoint held execution still, in nanoseconds.
    pub checkpoint_barrier_max_nanos: AtomicU64,
    /// The time all checkpoints held execution still, in nanoseconds.
    pub checkpoint_barrier_total_nanos: AtomicU64,
    /// The newest checkpoints that became stable (at most
    /// [`CHECKPOINT_HISTORY`]), oldest first: (seq, digest).
    pub stable: Mutex<VecDeque<(Seq, Hash)>>,
    /// How many checkpoints became stable in all.
    pub checkpoints_stable: AtomicU64,
    /// How many stable checkpoints reached the data directory.
    pub checkpoints_stored: AtomicU64,
    /// Times a quorum disagreed with our checkpoint.
    pub diverged: AtomicU64,
    /// The view this replica is in.
    pub view: AtomicU64,
    /// Whether it is still recovering from a restart (see
    /// [`Replica::recovering`](crate::protocol::Replica::recovering)): until
    /// it is over it counts as one of the f faults, so a rolling restart
    /// waits for it before restarting the next replica.
    pub recovering: AtomicBool,
    /// Transferred checkpoints this replica installed.
    pub states_installed: AtomicU64,
    /// The highest sequence number agreed and handed to execution.
    pub delivered: AtomicU64,
    /// Reads answered on the fast path (with a result).
    pub reads_answered: AtomicU64,
    /// Client sessions in the client table at the newest checkpoint (at
    /// most `ProtocolConfig::sessions.max_sessions`).
    pub client_sessions: AtomicU64,
    /// Lane records in the client table at the newest checkpoint.
    pub client_lanes: AtomicU64,
    /// Encoded bytes of the client table at the newest checkpoint.
    pub client_table_bytes: AtomicU64,
    /// The executor's counters, once the replica runs.
    pub(super) work: std::sync::OnceLock<cbase_core::WorkHandle>,
}

impl NodeMetrics {
    /// Every drop counted at any layer.
    pub fn total_dropped(&self) -> u64 {
        let stats = self.protocol.lock().clone();
        stats.bad_signature
            + stats.bad_digest
            + stats.wrong_view
            + stats.wrong_sender
            + stats.out_of_window
            + stats.equivocation
            + stats.oversized
            + self.bad_frames.load(Ordering::Relaxed)
            + self.malformed.load(Ordering::Relaxed)
            + self.handshake_failures.load(Ordering::Relaxed)
            + self.impersonations.load(Ordering::Relaxed)
            + self.forged_batches.load(Ordering::Relaxed)
    }

    /// Records a checkpoint taken.
    /// What the executor's workers have done: requests, failures, time
    /// busy, running times (`None` before the replica started).
    pub fn work(&self) -> Option<cbase_core::WorkStats> {
        self.work.get().map(|handle| handle.stats())
    }

    pub(super) fn record_checkpoint(&self, seq: Seq, digest: Hash) {
        self.checkpoints_taken.fetch_add(1, Ordering::Relaxed);
        push_bounded(&mut self.checkpoints.lock(), (seq, digest));
    }

    /// Records a checkpoint that became stable.
    pub(super) fn record_stable(&self, seq: Seq, digest: Hash) {
        self.checkpoints_stable.fetch_add(1, Ordering::Relaxed);
        push_bounded(&mut self.stable.lock(), (seq, digest));
    }
}

/// How the checkpoint histories of several replicas compare, sequence number
/// by sequence number.
///
/// Histories are not compared by position: a replica that caught up by state
/// transfer skipped the checkpoints it did not execute, and one that lags has
/// not taken the newest yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointAgreement {
    /// How many sequence numbers every history has a checkpoint at.
    pub common: usize,
    /// The sequence numbers at which two histories have different digests,
    /// in order.
    pub conflicts: Vec<Seq>,
}

impl CheckpointAgreement {
    /// Compares `histories` (each a replica's `(seq, digest)` pairs, such as
    /// [`NodeMetrics::checkpoints`]).
    pub fn compare<H>(histories: impl IntoIterator<Item = H>) -> CheckpointAgreement
    where
        H: IntoIterator<Item = (Seq, Hash)>,
    {
        // Per sequence number: the first digest seen, how many histories
        // have one, and whether any differed.
        let mut seen: BTreeMap<Seq, (Hash, usize, bool)> = BTreeMap::new();
        let mut count = 0;
        for history in histories {
            count += 1;
            let history: BTreeMap<Seq, Hash> = history.into_iter().collect();
            for (seq, digest) in history {
                let entry = seen.entry(seq).or_insert((digest, 0, false));
                entry.1 += 1;
                entry.2 |= entry.0 != digest;
            }
        }
        CheckpointAgreement {
            common: seen.values().filter(|(_, n, _)| *n == count).count(),
            conflicts: seen
                .iter()
                .filter(|(_, (_, _, differ))| *differ)
                .map(|(seq, _)| *seq)
                .collect(),
        }
    }

    /// Whether no two histories differ at any sequence number.
    pub fn agree(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// Appends `entry`, dropping the oldest entries beyond [`CHECKPOINT_HISTORY`].
fn push_bounded(history: &mut VecDeque<(Seq, Hash)>, entry: (Seq, Hash)) {
    history.push_back(entry);
    while history.len() > CHECKPOINT_HISTORY {
        history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_histories_keep_the_newest_and_count_them_all() {
        let metrics = NodeMetrics::default();
        let total = CHECKPOINT_HISTORY as u64 + 10;
        for seq in 1..=total {
            metrics.record_checkpoint(seq, [seq as u8; 32]);
            metrics.record_stable(seq, [seq as u8; 32]);
        }
        for history in [&metrics.checkpoints, &metrics.stable] {
            let history = history.lock();
            assert_eq!(history.len(), CHECKPOINT_HISTORY);
            assert_eq!(history.front().unwrap().0, 11);
            assert_eq!(history.back().unwrap().0, total);
        }
        assert_eq!(metrics.checkpoints_taken.load(Ordering::Relaxed), total);
        assert_eq!(metrics.checkpoints_stable.load(Ordering::Relaxed), total);
    }

    #[test]
    fn histories_are_compared_by_sequence_number_not_position() {
        let d = |n: u8| [n; 32];
        let full = vec![(8, d(1)), (16, d(2)), (24, d(3)), (32, d(4)), (40, d(5))];
        // Caught up by state transfer at 24: no checkpoints at 8 and 16.
        let transferred = vec![(32, d(4)), (40, d(5))];
        // Lagging: has not taken the newest yet.
        let lagging = vec![(8, d(1)), (16, d(2)), (24, d(3)), (32, d(4))];
        let agreement = CheckpointAgreement::compare(
            [&full, &transferred, &lagging].map(|h| h.iter().copied()),
        );
        assert_eq!(
            agreement,
            CheckpointAgreement {
                common: 1,
                conflicts: vec![]
            }
        );
        assert!(agreement.agree());

        let diverged = vec![(8, d(1)), (16, d(9)), (24, d(3))];
        let agreement = CheckpointAgreement::compare([full.clone(), diverged]);
        assert_eq!(agreement.common, 3);
        assert_eq!(agreement.conflicts, vec![16]);
        assert!(!agreement.agree());
    }
}
