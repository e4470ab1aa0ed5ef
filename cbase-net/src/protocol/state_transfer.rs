//! State transfer: catching up from a checkpoint instead of from the log.
//!
//! Replicas discard their log below a stable checkpoint, so a replica that
//! fell behind one (slow, partitioned, restarted) cannot replay what it
//! missed. Once it knows a checkpoint's agreed digest (2f+1 matching signed
//! checkpoint votes, or the stable checkpoint of a new view) and has not
//! executed that far for a while, it fetches the state at that checkpoint:
//!
//! 1. The checkpoint's manifest (each container's digest-tree root, the
//!    client table, the clock) from one peer, in chunks, each asked for once
//!    the previous one arrived, so it fits the transport's frame limit and
//!    memory grows only as fast as bytes arrive (up to `max_state_bytes`).
//!    It is only trusted if it hashes to the agreed digest; a peer that
//!    serves anything else is counted and another peer is asked.
//! 2. The parts that differ from the checkpoint this replica has, from all
//!    peers at once, each checked against the manifest's roots (see
//!    [`super::state_parts`]).
//!
//! A bucket holding an entry too large for any message makes the replica
//! fetch the whole state instead, in chunks like the manifest. The runtime
//! installs the state and reports back; execution then resumes after the
//! checkpoint.

use std::collections::BTreeSet;
use std::sync::Arc;

use cbase_core::codec;

use super::state_parts::{Answer, PartWalk, WalkRules};
use super::{Output, Replica};
use crate::checkpoint::parts::{
    LocalCheckpoint, MAX_PARTS_PER_REQUEST, Manifest, PartReply, PartRequest, Transferred,
};
use crate::checkpoint::{CheckpointState, ClientTable};
use crate::config::ReplicaId;
use crate::message::{
    Checkpoint, ClientBatch, Hash, ReplicaMessage, Seq, checkpoint_header, domain,
};

/// The current attempt at fetching a checkpoint: the encoded manifest (or
/// whole state) being received from the peer asked, then the walk over the
/// parts that differ.
#[derive(Debug, Default)]
pub(super) struct Transfer {
    /// The length of the whole encoding, as the first chunk announced it.
    total: u64,
    /// The bytes received so far, in order.
    bytes: Vec<u8>,
    /// When the first of them arrived.
    first_at: u64,
    /// Once the manifest is in: the parts being fetched.
    walk: Option<Box<PartWalk>>,
}

impl Transfer {
    /// Whether the attempt has received anything yet.
    pub(super) fn started(&self) -> bool {
        !self.bytes.is_empty() || self.walk.is_some()
    }
}

/// One chunk of an encoded manifest or state, as a peer sent it.
pub(super) struct Chunk {
    pub seq: Seq,
    pub offset: u64,
    pub total: u64,
    pub chunk: Vec<u8>,
    pub whole: bool,
}

/// The checkpoint this replica has, as the runtime provides it (none in
/// tests that drive the protocol by hand: everything is fetched).
#[derive(Default)]
pub(super) struct Local(Option<Arc<dyn LocalCheckpoint>>);

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Local(set)"
        } else {
            "Local(none)"
        })
    }
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
    /// Every peer asked for `target` so far that has not served it wrongly.
    /// The first chunk from any of them is taken, not only from the peer
    /// asked last: a peer builds what it serves when first asked, which can
    /// take longer than an attempt, and what it sends is checked against
    /// the agreed digest like anyone's. A peer that served a wrong chunk, or
    /// sent the beginning of an attempt and let it lapse, leaves the set
    /// until it is asked again, so it cannot take over the attempts meant
    /// for others.
    pub asked: BTreeSet<ReplicaId>,
    /// The current attempt has asked a peer (`asked_at` is when), rather
    /// than waiting for execution to get there by itself.
    pub requested: bool,
    /// A later agreed checkpoint learned of while the transfer of `target`
    /// was under way: fetched next, if still needed, once that transfer ends.
    pub next: Option<Certified>,
    /// This replica executed past `target` with a state the quorum disagrees
    /// with: it fetches the certified state even though it "has" that
    /// checkpoint, and re-executes from there.
    pub repair: bool,
    /// Fetch the whole state: a part was too large to travel on its own.
    pub whole: bool,
    /// Walks over parts that ended fetching nothing: each doubles the
    /// patience of the next (up to [`MAX_PATIENCE_DOUBLINGS`] times).
    pub stalls: u32,
}

