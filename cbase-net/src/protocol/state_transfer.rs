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
use crate::checkpoint::{CheckpointState, ClientTable};
use crate::config::ReplicaId;
use crate::message::{
    Checkpoint, Hash, ReplicaMessage, Seq, SignedBatch, checkpoint_header, domain,
};

/// The encoded checkpoint being received from the peer asked (empty when no
/// chunk has arrived in the current attempt).
#[derive(Debug, Default)]
pub(super) struct Transfer {
    /// The length of the whole, as the first chunk announced it.
    total: u64,
    /// The bytes received so far, in order.
    bytes: Vec<u8>,
}

/// A checkpoint and the quorum of signed votes that proves its digest. The
/// proof travels with the checkpoint from the moment it is learned of: once
/// installed it becomes this replica's stable checkpoint, and its view-changes
/// must carry the proof or every peer would reject them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Certified {
    pub seq: Seq,
    pub state: Hash,
    pub proof: Vec<Checkpoint>,
}

/// A checkpoint this replica must fetch, and the current attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Behind {
    pub target: Certified,
    /// When the current attempt started (0: ask at the next tick).
    pub asked_at: u64,
    /// The peer asked last.
    pub peer: ReplicaId,
    /// A later agreed checkpoint learned of while the transfer of `target`
    /// was under way: fetched next, if still needed, once that transfer ends.
    pub next: Option<Certified>,
    /// This replica executed past `target` with a state the quorum disagrees
    /// with: it fetches the certified state even though it "has" that
    /// checkpoint, and re-executes from there.
    pub repair: bool,
}

impl Behind {
    /// Retargets at the later checkpoint, if one was learned of.
    fn advanced(self) -> Behind {
        match self.next {
            Some(target) => Behind {
                target,
                next: None,
                repair: false,
                ..self
            },
            None => self,
        }
    }
}

impl Replica {
    /// Notes that a quorum agrees on `certified`, which this replica has
    /// not executed to.
    pub(super) fn note_behind(&mut self, certified: Certified, ask_now: bool) {
        let seq = certified.seq;
        if self.delivered >= seq || self.behind.as_ref().is_some_and(|b| b.target.seq >= seq) {
            return;
        }
        let under_way = !self.transfer.bytes.is_empty() || self.installing.is_some();
        if let Some(behind) = self.behind.as_mut().filter(|_| under_way) {
            // A transfer is under way. Finish it rather than restart with
            // the later checkpoint: the peer serving it keeps the checkpoint
            // it served last even after newer ones replace it, while a replica that always
            // chased the newest one would never finish a large state under
            // load. The later one is fetched next, if still needed.
            if behind.next.as_ref().is_none_or(|next| next.seq < seq) {
                behind.next = Some(certified);
            }
            return;
        }
        // Give normal execution a chance first, unless there is nothing
        // left to execute from (the log below `seq` is gone).
        let asked_at = if ask_now { 0 } else { self.now.max(1) };
        let peer = self.behind.as_ref().map_or(self.id, |b| b.peer);
        self.behind = Some(Behind {
            target: certified,
            asked_at,
            peer,
            next: None,
            repair: false,
        });
    }

    /// A quorum agrees on a digest at `certified.seq` that differs from this
    /// replica's own: its state went wrong (a bug, a corrupted disk, a
    /// non-deterministic service). It fetches the certified state at once,
    /// installs it and re-executes what it had executed after it.
    pub(super) fn repair(&mut self, certified: Certified, out: &mut Vec<Output>) {
        let repairing = self
            .behind
            .as_ref()
            .is_some_and(|b| b.repair && b.target.seq >= certified.seq);
        if repairing || self.installing.is_some() {
            // Already on it; or installing a state, whose checkpoints will
            // be compared again.
            return;
        }
        out.push(Output::Diverged {
            seq: certified.seq,
            state: certified.state,
        });
        self.transfer = Transfer::default();
        let peer = self.behind.as_ref().map_or(self.id, |b| b.peer);
        self.behind = Some(Behind {
            target: certified,
            asked_at: 0,
            peer,
            next: None,
            repair: true,
        });
    }

    /// How long the current attempt may take: the first chunk within the
    /// request timeout, and the whole at no less than `min_transfer_rate`
    /// after that. Progress is judged over the whole attempt, not per
    /// chunk, so a peer that drips a byte now and then cannot keep it alive.
    fn transfer_deadline(&self) -> u64 {
        let rate = self.config.min_transfer_rate.max(1);
        let transfer_time = (self.transfer.total as u128 * 1_000_000_000 / rate as u128)
            .min(u64::MAX as u128) as u64;
        self.config.request_timeout.saturating_add(transfer_time)
    }

