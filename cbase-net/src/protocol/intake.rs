//! Client batches on their way into proposals: from a client directly or
//! forwarded by a backup, signed or authenticated by a connection's MACs,
//! admitted, bounded per client, and queued for the primary to propose.

use super::{Output, Replica, Status, awaited, pending, vouching};
use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::{ClientBatch, Hash, ReplicaMessage, Seq, digest_and_size_of};

impl Replica {
    /// A client batch another replica passed on. Only the primary needs it
    /// (to order it), so only the primary takes it. A backup does not arm a
    /// request timer for it: only the primary could disarm that timer, and a
    /// faulty backup forwarding batches to the other backups alone would
    /// make them depose a correct primary at will. Backups arm timers only
    /// for batches a client sent them itself, as PBFT's clients do when the
    /// primary does not answer.
    pub(super) fn on_forward(
        &mut self,
        from: ReplicaId,
        batch: ClientBatch,
        out: &mut Vec<Output>,
    ) {
        if !self.is_primary() || self.status != Status::Normal {
            self.stats.stale += 1;
            return;
        }
        self.on_client_batch(batch, out, Some(from), false);
    }

    /// A client batch from its client (`source` is `None`) or forwarded by
    /// backup `source`; `checked` if it is signed and its signature was
    /// checked already.
    pub(super) fn on_client_batch(
        &mut self,
        batch: ClientBatch,
        out: &mut Vec<Output>,
        source: Option<ReplicaId>,
        checked: bool,
    ) {
        let direct = source.is_none();
        if !self.admits(&batch.batch.client) {
            self.stats.unadmitted += 1;
            return;
        }
        if batch.batch.requests.is_empty()
            || batch.batch.requests.len() > self.config.max_batch_requests
        {
            self.stats.oversized += 1;
            return;
        }
        let (digest, bytes) = digest_and_size_of(&batch);
        if bytes > self.config.max_batch_bytes {
            self.stats.oversized += 1;
            return;
        }
        if !batch.is_signed() {
            if direct {
                self.on_unsigned_batch(batch, digest, bytes, out);
            } else {
                self.stats.relayed_unsigned += 1;
            }
            return;
        }
        if let Some(ordered) = self.known_batches.get(&digest).copied() {
            self.stats.duplicate += 1;
            // Seen, but not executed yet: the client is still waiting, so a
            // backup watches the primary for it (and, if it came straight from
            // the client, makes sure the primary has it).
            let executed = ordered.is_some_and(|seq| seq <= self.delivered);
            if !executed && !self.is_primary() {
                let now = self.now;
                self.waiting
                    .entry(digest)
                    .or_insert_with(|| awaited::Awaited::new(now, &batch));
                if direct {
                    out.push(Output::Send(self.primary(), ReplicaMessage::Forward(batch)));
                }
            }
            return;
        }
        if !self.authenticated.contains(&digest) {
            if !checked && !batch.verify() {
                self.stats.bad_signature += 1;
                return;
            }
            self.authenticated.insert(digest);
        }
        if !self.room_in_pending(&batch.batch.client, source, bytes) {
            return;
        }
        self.known_batches.insert(digest, None);
        if self.is_primary() && self.status == Status::Normal {
            self.pending.push_back(pending::Queued {
                digest,
                bytes,
                batch,
                source,
            });
            self.propose(out);
        } else {
            // A backup keeps the batch (it may become primary) and watches
            // the primary: if the batch is not executed in time, it starts a
            // view change. A batch the client sent us directly is a
            // retransmission: make sure the primary has it.
            let now = self.now;
            self.waiting
                .entry(digest)
                .or_insert_with(|| awaited::Awaited::new(now, &batch));
            if direct {
                out.push(Output::Send(
                    self.primary(),
                    ReplicaMessage::Forward(batch.clone()),
                ));
            }
            self.pending.push_back(pending::Queued {
                digest,
                bytes,
                batch,
                source,
            });
        }
    }

    /// An unsigned batch its client sent this replica (see [`vouching`]).
    /// A backup notes it as genuine, tells the primary it has it, and
    /// prepares any proposal that waited for it; the primary holds it until
    /// 2f backups have it. Neither arms a request timer for it.
    fn on_unsigned_batch(
        &mut self,
        batch: ClientBatch,
        digest: Hash,
        bytes: usize,
        out: &mut Vec<Output>,
    ) {
        let fresh = self.authenticated.insert(digest);
        if !self.is_primary() || self.status != Status::Normal {
            if fresh && self.status == Status::Normal {
                self.untold.push(digest);
            }
            self.authenticated_batch_arrived(&digest, out);
            return;
        }
        if self.known_batches.contains_key(&digest) || self.unvouched.contains(&digest) {
            self.stats.duplicate += 1;
            return;
        }
        let queued = pending::Queued {
            digest,
            bytes,
            batch,
            source: None,
        };
        if self.haves.count(&digest) >= 2 * self.f {
            self.queue_for_proposal(queued, out);
        } else {
            self.unvouched.insert(
                queued,
                self.config.max_pending,
                self.config.max_pending_bytes,
                self.config.max_pending_per_client,
            );
        }
    }