/// How many request timeouts a walk goes without fetching anything before
/// it ends, at first.
const FIRST_PATIENCE: u64 = 16;

/// The walk's patience doubles with each stall, this many times at most.
const MAX_PATIENCE_DOUBLINGS: u32 = 3;

impl Behind {
    /// A checkpoint to fetch, from `peer` first, not asked for yet (or, with
    /// `asked_at` 0, to ask for at the next tick).
    pub fn new(target: Certified, asked_at: u64, peer: ReplicaId) -> Behind {
        Behind {
            target,
            asked_at,
            peer,
            asked: BTreeSet::new(),
            requested: false,
            next: None,
            repair: false,
            whole: false,
            stalls: 0,
        }
    }

    /// Retargets at the later checkpoint, if one was learned of.
    fn advanced(self) -> Behind {
        match self.next {
            Some(target) => Behind {
                target,
                asked: BTreeSet::new(),
                next: None,
                repair: false,
                whole: false,
                ..self
            },
            None => self,
        }
    }
}

impl Replica {
    /// Tells the replica where to find the checkpoint it has, so that a
    /// state transfer fetches only what differs from it.
    pub fn set_local_checkpoint(&mut self, local: Arc<dyn LocalCheckpoint>) {
        self.local = Local(Some(local));
    }

    /// Lists at most `max` entries of a bucket as had in part requests, so
    /// a test can reach what a bucket of thousands of entries does.
    #[cfg(test)]
    pub(super) fn limit_have_lists(&mut self, max: usize) {
        self.max_have = max;
    }

