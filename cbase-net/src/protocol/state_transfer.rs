//! State transfer: catching up from a checkpoint instead of from the log.
//!
//! Replicas discard their log below a stable checkpoint, so a replica that
//! fell behind one (slow, partitioned, restarted) cannot replay what it
//! missed. Once it knows a checkpoint's agreed digest (2f+1 matching signed
//! checkpoint votes, or the stable checkpoint of a new view) and has not
//! executed that far for a while, it asks one peer at a time for the state
//! at that checkpoint. The state travels in chunks of the encoded checkpoint,
//! each asked for once the previous one arrived, so a state of any size fits
//! the transport's frame limit and the receiver's memory grows only as fast as
//! bytes actually arrive (up to `max_state_bytes`). The whole is only trusted
//! if it hashes to the agreed digest; a peer that serves anything else, or
//! chunks that do not fit together, is counted and another peer is asked,
//! from the start. The runtime installs the state and reports back; execution
//! then resumes after the checkpoint.

use cbase_core::codec;

use super::{Output, Replica};
use crate::checkpoint::CheckpointState;
use crate::config::ReplicaId;
use crate::message::{Checkpoint, Hash, ReplicaMessage, Seq, checkpoint_header, domain};

/// The encoded checkpoint being received from the peer asked (empty when no
/// chunk has arrived in the current attempt).
#[derive(Debug, Default)]
pub(super) struct Transfer {
    /// The length of the whole, as the first chunk announced it.
    total: u64,
    /// The bytes received so far, in order.
    bytes: Vec<u8>,
}

/// A checkpoint this replica is behind, and when it last asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Behind {
    pub seq: Seq,
    pub state: Hash,
    /// When the current attempt started (0: ask at the next tick).
    pub asked_at: u64,
    /// The peer asked last.
    pub peer: ReplicaId,
    /// A later agreed checkpoint learned of while the transfer of `seq` was
    /// under way: fetched next, if still needed, once that transfer ends.
    pub next: Option<(Seq, Hash)>,
}

impl Behind {
    /// Retargets at the later checkpoint, if one was learned of.
    fn advanced(self) -> Behind {
        match self.next {
            Some((seq, state)) => Behind {
                seq,
                state,
                next: None,
                ..self
            },
            None => self,
        }
    }
}

impl Replica {
    /// Notes that 2f+1 replicas agree on `state` at `seq`, which this
    /// replica has not executed to.
    pub(super) fn note_behind(&mut self, seq: Seq, state: Hash, ask_now: bool) {
        if self.delivered >= seq || self.behind.is_some_and(|b| b.seq >= seq) {
            return;
        }
        if let Some(behind) = self.behind.filter(|_| !self.transfer.bytes.is_empty()) {
            // A transfer is under way. Finish it rather than restart with
            // the later checkpoint: the peer serving it keeps the checkpoint
            // it served last even after newer ones replace it, while a replica that always
            // chased the newest one would never finish a large state under
            // load. The later one is fetched next, if still needed.
            if behind.next.is_none_or(|(next, _)| next < seq) {
                self.behind = Some(Behind {
                    next: Some((seq, state)),
                    ..behind
                });
            }
            return;
        }
        // Give normal execution a chance first, unless there is nothing
        // left to execute from (the log below `seq` is gone).
        let asked_at = if ask_now { 0 } else { self.now.max(1) };
        let peer = self.behind.map_or(self.id, |b| b.peer);
        self.behind = Some(Behind {
            seq,
            state,
            asked_at,
            peer,
            next: None,
        });
    }

    /// On every tick: ask the next peer if the current attempt is overdue.
    pub(super) fn fetch_state_if_overdue(&mut self, out: &mut Vec<Output>) {
        let Some(mut behind) = self.behind else {
            return;
        };
        if self.delivered >= behind.seq {
            self.behind = None;
            return;
        }
        if self.installing.is_some() {
            return;
        }
        let overdue = behind.asked_at == 0
            || self.now.saturating_sub(behind.asked_at) >= self.config.request_timeout;
        if !overdue {
            return;
        }
        // The attempt failed: a later checkpoint, if known, is the target now.
        behind = behind.advanced();
        behind.peer = (behind.peer + 1) % self.n as ReplicaId;
        if behind.peer == self.id {
            behind.peer = (behind.peer + 1) % self.n as ReplicaId;
        }
        behind.asked_at = self.now.max(1);
        self.behind = Some(behind);
        // A new attempt starts from the beginning: chunks from different
        // peers could not be blamed on either if the whole failed its check.
        self.transfer = Transfer::default();
        self.stats.state_requests += 1;
        out.push(Output::Send(
            behind.peer,
            ReplicaMessage::StateRequest {
                seq: behind.seq,
                offset: 0,
            },
        ));
    }