    /// As backup: tells the primary of the unsigned batches received since
    /// it last did, when that costs no message of its own. Called at the
    /// end of every input; `since` is where this input's outputs begin.
    ///
    /// One have per batch would cost the primary a message to read (and
    /// this backup one to send) per request when many clients each send a
    /// batch at a time. While a proposal is in flight here, this backup's
    /// vote on it is due, and the haves wait for it: they go out just ahead
    /// of this input's first message to the primary, so the primary counts
    /// them before a vote that may free its pipeline for them. Otherwise
    /// (no proposal open, so nothing would carry them), at a tick (a vote
    /// that does not come: the proposal waits for vouchers, or the primary
    /// stalls), or once a have's worth is held, they go out at once.
    /// Holding them is safe: haves only decide when the primary proposes a
    /// batch, never whether a proposal is genuine (see [`vouching`]).
    pub(super) fn release_haves(&mut self, out: &mut Vec<Output>, since: usize, tick: bool) {
        if self.untold.is_empty() {
            return;
        }
        if self.status != Status::Normal {
            // Told to no one: a new view clears them (see `enter_view`).
            return;
        }
        if self.is_primary() {
            // Become primary meanwhile: it has them itself.
            self.untold.clear();
            return;
        }
        let primary = self.primary();
        let vote = out[since..].iter().position(|output| match output {
            Output::Send(to, _) => *to == primary,
            Output::Broadcast(_) => true,
            _ => false,
        });
        let at = match vote {
            Some(at) => since + at,
            None if tick
                || self.untold.len() >= vouching::MAX_HAVE_DIGESTS
                || !self.has_open_slot() =>
            {
                out.len()
            }
            None => return,
        };
        let digests = std::mem::take(&mut self.untold);
        out.insert(at, Output::Send(primary, ReplicaMessage::Have(digests)));
    }

    /// As backup in the normal case: tells the primary at once of the
    /// batches held back (see [`release_haves`](Self::release_haves)).
    pub(super) fn tell_untold(&mut self, out: &mut Vec<Output>) {
        if self.untold.is_empty() || self.status != Status::Normal || self.is_primary() {
            return;
        }
        let digests = std::mem::take(&mut self.untold);
        out.push(Output::Send(self.primary(), ReplicaMessage::Have(digests)));
    }

    /// Whether a slot above what this replica executed holds this view's
    /// pre-prepare and has not committed: a vote of this replica's on it
    /// is still due.
    fn has_open_slot(&self) -> bool {
        self.log.range(self.delivered + 1..).any(|(_, slot)| {
            slot.header.is_some_and(|header| header.view == self.view) && !slot.committed
        })
    }

    /// As primary: backup `from` has these unsigned batches. Those that 2f
    /// backups have join the proposal queue.
    pub(super) fn on_have(&mut self, from: ReplicaId, digests: Vec<Hash>, out: &mut Vec<Output>) {
        if !self.is_primary() || self.status != Status::Normal {
            self.stats.stale += 1;
            return;
        }
        for digest in digests.into_iter().take(vouching::MAX_HAVE_DIGESTS) {
            self.haves.insert(from, digest);
            if self.unvouched.contains(&digest) && self.haves.count(&digest) >= 2 * self.f {
                let queued = self.unvouched.remove(&digest).expect("checked to be held");
                self.queue(queued);
            }
        }
        // Once for the whole message: the batches it vouched for go into
        // one proposal, not one each.
        self.propose(out);
    }

    /// As primary: queues an authenticated batch (within the queue's
    /// bounds) and proposes what the pipeline allows.
    fn queue_for_proposal(&mut self, queued: pending::Queued, out: &mut Vec<Output>) {
        self.queue(queued);
        self.propose(out);
    }

    /// As primary: queues an authenticated batch for a proposal, within
    /// the queue's bounds.
    fn queue(&mut self, queued: pending::Queued) {
        if !self.room_in_pending(&queued.batch.batch.client, queued.source, queued.bytes) {
            return;
        }
        self.known_batches.insert(queued.digest, None);
        self.pending.push_back(queued);
    }

    /// Whether a batch of `bytes` from `client`, come from `source`, fits
    /// the pending queue's bounds; a refusal is counted. Refused, not
    /// timed: the client retransmits once some of its batches are through.
    fn room_in_pending(
        &mut self,
        client: &PublicKey,
        source: Option<ReplicaId>,
        bytes: usize,
    ) -> bool {
        let room = self.pending.room_for(
            client,
            source,
            bytes,
            self.config.max_pending,
            self.config.max_pending_bytes,
            self.config.max_pending_per_client,
        );
        match room {
            Ok(()) => true,
            Err(pending::Full::Queue) => {
                self.stats.oversized += 1;
                false
            }
            Err(pending::Full::Client) => {
                self.stats.client_full += 1;
                false
            }
        }
    }

    /// A batch this replica now knows to be genuine: proposals that waited
    /// for it get this backup's prepare once they wait for nothing else.
    fn authenticated_batch_arrived(&mut self, digest: &Hash, out: &mut Vec<Output>) {
        if self.withheld.is_empty() {
            return;
        }
        let log = &mut self.log;
        self.withheld
            .retain(|seq| log.get(seq).is_some_and(|slot| slot.withheld));
        let waiting: Vec<Seq> = self
            .withheld
            .iter()
            .filter_map(|seq| {
                let slot = self.log.get_mut(seq)?;
                let before = slot.awaiting.len();
                slot.awaiting.retain(|awaited| awaited != digest);
                (slot.awaiting.len() < before).then_some(*seq)
            })
            .collect();
        for seq in waiting {
            self.prepare_if_vouched(seq, out);
        }
    }
}