    /// Notes that a quorum agrees on `certified`, which this replica has
    /// not executed to.
    pub(super) fn note_behind(&mut self, certified: Certified, ask_now: bool) {
        let seq = certified.seq;
        if self.delivered >= seq || self.behind.as_ref().is_some_and(|b| b.target.seq >= seq) {
            return;
        }
        let under_way = self.transfer.started()
            || self.installing.is_some()
            || self.behind.as_ref().is_some_and(|b| b.requested);
        if let Some(behind) = self.behind.as_mut().filter(|_| under_way) {
            // A transfer is under way, or a peer was asked and has until the
            // attempt's deadline to answer. Finish it rather than restart
            // with the later checkpoint: the peer serving it keeps the
            // checkpoint it served last even after newer ones replace it,
            // while a replica that always chased the newest one would never
            // finish a large state under load (nor, when checkpoints are
            // agreed faster than a peer indexes one, ever get an answer).
            // The later one is fetched next, if still needed.
            if behind.next.as_ref().is_none_or(|next| next.seq < seq) {
                behind.next = Some(certified);
            }
            return;
        }
        // Give normal execution a chance first, unless there is nothing
        // left to execute from (the log below `seq` is gone). The chance
        // runs from when this replica first fell behind: later checkpoints
        // change what it will ask for, not when, or checkpoints agreed
        // faster than the request timeout would put the request off for ever.
        let asked_at = match &self.behind {
            _ if ask_now => 0,
            Some(behind) => behind.asked_at,
            None => self.now.max(1),
        };
        let peer = self.behind.as_ref().map_or(self.id, |b| b.peer);
        self.behind = Some(Behind::new(certified, asked_at, peer));
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
            repair: true,
            ..Behind::new(certified, 0, peer)
        });
    }

    /// How long the current attempt may take, from when it started: the
    /// first chunk within the request timeout; then, from when that came,
    /// the request timeout plus what the bytes received so far take at
    /// `min_transfer_rate`, so each later chunk keeps that pace within a
    /// request timeout. Progress is judged over the whole attempt, not per
    /// chunk, so a peer that drips a byte now and then cannot keep it
    /// alive; and by what arrived, not by the size the first chunk
    /// announced, which a faulty peer can make as large as
    /// `max_state_bytes` and then fall silent.
    fn transfer_deadline(&self, asked_at: u64) -> u64 {
        let timeout = self.config.request_timeout_ns();
        if self.transfer.bytes.is_empty() {
            return timeout;
        }
        let rate = self.config.min_transfer_rate.max(1);
        let received = self.transfer.bytes.len() as u128;
        let transfer_time = (received * 1_000_000_000 / rate as u128).min(u64::MAX as u128) as u64;
        self.transfer
            .first_at
            .saturating_sub(asked_at)
            .saturating_add(timeout)
            .saturating_add(transfer_time)
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
                .map(|next| Behind::new(next, self.now.max(1), behind.peer));
            return;
        }
        if self.installing.is_some() {
            return;
        }
        let peers: Vec<ReplicaId> = self.peers().collect();
        if let Some(walk) = self.transfer.walk.as_mut() {
            // Fetching parts: what peers did not answer in time is asked of
            // the others, and requests silent for long asked again.
            let patience = self
                .config
                .request_timeout_ns()
                .saturating_mul(FIRST_PATIENCE)
                .saturating_mul(1 << behind.stalls.min(MAX_PATIENCE_DOUBLINGS));
            walk.on_tick(self.now, patience);
            // More than f peers let this checkpoint go (so a correct one
            // did), a later one is agreed, and those left fetched nothing
            // for a request timeout: fetch the later one instead.
            let let_go = walk.gone() > self.f
                && behind.next.is_some()
                && walk.idle(self.now) >= self.config.request_timeout_ns();
            if !walk.stuck(&peers) && !let_go {
                walk.ask(self.now, &peers, out);
                return;
            }
            // Every peer failed us: start over (with a later checkpoint, if
            // one is known; peers may no longer keep this one), with more
            // patience next time.
            tracing::info!(
                seq = behind.target.seq,
                let_go,
                "no peer serves checkpoint {}'s parts any more; starting over",
                behind.target.seq
            );
            self.transfer = Transfer::default();
            behind.asked_at = 0;
            behind.stalls = behind.stalls.saturating_add(1);
        }
        let overdue = behind.asked_at == 0
            || self.now.saturating_sub(behind.asked_at) >= self.transfer_deadline(behind.asked_at);
        if !overdue {
            return;
        }
        // The attempt failed. A peer that sent its beginning and then let it
        // lapse is not heard unasked again: otherwise a faulty one, asked
        // once, could take every later attempt over with a correct first
        // chunk and then stay silent. (One that sent nothing keeps its
        // place: it may be building what it serves.)
        if !self.transfer.bytes.is_empty() {
            behind.asked.remove(&behind.peer);
        }
        // A later checkpoint, if known, is the target now.
        behind = behind.advanced();
        behind.peer = (behind.peer + 1) % self.n as ReplicaId;
        if behind.peer == self.id {
            behind.peer = (behind.peer + 1) % self.n as ReplicaId;
        }
        behind.asked_at = self.now.max(1);
        behind.requested = true;
        behind.asked.insert(behind.peer);
        let (peer, seq) = (behind.peer, behind.target.seq);
        self.behind = Some(behind);
        // A new attempt starts from the beginning: chunks from different
        // peers could not be blamed on either if the whole failed its check.
        self.transfer = Transfer::default();
        self.stats.state_requests += 1;
        let whole = self.behind.as_ref().is_some_and(|b| b.whole);
        tracing::info!(
            seq,
            peer,
            whole,
            executed = self.delivered,
            "fetching the state at checkpoint {seq}: asking replica {peer} for its {}",
            if whole { "whole state" } else { "manifest" }
        );
        out.push(Output::Send(
            peer,
            ReplicaMessage::StateRequest {
                seq,
                offset: 0,
                whole,
            },
        ));
    }

    pub(super) fn on_state_request(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        offset: u64,
        whole: bool,
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
        // flood of requests costs us no more than one transfer would. The
        // other kind (manifest or whole state) is a new attempt too: each
        // switch makes the server encode the checkpoint anew.
        let progress = match self.state_served.get(&from) {
            Some(&(served_seq, served_whole, served_offset, at)) => {
                (served_seq == seq && served_whole == whole && offset > served_offset)
                    || served_seq < seq
                    || self.now.saturating_sub(at) >= self.config.request_timeout_ns()
            }
            None => true,
        };
        if !progress {
            self.stats.duplicate += 1;
            return;
        }
        // Progress alone is not enough: each answer is up to a frame from
        // `offset` on, so a peer asking one byte further each time would
        // get a frame per byte of the state.
        if !self.take_serving_allowance(from) {
            return;
        }
        self.state_served
            .insert(from, (seq, whole, offset, self.now));
        out.push(Output::ServeState {
            to: from,
            seq,
            offset,
            whole,
        });
    }

    /// Counts one answer of up to a frame (a chunk of a state, or parts of
    /// one) against `from`'s `max_part_requests_per_second`; false (and
    /// counted as throttled) if it has had as many this second.
    fn take_serving_allowance(&mut self, from: ReplicaId) -> bool {
        let per_second = self.config.max_part_requests_per_second.max(1);
        let (left, since) = self
            .parts_allowance
            .get(&from)
            .copied()
            .unwrap_or((per_second, self.now));
        let (left, since) = if self.now.saturating_sub(since) >= 1_000_000_000 {
            (per_second, self.now)
        } else {
            (left, since)
        };
        if left == 0 {
            self.stats.throttled += 1;
            return false;
        }
        self.parts_allowance.insert(from, (left - 1, since));
        true
    }

    /// A peer asks for parts of checkpoint `seq`. Each answer fills up to a
    /// frame, so a peer gets at most `max_part_requests_per_second` of them
    /// (chunks of whole states and manifests included).
    pub(super) fn on_parts_request(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        salt: Hash,
        request: u64,
        parts: Vec<PartRequest>,
        out: &mut Vec<Output>,
    ) {
        if seq == 0 || seq > self.delivered {
            self.stats.out_of_window += 1;
            return;
        }
        if parts.is_empty() || parts.len() > MAX_PARTS_PER_REQUEST {
            self.stats.oversized += 1;
            return;
        }
        if !self.take_serving_allowance(from) {
            return;
        }
        out.push(Output::ServeParts {
            to: from,
            seq,
            salt,
            request,
            parts,
        });
    }

    /// Parts of the checkpoint being fetched, from `from`.
    pub(super) fn on_parts(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        request: u64,
        parts: Vec<PartReply>,
        out: &mut Vec<Output>,
    ) {
        let Some(behind) = self.behind.clone() else {
            self.stats.stale += 1;
            return;
        };
        // Execution may have got to the checkpoint by itself meanwhile (the
        // log still held it): installing it now would take the state back
        // under what was executed after it. The next tick ends the walk.
        if seq != behind.target.seq
            || self.installing.is_some()
            || (self.delivered >= seq && !behind.repair)
        {
            self.stats.stale += 1;
            return;
        }
        let peers: Vec<ReplicaId> = self.peers().collect();
        let Some(walk) = self.transfer.walk.as_mut() else {
            self.stats.stale += 1;
            return;
        };
        let bytes = codec::encode(&parts).map_or(0, |b| b.len() as u64);
        self.stats.state_bytes += bytes;
        match walk.on_parts(from, request, parts, self.now) {
            Answer::Stale => self.stats.stale += 1,
            Answer::Lie => {
                // Dropped; the others serve what it was asked.
                tracing::warn!(
                    peer = from,
                    seq,
                    "replica {from} served a part of checkpoint {seq} that does not \
                     match its digest; asking the others"
                );
                self.stats.bad_state += 1;
                walk.ask(self.now, &peers, out);
            }
            Answer::Gone => walk.ask(self.now, &peers, out),
            Answer::Oversized => {
                // Start over, fetching the state whole.
                self.transfer = Transfer::default();
                self.behind = Some(Behind {
                    asked_at: 0,
                    requested: false,
                    whole: true,
                    ..behind
                });
            }
            Answer::Used if walk.done() => {
                let walk = self.transfer.walk.take().expect("just used");
                self.install(behind, Transferred::Parts(walk.finish()), out);
            }
            Answer::Used => walk.ask(self.now, &peers, out),
        }
    }

    /// Hands a fetched and checked state to the runtime to install.
    fn install(&mut self, behind: Behind, state: Transferred, out: &mut Vec<Output>) {
        self.transfer = Transfer::default();
        self.forget_executed_batches(state.clients());
        self.installing = Some(behind.target.seq);
        out.push(Output::InstallState {
            seq: behind.target.seq,
            digest: behind.target.state,
            state,
        });
    }

    pub(super) fn on_state_reply(&mut self, from: ReplicaId, reply: Chunk, out: &mut Vec<Output>) {
        let Chunk {
            seq,
            offset,
            total,
            chunk,
            whole,
        } = reply;
        let Some(behind) = self.behind.clone() else {
            self.stats.stale += 1;
            return;
        };
        let received = self.transfer.bytes.len() as u64;
        // The first chunk, from a peer asked earlier for this checkpoint.
        let first_from_asked = offset == 0 && received == 0 && behind.asked.contains(&from);
        if seq != behind.target.seq
            || whole != behind.whole
            || self.transfer.walk.is_some()
            || self.installing.is_some()
            || (self.delivered >= seq && !behind.repair)
            || (from != behind.peer && !first_from_asked)
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
            self.transfer.first_at = self.now;
            // The rest comes from the peer that sent the beginning.
            if let Some(current) = self.behind.as_mut() {
                current.peer = from;
            }
        }
        self.stats.state_bytes += chunk.len() as u64;
        self.transfer.bytes.extend_from_slice(&chunk);
        let received = self.transfer.bytes.len() as u64;
        if received < total {
            // The attempt's deadline does not move: see `transfer_deadline`.
            out.push(Output::Send(
                from,
                ReplicaMessage::StateRequest {
                    seq,
                    offset: received,
                    whole,
                },
            ));
            return;
        }
        let bytes = std::mem::take(&mut self.transfer).bytes;
        if whole {
            let state = match codec::decode::<CheckpointState>(&bytes) {
                Ok(state) if state.digest() == behind.target.state => state,
                _ => return self.reject_state(from, behind),
            };
            return self.install(behind, Transferred::Whole(state), out);
        }
        let manifest = match codec::decode::<Manifest>(&bytes) {
            Ok(manifest) if manifest.digest() == behind.target.state => manifest,
            _ => return self.reject_state(from, behind),
        };
        // Compare with the checkpoint this replica has, and fetch what
        // differs from every peer.
        let base = self.local.0.as_ref().and_then(|local| local.index());
        let has_base = base.is_some();
        self.salts += 1;
        let salt = *blake3::keyed_hash(&self.salt_key, &self.salts.to_le_bytes()).as_bytes();
        let mut walk = PartWalk::new(
            seq,
            manifest,
            base,
            (salt, self.salts),
            WalkRules {
                max_bytes: self.config.max_state_bytes,
                f: self.f,
                timeout: self.config.request_timeout_ns(),
                max_have: self.max_have,
            },
            self.now,
        );
        if walk.done() {
            return self.install(behind, Transferred::Parts(walk.finish()), out);
        }
        if has_base {
            tracing::info!(
                seq,
                "fetching the parts of checkpoint {seq} that differ from ours"
            );
        } else {
            tracing::info!(seq, "fetching checkpoint {seq} in parts");
        }
        let peers: Vec<ReplicaId> = self.peers().collect();
        walk.ask(self.now, &peers, out);
        self.transfer.walk = Some(Box::new(walk));
    }

    /// Batches the installed state already executed (every request's number
    /// is at or below its lane's in the client table) are no longer waited
    /// for, nor kept: the transfer skipped over the log that would have
    /// shown them executed, and a backup still timing them would suspect a
    /// primary that did its job. That includes batches it times without
    /// holding them (seen proposed, then retransmitted by the client). The
    /// rest get a fresh timer.
    pub(super) fn forget_executed_batches(&mut self, clients: &ClientTable) {
        let executed = |batch: &ClientBatch| {
            let requests = batch.batch.requests.iter().map(|r| (r.lane, r.number));
            super::awaited::executed(clients, &batch.batch.client, requests)
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
        tracing::warn!(
            peer = from,
            seq = behind.target.seq,
            "replica {from} served a state or manifest that does not match the agreed \
             digest; asking another"
        );
        self.stats.bad_state += 1;
        self.transfer = Transfer::default();
        let mut next = behind.advanced();
        next.asked.remove(&from);
        self.behind = Some(Behind {
            asked_at: 0,
            requested: false,
            peer: from,
            ..next
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
            self.withheld = self.withheld.split_off(&(seq + 1));
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