    pub(super) fn on_state_request(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        offset: u64,
        out: &mut Vec<Output>,
    ) {
        // Only checkpoints this replica has executed to can be served.
        if seq == 0 || seq > self.delivered {
            self.stats.out_of_window += 1;
            return;
        }
        out.push(Output::ServeState {
            to: from,
            seq,
            offset,
        });
    }

    pub(super) fn on_state_reply(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        offset: u64,
        total: u64,
        chunk: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        let Some(behind) = self.behind else {
            self.stats.stale += 1;
            return;
        };
        let received = self.transfer.bytes.len() as u64;
        if seq != behind.seq
            || self.installing.is_some()
            || self.delivered >= seq
            || from != behind.peer
            || offset != received
        {
            // Not the chunk asked for: late, duplicated, or from a peer
            // asked in an earlier attempt. Harmless, so not blamed.
            self.stats.stale += 1;
            return;
        }
        let fits = !chunk.is_empty()
            && total <= self.config.max_state_bytes
            && (received == 0 || total == self.transfer.total)
            && offset
                .checked_add(chunk.len() as u64)
                .is_some_and(|end| end <= total);
        if !fits {
            return self.reject_state(from, behind);
        }
        if received == 0 {
            self.transfer.total = total;
        }
        self.transfer.bytes.extend_from_slice(&chunk);
        let received = self.transfer.bytes.len() as u64;
        if received < total {
            // Progress: the attempt's timeout starts over with the next chunk.
            self.behind = Some(Behind {
                asked_at: self.now.max(1),
                ..behind
            });
            out.push(Output::Send(
                from,
                ReplicaMessage::StateRequest {
                    seq,
                    offset: received,
                },
            ));
            return;
        }
        let bytes = std::mem::take(&mut self.transfer).bytes;
        let state = match codec::decode::<CheckpointState>(&bytes) {
            Ok(state) if state.digest() == behind.state => state,
            _ => return self.reject_state(from, behind),
        };
        self.installing = Some(seq);
        out.push(Output::InstallState {
            seq,
            digest: behind.state,
            state,
        });
    }

    /// `from` served chunks that do not fit together, or a state that does
    /// not match the agreed digest: a lie (or garbage). Drops what it sent and
    /// asks the next peer right away.
    fn reject_state(&mut self, from: ReplicaId, behind: Behind) {
        self.stats.bad_state += 1;
        self.transfer = Transfer::default();
        self.behind = Some(Behind {
            asked_at: 0,
            peer: from,
            ..behind.advanced()
        });
    }

    /// A signed checkpoint vote beyond the window: remembered (the latest per
    /// replica); once 2f+1 replicas vote the same digest there, this replica
    /// is provably behind and fetches that state.
    pub(super) fn on_future_checkpoint(&mut self, checkpoint: Checkpoint) {
        let replica = checkpoint.replica;
        if self
            .future_checkpoints
            .get(&replica)
            .is_some_and(|known| known.seq >= checkpoint.seq)
        {
            self.stats.duplicate += 1;
            return;
        }
        let header = checkpoint_header(checkpoint.seq, &checkpoint.state, replica);
        if !self.keys[replica as usize].verify(domain::CHECKPOINT, &header, &checkpoint.signature) {
            self.stats.bad_signature += 1;
            return;
        }
        let (seq, state) = (checkpoint.seq, checkpoint.state);
        self.future_checkpoints.insert(replica, checkpoint);
        let agreeing = self
            .future_checkpoints
            .values()
            .filter(|vote| vote.seq == seq && vote.state == state)
            .count();
        if agreeing >= self.quorum {
            self.note_behind(seq, state, true);
        }
    }

    /// The runtime installed the state at `seq`: continue from there.
    pub(super) fn on_state_installed(&mut self, seq: Seq, state: Hash, out: &mut Vec<Output>) {
        self.installing = None;
        // Votes for a checkpoint beyond the old window become its proof.
        let proof: Vec<Checkpoint> = self
            .future_checkpoints
            .values()
            .filter(|vote| vote.seq == seq && vote.state == state)
            .cloned()
            .collect();
        let votes = self.checkpoint_votes.entry(seq).or_default();
        for vote in proof {
            votes.insert(vote.replica, vote);
        }
        if seq > self.delivered {
            self.delivered = seq;
        }
        if let Some(behind) = self.behind.filter(|b| b.seq <= seq) {
            self.behind = None;
            if let Some((next, state)) = behind.next {
                // Learned of during the transfer; the log may still cover
                // it, so execution gets its chance first.
                self.note_behind(next, state, false);
            }
        }
        self.own_checkpoints.insert(seq, state);
        if seq > self.low {
            self.stabilize(seq, state, out);
        } else {
            self.log = self.log.split_off(&(seq + 1));
        }
        self.deliver(out);
    }
}