    /// On every tick: ask the next peer if the current attempt is overdue.
    pub(super) fn fetch_state_if_overdue(&mut self, out: &mut Vec<Output>) {
        let Some(mut behind) = self.behind.clone() else {
            return;
        };
        if self.delivered >= behind.target.seq && !behind.repair {
            // Execution got there by itself; a later checkpoint queued
            // behind this one is still to be reached.
            self.transfer = Transfer::default();
            self.behind = behind
                .next
                .filter(|next| next.seq > self.delivered)
                .map(|next| Behind {
                    target: next,
                    asked_at: self.now.max(1),
                    peer: behind.peer,
                    next: None,
                    repair: false,
                });
            return;
        }
        if self.installing.is_some() {
            return;
        }
        let overdue = behind.asked_at == 0
            || self.now.saturating_sub(behind.asked_at) >= self.transfer_deadline();
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
        let (peer, seq) = (behind.peer, behind.target.seq);
        self.behind = Some(behind);
        // A new attempt starts from the beginning: chunks from different
        // peers could not be blamed on either if the whole failed its check.
        self.transfer = Transfer::default();
        self.stats.state_requests += 1;
        out.push(Output::Send(
            peer,
            ReplicaMessage::StateRequest { seq, offset: 0 },
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
        // A replica fetching a state asks for one chunk after another, each
        // further on; it starts over only in a new attempt, after a timeout.
        // So a peer gets each chunk at most once per request timeout, and a
        // flood of requests costs us no more than one transfer would.
        let progress = match self.state_served.get(&from) {
            Some(&(served_seq, served_offset, at)) => {
                (served_seq == seq && offset > served_offset)
                    || served_seq < seq
                    || self.now.saturating_sub(at) >= self.config.request_timeout
            }
            None => true,
        };
        if !progress {
            self.stats.duplicate += 1;
            return;
        }
        self.state_served.insert(from, (seq, offset, self.now));
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
        let Some(behind) = self.behind.clone() else {
            self.stats.stale += 1;
            return;
        };
        let received = self.transfer.bytes.len() as u64;
        if seq != behind.target.seq
            || self.installing.is_some()
            || (self.delivered >= seq && !behind.repair)
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
            // The attempt's deadline does not move: see `transfer_deadline`.
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
            Ok(state) if state.digest() == behind.target.state => state,
            _ => return self.reject_state(from, behind),
        };
        self.forget_executed_batches(&state.clients);
        self.installing = Some(seq);
        out.push(Output::InstallState {
            seq,
            digest: behind.target.state,
            state,
        });
    }

    /// Batches the installed state already executed (every request's number
    /// is at or below its lane's in the client table) are no longer waited
    /// for, nor kept: the transfer skipped over the log that would have
    /// shown them executed, and a backup still timing them would suspect a
    /// primary that did its job. That includes batches it times without
    /// holding them (seen proposed, then retransmitted by the client). The
    /// rest get a fresh timer.
    fn forget_executed_batches(&mut self, clients: &ClientTable) {
        let executed = |batch: &SignedBatch| {
            batch.batch.requests.iter().all(|request| {
                clients
                    .get(&(batch.batch.client, request.lane))
                    .is_some_and(|record| record.number >= request.number)
            })
        };
        let mut forgotten = Vec::new();
        self.pending.retain(|queued| {
            let done = executed(&queued.batch);
            if done {
                forgotten.push(queued.digest);
            }
            !done
        });
        for digest in forgotten {
            if self.known_batches.get(&digest) == Some(&None) {
                self.known_batches.remove(&digest);
            }
        }
        self.waiting.retain(|_, timer| !timer.executed_in(clients));
        let now = self.now;
        for timer in self.waiting.values_mut() {
            timer.since = now;
        }
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
            let proof = self
                .future_checkpoints
                .values()
                .filter(|vote| vote.seq == seq && vote.state == state)
                .cloned()
                .collect();
            self.note_behind(Certified { seq, state, proof }, true);
        }
    }

    /// The runtime installed the state at `seq`: continue from there.
    pub(super) fn on_state_installed(&mut self, seq: Seq, state: Hash, out: &mut Vec<Output>) {
        self.installing = None;
        let Some(behind) = self
            .behind
            .take_if(|b| b.target.seq == seq && b.target.state == state)
        else {
            // Not the transfer this replica asked for (the runtime only
            // installs what the protocol asked, so this is a stale report).
            self.stats.stale += 1;
            return;
        };
        if behind.repair {
            // Everything executed after `seq` ran on a wrong state: run it
            // again from the certified one (the log above `seq` is kept).
            self.delivered = seq;
            self.own_checkpoints.retain(|s, _| *s < seq);
        } else if seq > self.delivered {
            self.delivered = seq;
        }
        if let Some(next) = behind.next {
            // Learned of during the transfer; the log may still cover it, so
            // execution gets its chance first.
            self.note_behind(next, false);
        }
        self.own_checkpoints.insert(seq, state);
        if seq > self.low {
            // The proof that justified the transfer becomes the stable one.
            self.stabilize(seq, state, behind.target.proof, out);
        } else {
            self.log = self.log.split_off(&(seq + 1));
        }
        self.deliver(out);
        // Votes for later checkpoints that came while the state was being
        // installed (they were set aside; see `try_stabilize`).
        let later: Vec<Seq> = self
            .checkpoint_votes
            .range(seq + 1..)
            .map(|(s, _)| *s)
            .collect();
        for later in later {
            self.try_stabilize(later, out);
        }
    }
}
